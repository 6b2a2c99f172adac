//! Device report payloads: SenML JSON (RFC 8428, CoAP content-format 110), SenML CBOR (112)
//! and a compact JSON object (`{"lat":..,"lon":..,"t":..}`), all decoded into [`Report`]s.
//!
//! SenML records are resolved as RFC 8428 §4 says (base name, base time, base value carried
//! forward; times below 2^28 are relative to now), then grouped by (device, time): a
//! `lat`/`lon` pair (or LwM2M location object names `/6/0/0` and `/6/0/1`) at one time is a
//! position fix, and every other numeric or boolean record at that time is telemetry. A group
//! without a position is a telemetry-only report (for fixed devices such as manhole sensors).
//!
//! Parsers never panic and name the problem and the record: they face the network.

use std::collections::BTreeMap;

/// SenML times below this are relative to now (RFC 8428 §4.5.3).
const RELATIVE_TIME_LIMIT: f64 = 268_435_456.0;
/// Most records in one payload.
pub const MAX_RECORDS: usize = 10_000;
/// Most telemetry values kept per report.
pub const MAX_TELEMETRY: usize = 32;
/// Longest record or device name.
pub const MAX_NAME: usize = 128;
/// How far into the future a device clock may run before a report is refused (seconds).
pub const MAX_CLOCK_AHEAD: f64 = 600.0;

/// One report of one device: a position fix (or none, for telemetry only) at a device time.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The device, when the payload names it (SenML base name, compact `device`).
    pub device: Option<String>,
    /// Device time, seconds since the Unix epoch.
    pub t: f64,
    /// WGS 84 position `[lon, lat]`, if the report has one.
    pub position: Option<[f64; 2]>,
    /// Other numeric values, by name.
    pub telemetry: Vec<(String, f64)>,
}

/// Why a payload was refused; the message names the record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, PayloadError> {
    Err(PayloadError(msg.into()))
}

/// Payload kinds, from the CoAP content-format or HTTP content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/senml+json` (110).
    SenmlJson,
    /// `application/senml+cbor` (112).
    SenmlCbor,
    /// `application/json` (50): a compact object or an array of them.
    Json,
}

impl Format {
    /// The format of a CoAP content-format number; `None` if not one of ours.
    pub fn from_coap(cf: u16) -> Option<Format> {
        match cf {
            110 => Some(Format::SenmlJson),
            112 => Some(Format::SenmlCbor),
            50 => Some(Format::Json),
            _ => None,
        }
    }

    /// The format of an HTTP media type (parameters ignored); `None` if not one of ours.
    pub fn from_media_type(ct: &str) -> Option<Format> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/senml+json" => Some(Format::SenmlJson),
            "application/senml+cbor" => Some(Format::SenmlCbor),
            "application/json" => Some(Format::Json),
            _ => None,
        }
    }

    /// Guesses the format of a payload sent without one: JSON starts with `[` or `{` (after
    /// white space), anything else is taken as CBOR. A JSON array whose first record has a
    /// SenML label is SenML JSON.
    pub fn sniff(payload: &[u8]) -> Format {
        let first = payload.iter().find(|b| !b.is_ascii_whitespace());
        match first {
            Some(b'{') => Format::Json,
            Some(b'[') => Format::SenmlJson,
            _ => Format::SenmlCbor,
        }
    }
}

/// Decodes a payload of `format` received at `now` (seconds since the epoch).
pub fn parse(format: Format, payload: &[u8], now: f64) -> Result<Vec<Report>, PayloadError> {
    match format {
        Format::SenmlJson => parse_senml_json(payload, now),
        Format::SenmlCbor => parse_senml_cbor(payload, now),
        Format::Json => parse_compact(payload, now),
    }
}

/// One SenML record with its labels, before resolution.
#[derive(Debug, Default, Clone)]
struct Record {
    bn: Option<String>,
    bt: Option<f64>,
    bv: Option<f64>,
    n: Option<String>,
    t: Option<f64>,
    v: Option<f64>,
    vb: Option<bool>,
    has_other_value: bool,
}

fn json_record(i: usize, v: &serde_json::Value) -> Result<Record, PayloadError> {
    let Some(obj) = v.as_object() else {
        return err(format!("SenML record {i} is not an object"));
    };
    let mut r = Record::default();
    for (k, val) in obj {
        let num = || {
            val.as_f64()
                .ok_or_else(|| PayloadError(format!("SenML record {i}: '{k}' must be a number")))
        };
        let text = || {
            val.as_str()
                .map(str::to_string)
                .ok_or_else(|| PayloadError(format!("SenML record {i}: '{k}' must be a string")))
        };
        match k.as_str() {
            "bn" => r.bn = Some(text()?),
            "bt" => r.bt = Some(num()?),
            "bv" => r.bv = Some(num()?),
            "n" => r.n = Some(text()?),
            "t" => r.t = Some(num()?),
            "v" => r.v = Some(num()?),
            "vb" => {
                r.vb = Some(val.as_bool().ok_or_else(|| {
                    PayloadError(format!("SenML record {i}: 'vb' must be true or false"))
                })?)
            }
            "vs" | "vd" => r.has_other_value = true,
            "bu" | "u" | "s" | "ut" | "bver" | "bs" => {}
            other if other.ends_with('_') => {
                return err(format!(
                    "SenML record {i}: label '{other}' must be understood (RFC 8428 §4.4) and is not"
                ));
            }
            _ => {}
        }
    }
    Ok(r)
}

/// Parses a SenML JSON pack.
pub fn parse_senml_json(payload: &[u8], now: f64) -> Result<Vec<Report>, PayloadError> {
    let v: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| PayloadError(format!("SenML JSON: {e}")))?;
    let Some(arr) = v.as_array() else {
        return err("SenML JSON must be an array of records");
    };
    if arr.len() > MAX_RECORDS {
        return err(format!(
            "SenML pack has {} records; at most {MAX_RECORDS}",
            arr.len()
        ));
    }
    let records = arr
        .iter()
        .enumerate()
        .map(|(i, r)| json_record(i, r))
        .collect::<Result<Vec<_>, _>>()?;
    resolve(&records, now)
}

fn cbor_num(i: usize, label: &str, v: &ciborium::Value) -> Result<f64, PayloadError> {
    match v {
        ciborium::Value::Integer(n) => Ok(i128::from(*n) as f64),
        ciborium::Value::Float(f) => Ok(*f),
        _ => err(format!("SenML record {i}: '{label}' must be a number")),
    }
}

fn cbor_text(i: usize, label: &str, v: &ciborium::Value) -> Result<String, PayloadError> {
    match v {
        ciborium::Value::Text(s) => Ok(s.clone()),
        _ => err(format!("SenML record {i}: '{label}' must be a text string")),
    }
}

/// Parses a SenML CBOR pack (integer labels of RFC 8428 §6; text labels accepted too).
pub fn parse_senml_cbor(payload: &[u8], now: f64) -> Result<Vec<Report>, PayloadError> {
    let v: ciborium::Value =
        ciborium::de::from_reader(payload).map_err(|e| PayloadError(format!("SenML CBOR: {e}")))?;
    let ciborium::Value::Array(arr) = v else {
        return err("SenML CBOR must be an array of records");
    };
    if arr.len() > MAX_RECORDS {
        return err(format!(
            "SenML pack has {} records; at most {MAX_RECORDS}",
            arr.len()
        ));
    }
    let mut records = Vec::with_capacity(arr.len());
    for (i, rec) in arr.iter().enumerate() {
        let ciborium::Value::Map(entries) = rec else {
            return err(format!("SenML record {i} is not a map"));
        };
        let mut r = Record::default();
        for (k, val) in entries {
            let label: String = match k {
                ciborium::Value::Integer(n) => match i128::from(*n) {
                    -2 => "bn",
                    -3 => "bt",
                    -4 => "bu",
                    -5 => "bv",
                    -1 => "bver",
                    -6 => "bs",
                    0 => "n",
                    1 => "u",
                    2 => "v",
                    3 => "vs",
                    4 => "vb",
                    5 => "s",
                    6 => "t",
                    7 => "ut",
                    8 => "vd",
                    n if n < -6 => {
                        return err(format!(
                            "SenML record {i}: label {n} must be understood and is not"
                        ));
                    }
                    _ => "",
                }
                .to_string(),
                ciborium::Value::Text(s) => s.clone(),
                _ => return err(format!("SenML record {i}: a label is not a number or text")),
            };
            match label.as_str() {
                "bn" => r.bn = Some(cbor_text(i, "bn", val)?),
                "n" => r.n = Some(cbor_text(i, "n", val)?),
                "bt" => r.bt = Some(cbor_num(i, "bt", val)?),
                "bv" => r.bv = Some(cbor_num(i, "bv", val)?),
                "t" => r.t = Some(cbor_num(i, "t", val)?),
                "v" => r.v = Some(cbor_num(i, "v", val)?),
                "vb" => match val {
                    ciborium::Value::Bool(b) => r.vb = Some(*b),
                    _ => return err(format!("SenML record {i}: 'vb' must be a boolean")),
                },
                "vs" | "vd" => r.has_other_value = true,
                _ => {}
            }
        }
        records.push(r);
    }
    resolve(&records, now)
}

/// What a resolved record name means.
enum Field<'a> {
    Lat,
    Lon,
    Other(&'a str),
}

/// Splits a resolved name into (device prefix, field). LwM2M location names end in `/6/0/0`
/// (latitude) and `/6/0/1` (longitude); other names end at the last `:` or `/`.
fn split_name(name: &str) -> (&str, Field<'_>) {
    for (suffix, f) in [("/6/0/0", 0), ("/6/0/1", 1)] {
        if let Some(prefix) = name.strip_suffix(suffix) {
            let field = if f == 0 { Field::Lat } else { Field::Lon };
            return (prefix, field);
        }
    }
    let (prefix, field) = match name.rfind([':', '/']) {
        Some(at) => (&name[..at], &name[at + 1..]),
        None => ("", name),
    };
    let f = match field {
        "lat" | "latitude" => Field::Lat,
        "lon" | "lng" | "longitude" => Field::Lon,
        other => Field::Other(other),
    };
    (prefix, f)
}

#[derive(Default)]
struct Group {
    lat: Option<f64>,
    lon: Option<f64>,
    telemetry: Vec<(String, f64)>,
    first_record: usize,
}

fn resolve(records: &[Record], now: f64) -> Result<Vec<Report>, PayloadError> {
    if records.is_empty() {
        return err("the SenML pack has no records");
    }
    let (mut bn, mut bt, mut bv) = (String::new(), 0.0f64, 0.0f64);
    // (device, time bits) -> group, in order of first appearance.
    let mut groups: BTreeMap<(String, u64), Group> = BTreeMap::new();
    let mut order: Vec<(String, u64)> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        if let Some(b) = &r.bn {
            bn = b.clone();
        }
        if let Some(b) = r.bt {
            bt = b;
        }
        if let Some(b) = r.bv {
            bv = b;
        }
        let name = format!("{bn}{}", r.n.as_deref().unwrap_or(""));
        if name.is_empty() {
            return err(format!("SenML record {i} has no name (neither bn nor n)"));
        }
        if name.len() > MAX_NAME {
            return err(format!(
                "SenML record {i}: name is {} bytes; at most {MAX_NAME}",
                name.len()
            ));
        }
        let value = match (r.v, r.vb) {
            (Some(v), _) => Some(bv + v),
            (None, Some(b)) => Some(f64::from(u8::from(b))),
            (None, None) if r.has_other_value => None,
            (None, None) if r.bv.is_some() => Some(bv),
            (None, None) => {
                // A record carrying only base fields (a header record) is fine.
                if r.n.is_none() {
                    continue;
                }
                return err(format!("SenML record {i} ('{name}') has no value"));
            }
        };
        let Some(value) = value else { continue };
        if !value.is_finite() {
            return err(format!("SenML record {i} ('{name}'): value is not finite"));
        }
        let mut t = bt + r.t.unwrap_or(0.0);
        if !t.is_finite() {
            return err(format!("SenML record {i} ('{name}'): time is not finite"));
        }
        if t.abs() < RELATIVE_TIME_LIMIT {
            t += now;
        }
        let (prefix, field) = split_name(&name);
        let device = prefix.trim_end_matches([':', '/']).to_string();
        let key = (device, t.to_bits());
        let g = groups.entry(key.clone()).or_insert_with(|| {
            order.push(key);
            Group {
                first_record: i,
                ..Group::default()
            }
        });
        match field {
            Field::Lat => g.lat = Some(value),
            Field::Lon => g.lon = Some(value),
            Field::Other(f) => {
                if g.telemetry.len() < MAX_TELEMETRY && !f.is_empty() {
                    g.telemetry.push((f.to_string(), value));
                }
            }
        }
    }
    let mut out = Vec::with_capacity(order.len());
    for key in order {
        let Some(g) = groups.remove(&key) else {
            continue;
        };
        let (device, tbits) = key;
        let position = match (g.lat, g.lon) {
            (Some(lat), Some(lon)) => Some(check_position(lon, lat, g.first_record)?),
            (None, None) => None,
            _ => {
                return err(format!(
                    "SenML record {}: a latitude without a longitude (or the reverse) at one time",
                    g.first_record
                ));
            }
        };
        let t = f64::from_bits(tbits);
        check_time(t, now, g.first_record)?;
        out.push(Report {
            device: (!device.is_empty()).then_some(device),
            t,
            position,
            telemetry: g.telemetry,
        });
    }
    if out.is_empty() {
        return err("the SenML pack has no values");
    }
    Ok(out)
}

fn check_position(lon: f64, lat: f64, record: usize) -> Result<[f64; 2], PayloadError> {
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return err(format!(
            "record {record}: position lat={lat}, lon={lon} is out of range (lat -90..90, lon -180..180)"
        ));
    }
    Ok([lon, lat])
}

fn check_time(t: f64, now: f64, record: usize) -> Result<(), PayloadError> {
    if t > now + MAX_CLOCK_AHEAD {
        return err(format!(
            "record {record}: time {t} is {:.0} s in the future; check the device clock",
            t - now
        ));
    }
    if t < 0.0 {
        return err(format!("record {record}: time {t} is before 1970"));
    }
    Ok(())
}

/// Why a whole payload was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    /// More records than [`MAX_RECORDS`].
    #[error("{records} records in one payload; at most {MAX_RECORDS}")]
    TooMany {
        /// Records in the payload.
        records: usize,
    },
    /// Not a payload of its format (the message names the problem and the record).
    #[error(transparent)]
    Malformed(#[from] PayloadError),
}

/// Decodes a payload of `format` record by record: compact JSON is checked record by record
/// (one bad record leaves the others), while a SenML pack is one document whose records share
/// base fields, so it is accepted or refused whole. An empty payload is refused.
pub fn parse_batch(
    format: Format,
    payload: &[u8],
    now: f64,
) -> Result<Vec<Result<Report, PayloadError>>, BatchError> {
    match format {
        Format::Json => compact_records(payload, now),
        f => Ok(parse(f, payload, now)?.into_iter().map(Ok).collect()),
    }
}

/// Compact JSON's records, each decoded on its own.
fn compact_records(
    payload: &[u8],
    now: f64,
) -> Result<Vec<Result<Report, PayloadError>>, BatchError> {
    let v: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| PayloadError(format!("JSON: {e}")))?;
    let items: Vec<&serde_json::Value> = match &v {
        serde_json::Value::Array(a) => a.iter().collect(),
        o => vec![o],
    };
    if items.len() > MAX_RECORDS {
        return Err(BatchError::TooMany {
            records: items.len(),
        });
    }
    if items.is_empty() {
        return Err(PayloadError("the payload has no records".into()).into());
    }
    Ok(items
        .into_iter()
        .enumerate()
        .map(|(i, item)| compact_record(i, item, now))
        .collect())
}

/// Parses compact JSON: one object `{"lat":..,"lon":..,"t":..}` (with `device` for batches and
/// other numeric members kept as telemetry), or an array of them; refused whole if any record
/// is bad.
pub fn parse_compact(payload: &[u8], now: f64) -> Result<Vec<Report>, PayloadError> {
    compact_records(payload, now)
        .map_err(|e| match e {
            BatchError::Malformed(e) => e,
            e => PayloadError(e.to_string()),
        })?
        .into_iter()
        .collect()
}

/// One compact record.
pub fn compact_record(i: usize, v: &serde_json::Value, now: f64) -> Result<Report, PayloadError> {
    let Some(obj) = v.as_object() else {
        return err(format!("record {i} is not a JSON object"));
    };
    let num = |k: &str| -> Result<Option<f64>, PayloadError> {
        match obj.get(k) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(x) => x
                .as_f64()
                .map(Some)
                .ok_or_else(|| PayloadError(format!("record {i}: '{k}' must be a number"))),
        }
    };
    // The long names too (as SenML's): taken as telemetry, a position would reach callers
    // the view gives snapped positions only.
    let lat = match num("lat")? {
        Some(l) => Some(l),
        None => num("latitude")?,
    };
    let lon = match (num("lon")?, num("lng")?) {
        (Some(l), _) | (None, Some(l)) => Some(l),
        (None, None) => num("longitude")?,
    };
    let position = match (lat, lon) {
        (Some(lat), Some(lon)) => Some(check_position(lon, lat, i)?),
        (None, None) => None,
        _ => {
            return err(format!("record {i}: 'lat' without 'lon' (or the reverse)"));
        }
    };
    let t = match num("t")? {
        Some(t) if !t.is_finite() => return err(format!("record {i}: 't' is not finite")),
        Some(t) if t.abs() < RELATIVE_TIME_LIMIT => now + t,
        Some(t) => t,
        None => now,
    };
    check_time(t, now, i)?;
    let device = match obj.get("device").or_else(|| obj.get("id")) {
        None => None,
        Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= MAX_NAME => {
            Some(s.clone())
        }
        Some(_) => {
            return err(format!(
                "record {i}: 'device' must be a non-empty string of at most {MAX_NAME} bytes"
            ));
        }
    };
    let mut telemetry = Vec::new();
    for (k, val) in obj {
        if matches!(
            k.as_str(),
            "lat" | "lon" | "lng" | "latitude" | "longitude" | "t" | "device" | "id"
        ) {
            continue;
        }
        let x = match val {
            serde_json::Value::Number(n) => n.as_f64(),
            serde_json::Value::Bool(b) => Some(f64::from(u8::from(*b))),
            _ => None,
        };
        if let Some(x) = x
            && telemetry.len() < MAX_TELEMETRY
            && k.len() <= MAX_NAME
        {
            telemetry.push((k.clone(), x));
        }
    }
    if position.is_none() && telemetry.is_empty() {
        return err(format!("record {i} has neither a position nor any value"));
    }
    Ok(Report {
        device,
        t,
        position,
        telemetry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_json_takes_the_long_names_as_a_position_never_as_telemetry() {
        let r = parse_compact(
            br#"{"latitude":60.17,"longitude":24.94,"battery":3.6}"#,
            1e9,
        )
        .unwrap();
        assert_eq!(r[0].position, Some([24.94, 60.17]));
        assert_eq!(r[0].telemetry, vec![("battery".to_string(), 3.6)]);
        assert!(parse_compact(br#"{"latitude":60.17}"#, 1e9).is_err());
    }

    const NOW: f64 = 1_790_000_000.0;

    #[test]
    fn senml_json_with_base_name_and_time() {
        let p = br#"[{"bn":"urn:dev:imei:3520:","bt":1789999990,"n":"lat","v":60.17},
                     {"n":"lon","v":24.94},{"n":"battery","u":"%","v":87},
                     {"n":"lat","t":5,"v":60.18},{"n":"lon","t":5,"v":24.95}]"#;
        let r = parse(Format::SenmlJson, p, NOW).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].device.as_deref(), Some("urn:dev:imei:3520"));
        assert_eq!(r[0].position, Some([24.94, 60.17]));
        assert_eq!(r[0].t, 1_789_999_990.0);
        assert_eq!(r[0].telemetry, vec![("battery".to_string(), 87.0)]);
        assert_eq!(r[1].t, 1_789_999_995.0);
    }

    #[test]
    fn lwm2m_location_names() {
        let p = br#"[{"bn":"/6/0/","n":"0","v":-34.9},{"n":"1","v":-56.16}]"#;
        let r = parse(Format::SenmlJson, p, NOW).unwrap();
        assert_eq!(r[0].position, Some([-56.16, -34.9]));
        assert_eq!(r[0].device, None);
        assert_eq!(r[0].t, NOW, "no time means now");
    }

    #[test]
    fn senml_cbor_integer_labels() {
        use ciborium::Value as V;
        let rec = |pairs: Vec<(i64, V)>| {
            V::Map(
                pairs
                    .into_iter()
                    .map(|(k, v)| (V::Integer(k.into()), v))
                    .collect(),
            )
        };
        let pack = V::Array(vec![
            rec(vec![
                (-2, V::Text("tr-9/".into())),
                (0, V::Text("lat".into())),
                (2, V::Float(60.2)),
            ]),
            rec(vec![(0, V::Text("lon".into())), (2, V::Float(24.9))]),
            rec(vec![
                (0, V::Text("speed".into())),
                (2, V::Integer(12.into())),
            ]),
        ]);
        let mut bytes = Vec::new();
        ciborium::ser::into_writer(&pack, &mut bytes).unwrap();
        let r = parse(Format::SenmlCbor, &bytes, NOW).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].device.as_deref(), Some("tr-9"));
        assert_eq!(r[0].position, Some([24.9, 60.2]));
        assert_eq!(r[0].telemetry, vec![("speed".to_string(), 12.0)]);
    }

    #[test]
    fn compact_object_keeps_numeric_telemetry() {
        let r = parse(
            Format::Json,
            br#"{"lat":1.5,"lon":2.5,"t":1789999000,"temp":21.5,"note":"x","door":true}"#,
            NOW,
        )
        .unwrap();
        assert_eq!(r[0].position, Some([2.5, 1.5]));
        assert_eq!(r[0].t, 1_789_999_000.0);
        assert_eq!(
            r[0].telemetry,
            vec![("door".to_string(), 1.0), ("temp".to_string(), 21.5)]
        );
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let cases: &[(Format, &[u8], &str)] = &[
            (
                Format::SenmlJson,
                b"[{\"n\":\"lat\",\"v\":91},{\"n\":\"lon\",\"v\":0}]",
                "out of range",
            ),
            (Format::SenmlJson, b"{\"n\":1}", "array"),
            (
                Format::SenmlJson,
                b"[{\"n\":\"lat\",\"v\":\"x\"}]",
                "'v' must be a number",
            ),
            (
                Format::SenmlJson,
                b"[{\"n\":\"lat\",\"v\":1}]",
                "latitude without a longitude",
            ),
            (Format::SenmlJson, b"[]", "no records"),
            (
                Format::SenmlJson,
                b"[{\"n\":\"x\",\"v\":1,\"t_\":3}]",
                "must be understood",
            ),
            (Format::SenmlJson, b"[{\"v\":1}]", "no name"),
            (Format::SenmlJson, b"[1,2", "SenML JSON"),
            (Format::SenmlCbor, b"\xff\x00", "SenML CBOR"),
            (Format::Json, b"{\"lat\":1}", "without 'lon'"),
            (Format::Json, b"{\"lat\":1,\"lon\":200}", "out of range"),
            (
                Format::Json,
                b"{\"lat\":1,\"lon\":2,\"t\":9999999999}",
                "future",
            ),
            (Format::Json, b"{\"note\":\"x\"}", "neither a position"),
        ];
        for (f, p, want) in cases {
            let e = parse(*f, p, NOW).unwrap_err();
            assert!(
                e.0.contains(want),
                "{:?}: {e} lacks {want:?}",
                String::from_utf8_lossy(p)
            );
        }
    }
}
