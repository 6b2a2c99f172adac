//! Governance: what the city knows about each layer and how long it keeps it. Catalog
//! metadata (DCAT 3 / ISO 19115 core: title, owner, licence, update frequency, retention,
//! lineage) in the store's database and its DCAT JSON-LD form ([`meta`]); publishing a file
//! with them ([`publish`]); retention of device history and of earlier layer versions
//! ([`retention`]). Layer versions and rollback are the store's (`Store::rollback`); the audit
//! chain is the security room's. Depends on `store` (the database), `import`, `live` (the
//! hub runs retention on its log) and `security` (duration parsing).

pub mod meta;
pub mod publish;
pub mod retention;

/// Seconds since 1970 as an ISO 8601 UTC date-time (`2026-12-01T19:06:27Z`).
pub fn iso8601(secs: i64) -> String {
    // Days to a civil date (Howard Hinnant's algorithm, proleptic Gregorian).
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso8601_dates() {
        assert_eq!(super::iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::iso8601(1_796_152_000), "2026-12-01T19:06:40Z");
        assert_eq!(super::iso8601(951_782_400), "2000-02-29T00:00:00Z");
    }
}
