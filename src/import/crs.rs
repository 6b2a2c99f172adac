//! Recognising the coordinate reference systems that files declare.
//!
//! Urbis imports EPSG:4326 (and its axis-order twin OGC:CRS84) and EPSG:3857; everything else
//! is refused with the CRS's own name, so the analyst knows what to reproject from.

use super::source::Crs;

/// Interprets an EPSG code.
pub fn from_epsg(code: i64) -> Result<Crs, String> {
    match code {
        4326 => Ok(Crs::Wgs84),
        3857 | 900913 | 3785 | 102100 | 102113 => Ok(Crs::WebMercator),
        other => Err(format!("EPSG:{other}")),
    }
}

/// Interprets a CRS name as GeoJSON's `crs.properties.name` or a URN gives it.
pub fn from_name(name: &str) -> Result<Crs, String> {
    let n = name.trim();
    let upper = n.to_ascii_uppercase();
    if upper.ends_with("CRS84") || upper.ends_with("CRS:84") {
        return Ok(Crs::Wgs84);
    }
    let code = upper
        .rsplit([':', '/'])
        .find(|s| !s.is_empty())
        .and_then(|s| s.parse::<i64>().ok());
    match code {
        Some(c) if upper.contains("EPSG") => from_epsg(c),
        _ => Err(n.to_string()),
    }
}

/// Interprets a WKT definition (a Shapefile's `.prj`, a GeoPackage's `definition`).
pub fn from_wkt(wkt: &str) -> Result<Crs, String> {
    let w = wkt.trim();
    let upper = w.to_ascii_uppercase();
    let head = upper.split('[').next().unwrap_or("").trim().to_string();
    let name = w.split('"').nth(1).unwrap_or(w).to_string();
    if head == "PROJCS" || head == "PROJCRS" {
        let mercator = upper.contains("PSEUDO-MERCATOR")
            || upper.contains("PSEUDO_MERCATOR")
            || upper.contains("WEB_MERCATOR")
            || upper.contains("POPULAR VISUALISATION")
            || upper.contains("MERCATOR_AUXILIARY_SPHERE")
            || upper.contains("\"3857\"]]") && upper.ends_with("\"3857\"]]");
        return if mercator {
            Ok(Crs::WebMercator)
        } else {
            Err(name)
        };
    }
    if head == "GEOGCS" || head == "GEOGCRS" || head == "GEODCRS" {
        let wgs84 =
            upper.contains("WGS_1984") || upper.contains("WGS 84") || upper.contains("WGS84");
        return if wgs84 { Ok(Crs::Wgs84) } else { Err(name) };
    }
    Err(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_urns() {
        assert_eq!(from_name("urn:ogc:def:crs:OGC:1.3:CRS84"), Ok(Crs::Wgs84));
        assert_eq!(from_name("EPSG:4326"), Ok(Crs::Wgs84));
        assert_eq!(
            from_name("urn:ogc:def:crs:EPSG::3857"),
            Ok(Crs::WebMercator)
        );
        assert_eq!(
            from_name("urn:ogc:def:crs:EPSG::2393"),
            Err("EPSG:2393".into())
        );
    }

    #[test]
    fn wkt_definitions() {
        let wgs = r#"GEOGCS["GCS_WGS_1984",DATUM["D_WGS_1984",SPHEROID["WGS_1984",6378137.0,298.257223563]]]"#;
        assert_eq!(from_wkt(wgs), Ok(Crs::Wgs84));
        let merc =
            r#"PROJCS["WGS 84 / Pseudo-Mercator",GEOGCS["WGS 84"],PROJECTION["Mercator_1SP"]]"#;
        assert_eq!(from_wkt(merc), Ok(Crs::WebMercator));
        let kkj = r#"PROJCS["KKJ / Finland Uniform Coordinate System",GEOGCS["KKJ"]]"#;
        assert_eq!(
            from_wkt(kkj),
            Err("KKJ / Finland Uniform Coordinate System".into())
        );
    }
}
