//! Batches of devices to register (a file of `urbis devices import`, the body of
//! `POST /admin/devices`): parsed and checked row by row, every bad row named by its line.

use super::*;
use std::collections::HashMap;

/// A device to register, as a batch (file or admin API) gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDevice {
    /// Its line in the file, or position in the list: named in errors.
    pub line: usize,
    /// Id.
    pub id: String,
    /// Live layer.
    pub layer: String,
    /// Kind.
    pub kind: DeviceKind,
    /// Expected seconds between reports.
    pub interval_s: u64,
    /// SHA-256 of a secret the device already has; without it one is generated.
    pub secret_sha256: Option<[u8; 32]>,
    /// Reports over DTLS (its secret is generated and kept as its pre-shared key).
    pub dtls: bool,
}

/// One device's generated secret, as a batch registration returns it (shown once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    /// Device id.
    pub id: String,
    /// Its secret.
    pub secret: String,
}

/// Raw fields of a batch row, before checking.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRow {
    id: Option<serde_json::Value>,
    layer: Option<serde_json::Value>,
    kind: Option<serde_json::Value>,
    interval: Option<serde_json::Value>,
    secret_sha256: Option<serde_json::Value>,
    dtls: Option<serde_json::Value>,
}

fn text(v: &Option<serde_json::Value>) -> Option<String> {
    match v {
        Some(serde_json::Value::String(s)) => Some(s.trim().to_string()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
        _ => None,
    }
}

/// Checks one row; errors name the field.
fn check_row(line: usize, raw: &RawRow, errors: &mut Vec<RowError>) -> Option<NewDevice> {
    let mut bad = |field: &'static str, message: String| {
        errors.push(RowError {
            line,
            field: Some(field),
            message,
        });
    };
    let id = text(&raw.id).unwrap_or_default();
    if !valid_device_id(&id) {
        bad("id", format!("id {id:?}: give 1-64 of A-Z a-z 0-9 . _ : -"));
        return None;
    }
    let layer = text(&raw.layer).unwrap_or_default();
    if !crate::store::catalog::valid_layer_name(&layer) {
        bad(
            "layer",
            format!("{id}: layer {layer:?}: give 1-64 of A-Z a-z 0-9 _ -"),
        );
        return None;
    }
    let kind_s = text(&raw.kind).unwrap_or_else(|| "tracker".into());
    let Some(kind) = DeviceKind::parse(&kind_s) else {
        bad(
            "kind",
            format!("{id}: kind {kind_s:?}: use tracker, meter, sensor or asset"),
        );
        return None;
    };
    let interval_s = match text(&raw.interval) {
        None => 900,
        Some(s) => match parse_interval(&s) {
            Ok(v) => v,
            Err(e) => {
                bad("interval", format!("{id}: {e}"));
                return None;
            }
        },
    };
    let dtls = match text(&raw.dtls).as_deref() {
        None | Some("") | Some("false") | Some("0") | Some("no") => false,
        Some("true") | Some("1") | Some("yes") => true,
        Some(other) => {
            bad("dtls", format!("{id}: dtls {other:?}: use true or false"));
            return None;
        }
    };
    let secret_sha256 = match text(&raw.secret_sha256).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match parse_hash(&s.to_ascii_lowercase()) {
            Some(h) if !dtls => Some(h),
            Some(_) => {
                bad(
                    "secret_sha256",
                    format!(
                        "{id}: a DTLS device's key is generated (the server must hold it); leave secret_sha256 empty"
                    ),
                );
                return None;
            }
            None => {
                bad(
                    "secret_sha256",
                    format!(
                        "{id}: secret_sha256 must be 64 hex digits (the SHA-256 of the device's secret)"
                    ),
                );
                return None;
            }
        },
    };
    Some(NewDevice {
        line,
        id,
        layer,
        kind,
        interval_s,
        secret_sha256,
        dtls,
    })
}

/// Parses a batch of devices: CSV with a header line naming the columns `id`, `layer`,
/// `kind`, `interval`, `secret_sha256`, `dtls` (`id` and `layer` required; `kind` defaults to
/// tracker, `interval` to 15m), or a JSON array of objects with the same keys. Every bad row
/// is reported by its line (CSV) or position (JSON), with the field at fault; ids given twice
/// are bad rows too.
pub fn parse_batch(bytes: &[u8], json: bool) -> Result<Vec<NewDevice>, RegistryError> {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    if json {
        let rows: Vec<serde_json::Value> = serde_json::from_slice(bytes).map_err(|e| {
            RegistryError::Refused(format!(
                "not a JSON array of devices: {e} (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        for (i, v) in rows.into_iter().enumerate() {
            match serde_json::from_value::<RawRow>(v) {
                Ok(raw) => out.extend(check_row(i + 1, &raw, &mut errors)),
                Err(e) => errors.push(RowError {
                    line: i + 1,
                    field: None,
                    message: format!("device {}: {e}", i + 1),
                }),
            }
        }
    } else {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| RegistryError::Refused(format!("not UTF-8 text: {e}")))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            return Err(RegistryError::Refused(
                "empty file: the first line names the columns, e.g. id,layer,kind,interval".into(),
            ));
        };
        let cols: Vec<String> = split_csv(header)
            .iter()
            .map(|c| c.to_ascii_lowercase())
            .collect();
        const KNOWN: [&str; 6] = ["id", "layer", "kind", "interval", "secret_sha256", "dtls"];
        if let Some(c) = cols.iter().find(|c| !KNOWN.contains(&c.as_str())) {
            return Err(RegistryError::Refused(format!(
                "line 1: unknown column {c:?}; the columns are {}",
                KNOWN.join(", ")
            )));
        }
        for need in ["id", "layer"] {
            if !cols.iter().any(|c| c == need) {
                return Err(RegistryError::Refused(format!(
                    "line 1: no {need:?} column; the header names the columns, e.g. id,layer,kind,interval"
                )));
            }
        }
        for (i, line) in lines {
            let fields = split_csv(line);
            if fields.len() != cols.len() {
                errors.push(RowError {
                    line: i + 1,
                    field: None,
                    message: format!(
                        "{} fields where the header has {}",
                        fields.len(),
                        cols.len()
                    ),
                });
                continue;
            }
            let mut raw = RawRow::default();
            for (c, f) in cols.iter().zip(fields) {
                let v = Some(serde_json::Value::String(f));
                match c.as_str() {
                    "id" => raw.id = v,
                    "layer" => raw.layer = v,
                    "kind" => raw.kind = v,
                    "interval" => raw.interval = v,
                    "secret_sha256" => raw.secret_sha256 = v,
                    _ => raw.dtls = v,
                }
            }
            out.extend(check_row(i + 1, &raw, &mut errors));
        }
    }
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(out.len());
    for d in &out {
        if let Some(first) = seen.insert(&d.id, d.line) {
            errors.push(RowError {
                line: d.line,
                field: Some("id"),
                message: format!("{}: given twice (first on line {first})", d.id),
            });
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        errors.sort_by_key(|e| e.line);
        Err(RegistryError::Rows(errors))
    }
}

/// Refuses the rows of a batch whose layer is an imported (static) layer: live devices need
/// a layer of their own.
pub fn refuse_static_layers(
    batch: &[NewDevice],
    is_static: impl Fn(&str) -> bool,
) -> Result<(), RegistryError> {
    let rows: Vec<RowError> = batch
        .iter()
        .filter(|d| is_static(&d.layer))
        .map(|d| RowError {
            line: d.line,
            field: Some("layer"),
            message: format!(
                "{}: {} is an imported (static) layer; give live devices a layer of their own",
                d.id, d.layer
            ),
        })
        .collect();
    if rows.is_empty() {
        Ok(())
    } else {
        Err(RegistryError::Rows(rows))
    }
}

/// Splits a CSV line: commas, fields optionally in double quotes (`""` inside is a quote).
fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur).trim().to_string()),
            c => cur.push(c),
        }
    }
    out.push(cur.trim().to_string());
    out
}
