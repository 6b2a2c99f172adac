//! Catalog metadata of a layer (DCAT 3 and the ISO 19115 core): title, description,
//! keywords, owner (the department), contact, licence, attribution, update frequency,
//! retention, temporal extent; beside them the classification and personal-information flag
//! (`store::db::LayerPolicyMeta`) and, per version, the lineage: source file, size, SHA-256,
//! importer, time and principal. Set at import (`urbis import --title … --meta KEY=VALUE`),
//! later with `urbis layers meta NAME --set KEY=VALUE` or `PUT /admin/layers/{name}/meta`;
//! shown in `/catalog` and as DCAT JSON-LD at `/catalog?f=dcat` ([`dcat`]).
//!
//! Stored as JSON in `layer_catalog` and `layer_lineage` of the store's database: the set of
//! keys grows without schema changes, and every key is checked here on the way in.

use crate::store::db::{Classification, Db, DbError};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;

/// Catalog metadata of one layer; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CatalogMeta {
    /// A human title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// What the layer holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Keywords.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    /// The department that owns it (DCAT publisher).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Who to ask (an e-mail address or a name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// Licence: an SPDX id, a name or a URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licence: Option<String>,
    /// Attribution to show on maps; overrides the one given at import.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution: Option<String>,
    /// How often it is updated: one of [`FREQUENCIES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_frequency: Option<String>,
    /// How long its data is kept, seconds (live layers: device history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_s: Option<u64>,
    /// Start of the period the data describes (ISO 8601 date or date-time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporal_start: Option<String>,
    /// End of that period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporal_end: Option<String>,
}

/// Update frequencies and their Dublin Core frequency IRIs.
pub const FREQUENCIES: [(&str, &str); 9] = [
    ("continuous", "http://purl.org/cld/freq/continuous"),
    ("daily", "http://purl.org/cld/freq/daily"),
    ("weekly", "http://purl.org/cld/freq/weekly"),
    ("monthly", "http://purl.org/cld/freq/monthly"),
    ("quarterly", "http://purl.org/cld/freq/quarterly"),
    ("annual", "http://purl.org/cld/freq/annual"),
    ("irregular", "http://purl.org/cld/freq/irregular"),
    (
        "never",
        "http://publications.europa.eu/resource/authority/frequency/NEVER",
    ),
    (
        "unknown",
        "http://publications.europa.eu/resource/authority/frequency/UNKNOWN",
    ),
];

/// The keys `--set KEY=VALUE` takes.
pub const KEYS: [&str; 12] = [
    "title",
    "description",
    "keywords",
    "owner",
    "contact",
    "licence",
    "attribution",
    "update_frequency",
    "retention",
    "temporal",
    "classification",
    "personal",
];

/// Where a layer version came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// The source file's name (no directories).
    pub source_file: String,
    /// Its size, bytes.
    pub size: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// The importer: `urbis` and its version.
    pub importer: String,
    /// When the import published it, seconds since 1970.
    pub time: u64,
    /// Who imported it (`cli:USER`, or an API key id).
    pub principal: String,
}

/// A bad metadata value, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// A key that is not one of [`KEYS`] or a value it does not take.
    #[error("{key}: {message}")]
    Bad {
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The database.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl MetaError {
    /// The key at fault, if one is.
    pub fn field(&self) -> Option<&str> {
        match self {
            MetaError::Bad { key, .. } => Some(key),
            MetaError::Db(_) => None,
        }
    }
}

fn bad(key: &str, message: impl Into<String>) -> MetaError {
    MetaError::Bad {
        key: key.to_string(),
        message: message.into(),
    }
}

/// A layer's catalog metadata (empty if none was set).
pub fn get(db: &Db, name: &str) -> Result<CatalogMeta, DbError> {
    let text: Option<String> = db
        .conn()
        .query_row(
            "SELECT meta FROM layer_catalog WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| db.error(e))?;
    Ok(text
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default())
}

/// Every layer's catalog metadata, by name.
pub fn all(db: &Db) -> Result<Vec<(String, CatalogMeta)>, DbError> {
    let mut st = db
        .conn()
        .prepare("SELECT name, meta FROM layer_catalog ORDER BY name")
        .map_err(|e| db.error(e))?;
    let rows = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| db.error(e))?;
    Ok(rows
        .into_iter()
        .map(|(n, t)| (n, serde_json::from_str(&t).unwrap_or_default()))
        .collect())
}

fn put(db: &Db, name: &str, meta: &CatalogMeta) -> Result<(), DbError> {
    let text = serde_json::to_string(meta).unwrap_or_else(|_| "{}".into());
    db.conn()
        .execute(
            "INSERT INTO layer_catalog(name, meta) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET meta = ?2",
            params![name, text],
        )
        .map(|_| ())
        .map_err(|e| db.error(e))
}

/// Parses `KEY=VALUE`.
pub fn parse_pair(s: &str) -> Result<(String, String), MetaError> {
    match s.split_once('=') {
        Some((k, v)) => Ok((k.trim().to_string(), v.trim().to_string())),
        None => Err(bad(s, "give KEY=VALUE, e.g. owner=Water department")),
    }
}

/// Checks `pairs` and applies them to `meta` (an empty value clears a key); classification
/// and personal go to `policy`.
pub fn apply(
    meta: &mut CatalogMeta,
    policy: &mut crate::store::db::LayerPolicyMeta,
    pairs: &[(String, String)],
) -> Result<(), MetaError> {
    for (k, v) in pairs {
        let text = |max: usize| -> Result<Option<String>, MetaError> {
            if v.len() > max {
                return Err(bad(k, format!("at most {max} bytes")));
            }
            if v.chars().any(|c| c.is_control()) {
                return Err(bad(k, "no control characters"));
            }
            Ok((!v.is_empty()).then(|| v.clone()))
        };
        match k.as_str() {
            "title" => meta.title = text(200)?,
            "description" => meta.description = text(4000)?,
            "owner" => meta.owner = text(200)?,
            "contact" => meta.contact = text(200)?,
            "licence" | "license" => meta.licence = text(500)?,
            "attribution" => meta.attribution = text(500)?,
            "keywords" => {
                text(1000)?;
                meta.keywords = v
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
            }
            "update_frequency" => {
                meta.update_frequency = match v.as_str() {
                    "" => None,
                    f if FREQUENCIES.iter().any(|(n, _)| *n == f) => Some(f.to_string()),
                    f => {
                        return Err(bad(
                            k,
                            format!(
                                "{f:?}: use one of {}",
                                FREQUENCIES.map(|(n, _)| n).join(", ")
                            ),
                        ));
                    }
                }
            }
            "retention" => {
                meta.retention_s = match v.as_str() {
                    "" | "none" => None,
                    d => Some(crate::security::keys::parse_lifetime(d).map_err(|e| bad(k, e))?),
                }
            }
            "temporal" => {
                if v.is_empty() {
                    meta.temporal_start = None;
                    meta.temporal_end = None;
                } else {
                    let (a, b) = v.split_once('/').ok_or_else(|| {
                        bad(
                            k,
                            "give START/END as ISO 8601 dates, e.g. 2024-01-01/2024-12-31",
                        )
                    })?;
                    for d in [a, b] {
                        if !d.is_empty() && !looks_iso(d) {
                            return Err(bad(k, format!("{d:?} is not an ISO 8601 date")));
                        }
                    }
                    meta.temporal_start = (!a.is_empty()).then(|| a.to_string());
                    meta.temporal_end = (!b.is_empty()).then(|| b.to_string());
                }
            }
            "classification" => {
                policy.classification = Classification::parse(v)
                    .ok_or_else(|| bad(k, "use public, internal, restricted or confidential"))?;
            }
            "personal" => {
                policy.personal = match v.as_str() {
                    "true" | "yes" | "1" => true,
                    "false" | "no" | "0" => false,
                    _ => return Err(bad(k, "use true or false")),
                };
            }
            other => {
                return Err(bad(
                    other,
                    format!("unknown key; the keys are {}", KEYS.join(", ")),
                ));
            }
        }
    }
    Ok(())
}

fn looks_iso(d: &str) -> bool {
    let b = d.as_bytes();
    b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
}

/// Sets metadata of layer `name` from `KEY=VALUE` pairs, all or none.
pub fn set(db: &Db, name: &str, pairs: &[(String, String)]) -> Result<CatalogMeta, MetaError> {
    let mut meta = get(db, name)?;
    let mut policy = db.layer_meta(name)?.unwrap_or_default();
    let before = policy;
    apply(&mut meta, &mut policy, pairs)?;
    put(db, name, &meta)?;
    if policy != before || pairs.iter().any(|(k, _)| k == "classification") {
        db.set_layer_meta(name, policy)?;
    }
    Ok(meta)
}

/// Records where version `version` of layer `name` came from.
pub fn record_lineage(db: &Db, name: &str, version: u64, l: &Lineage) -> Result<(), DbError> {
    let text = serde_json::to_string(l).unwrap_or_else(|_| "{}".into());
    db.conn()
        .execute(
            "INSERT OR REPLACE INTO layer_lineage(name, version, meta) VALUES (?1, ?2, ?3)",
            params![name, version as i64, text],
        )
        .map(|_| ())
        .map_err(|e| db.error(e))
}

/// Where version `version` of layer `name` came from, if it was recorded.
pub fn lineage(db: &Db, name: &str, version: u64) -> Result<Option<Lineage>, DbError> {
    let text: Option<String> = db
        .conn()
        .query_row(
            "SELECT meta FROM layer_lineage WHERE name = ?1 AND version = ?2",
            params![name, version as i64],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| db.error(e))?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

/// Size and SHA-256 (hex) of a file, read in 1 MiB pieces.
pub fn file_digest(path: &Path) -> std::io::Result<(u64, String)> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        n += k as u64;
        h.update(&buf[..k]);
    }
    Ok((n, crate::live::registry::hex(&h.finalize())))
}

/// The lineage of an import of `file` by `principal`, now.
pub fn lineage_of(file: &Path, principal: &str) -> std::io::Result<Lineage> {
    let (size, sha256) = file_digest(file)?;
    Ok(Lineage {
        source_file: file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        size,
        sha256,
        importer: format!("urbis {}", env!("CARGO_PKG_VERSION")),
        time: crate::security::keys::now(),
        principal: principal.to_string(),
    })
}

/// One layer as the DCAT catalog shows it.
pub struct DcatLayer {
    /// Name (the dataset's identifier).
    pub name: String,
    /// Its catalog metadata.
    pub meta: CatalogMeta,
    /// `[w, s, e, n]`, degrees.
    pub bounds: Option<[f64; 4]>,
    /// Classification.
    pub classification: Classification,
    /// Personal information.
    pub personal: bool,
    /// Last published, seconds since 1970.
    pub modified: Option<u64>,
    /// Lineage of the current version.
    pub lineage: Option<Lineage>,
    /// Attribution from the layer file, when the metadata gives none.
    pub file_attribution: Option<String>,
    /// A live layer (device positions).
    pub live: bool,
}

/// The catalog as DCAT 3 in JSON-LD: a `dcat:Catalog` with a `dcat:Dataset` per layer, its
/// TileJSON and tiles as `dcat:Distribution`s.
pub fn dcat(base: &str, layers: &[DcatLayer]) -> serde_json::Value {
    use serde_json::json;
    let datasets: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            let m = &l.meta;
            let mut d = json!({
                "@id": format!("{base}/catalog#{}", l.name),
                "@type": "dcat:Dataset",
                "dct:identifier": l.name,
                "dct:title": m.title.as_deref().unwrap_or(&l.name),
                "dcat:keyword": m.keywords,
                "dct:accessRights": l.classification.as_str(),
                "urbis:personalData": l.personal,
                "dcat:distribution": [
                    {
                        "@type": "dcat:Distribution",
                        "dct:title": "TileJSON",
                        "dcat:accessURL": {"@id": format!("{base}/tiles/{}.json", l.name)},
                        "dcat:mediaType": "application/json",
                    },
                    {
                        "@type": "dcat:Distribution",
                        "dct:title": "Mapbox Vector Tiles",
                        "dcat:accessURL": {"@id": format!("{base}/tiles/{}/{{z}}/{{x}}/{{y}}.mvt", l.name)},
                        "dcat:mediaType": "application/vnd.mapbox-vector-tile",
                    }
                ],
            });
            let o = d.as_object_mut().expect("an object");
            if let Some(v) = &m.description {
                o.insert("dct:description".into(), json!(v));
            }
            if let Some(v) = &m.owner {
                o.insert(
                    "dct:publisher".into(),
                    json!({"@type": "foaf:Agent", "foaf:name": v}),
                );
            }
            if let Some(v) = &m.contact {
                o.insert(
                    "dcat:contactPoint".into(),
                    json!({"@type": "vcard:Kind", "vcard:fn": v}),
                );
            }
            if let Some(v) = &m.licence {
                let lic = if v.starts_with("http://") || v.starts_with("https://") {
                    json!({"@id": v})
                } else {
                    json!({"@type": "dct:LicenseDocument", "rdfs:label": v})
                };
                o.insert("dct:license".into(), lic);
            }
            if let Some(v) = m.attribution.as_deref().or(l.file_attribution.as_deref()) {
                o.insert("dct:rights".into(), json!(v));
            }
            if let Some(f) = &m.update_frequency
                && let Some((_, iri)) = FREQUENCIES.iter().find(|(n, _)| n == f)
            {
                o.insert("dct:accrualPeriodicity".into(), json!({"@id": iri}));
            }
            if let Some(s) = m.retention_s {
                o.insert(
                    "urbis:retention".into(),
                    json!({"@value": format!("P{}D", s.div_ceil(86_400)), "@type": "xsd:duration"}),
                );
            }
            if let Some([w, s, e, n]) = l.bounds {
                o.insert(
                    "dct:spatial".into(),
                    json!({
                        "@type": "dct:Location",
                        "dcat:bbox": {
                            "@value": format!("POLYGON(({w} {s},{e} {s},{e} {n},{w} {n},{w} {s}))"),
                            "@type": "http://www.opengis.net/ont/geosparql#wktLiteral",
                        }
                    }),
                );
            }
            if m.temporal_start.is_some() || m.temporal_end.is_some() {
                let mut t = serde_json::Map::new();
                t.insert("@type".into(), json!("dct:PeriodOfTime"));
                if let Some(v) = &m.temporal_start {
                    t.insert("dcat:startDate".into(), json!(v));
                }
                if let Some(v) = &m.temporal_end {
                    t.insert("dcat:endDate".into(), json!(v));
                }
                o.insert("dct:temporal".into(), serde_json::Value::Object(t));
            }
            if let Some(t) = l.modified {
                o.insert(
                    "dct:modified".into(),
                    json!({"@value": super::iso8601(t as i64), "@type": "xsd:dateTime"}),
                );
            }
            if let Some(lin) = &l.lineage {
                o.insert(
                    "dct:provenance".into(),
                    json!({
                        "@type": "dct:ProvenanceStatement",
                        "rdfs:label": format!(
                            "imported from {} ({} bytes, SHA-256 {}) by {} with {} at {}",
                            lin.source_file, lin.size, lin.sha256, lin.principal, lin.importer,
                            super::iso8601(lin.time as i64)
                        ),
                    }),
                );
                o.insert(
                    "spdx:checksum".into(),
                    json!({"@type": "spdx:Checksum", "spdx:algorithm": {"@id": "spdx:checksumAlgorithm_sha256"}, "spdx:checksumValue": lin.sha256}),
                );
            }
            if l.live {
                o.insert("dct:type".into(), json!("live device positions"));
            }
            d
        })
        .collect();
    json!({
        "@context": {
            "dcat": "http://www.w3.org/ns/dcat#",
            "dct": "http://purl.org/dc/terms/",
            "foaf": "http://xmlns.com/foaf/0.1/",
            "vcard": "http://www.w3.org/2006/vcard/ns#",
            "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
            "xsd": "http://www.w3.org/2001/XMLSchema#",
            "spdx": "http://spdx.org/rdf/terms#",
            "urbis": format!("{base}/ns#"),
        },
        "@id": format!("{base}/catalog?f=dcat"),
        "@type": "dcat:Catalog",
        "dct:title": "Urbis layer catalog",
        "dcat:dataset": datasets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_set_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let pairs = |s: &[&str]| -> Vec<(String, String)> {
            s.iter().map(|p| parse_pair(p).unwrap()).collect()
        };
        let m = set(
            &db,
            "roads",
            &pairs(&[
                "title=Roads",
                "owner=Transport",
                "keywords=roads, traffic",
                "retention=365d",
                "classification=public",
            ]),
        )
        .unwrap();
        assert_eq!(m.keywords, ["roads", "traffic"]);
        assert_eq!(m.retention_s, Some(365 * 86_400));
        assert_eq!(
            db.layer_meta("roads").unwrap().unwrap().classification,
            Classification::Public
        );
        let e = set(&db, "roads", &pairs(&["title=New", "colour=red"])).unwrap_err();
        assert_eq!(e.field(), Some("colour"));
        assert_eq!(get(&db, "roads").unwrap().title.as_deref(), Some("Roads"));
        let e = set(&db, "roads", &pairs(&["update_frequency=hourly"])).unwrap_err();
        assert!(e.to_string().contains("daily"), "{e}");
        assert!(set(&db, "roads", &pairs(&["temporal=2024-01-01/2024-12-31"])).is_ok());
        assert!(set(&db, "roads", &pairs(&["temporal=yesterday/today"])).is_err());
    }
}
