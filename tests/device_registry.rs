//! The device registry in the store's database: a `devices.json` of earlier versions is
//! migrated once, whole or not at all, even when the process is killed during it; batches of
//! devices are registered all or nothing, with the line of every bad row; a running server
//! picks a batch up within a second.

mod common;

use common::live::*;
use common::{Server, urbis};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use urbis::live::registry::{Principal, RegistryDb};

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A registry file of the earlier format (version 1) with `n` devices whose secrets are
/// `ds_mig_{i}`, and the ingest key `ik_mig`.
fn legacy_registry(n: usize) -> Vec<u8> {
    let mut s = String::with_capacity(n * 180);
    s.push_str(r#"{"format_version":1,"devices":{"#);
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#""m-{i}":{{"layer":"meters","kind":"meter","interval_s":3600,"secret_sha256":"{}","created":0}}"#,
            sha256_hex(&format!("ds_mig_{i}"))
        ));
    }
    s.push_str(&format!(
        r#"}},"ingest_keys":{{"gw":"{}"}}}}"#,
        sha256_hex("ik_mig")
    ));
    s.into_bytes()
}

/// What a store's database holds of the registry, read with SQLite directly (opening it
/// through Urbis would migrate): (devices, migrated flag).
fn db_state(store: &Path) -> (i64, bool) {
    let path = store.join("urbis.db");
    if !path.exists() {
        return (0, false);
    }
    let c = rusqlite::Connection::open(&path).unwrap();
    let has_table: bool = c
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'devices'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    if !has_table {
        return (0, false);
    }
    let n = c
        .query_row("SELECT count(*) FROM devices", [], |r| r.get(0))
        .unwrap();
    let migrated = c
        .query_row(
            "SELECT count(*) FROM counters WHERE name = 'devices_json'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
        == 1;
    (n, migrated)
}

/// Runs `urbis devices key probe` (which opens the registry, migrating it) and kills it with
/// SIGKILL after `after`, if it is still running; true if it finished by itself.
fn migrate_killed_after(store: &Path, after: Duration) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_urbis"))
        .args([
            "devices",
            "key",
            "probe",
            "--store",
            store.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let finished = child.try_wait().unwrap().is_some();
    if !finished {
        child.kill().unwrap(); // SIGKILL
    }
    child.wait().unwrap();
    finished
}

#[test]
fn a_legacy_registry_is_migrated_whole_or_not_at_all_even_when_killed() {
    const N: usize = 100_000;
    let legacy = legacy_registry(N);
    let dir = tempfile::tempdir().unwrap();
    let fresh = |name: &str| {
        let store = dir.path().join(name);
        std::fs::create_dir_all(store.join("live")).unwrap();
        std::fs::write(store.join("live/devices.json"), &legacy).unwrap();
        store
    };
    // How long a whole migration takes here, to kill the others part-way through it.
    let timing = fresh("timing");
    let t0 = Instant::now();
    let out = urbis(&[
        "devices",
        "key",
        "probe",
        "--store",
        timing.to_str().unwrap(),
    ]);
    let full = t0.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("migrated the device registry"),
        "the migration says so: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(db_state(&timing), (N as i64, true));
    let mut outcomes = Vec::new();
    for (i, frac) in [0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95]
        .into_iter()
        .enumerate()
    {
        let store = fresh(&format!("killed-{i}"));
        let finished = migrate_killed_after(&store, full.mul_f64(frac));
        let json = store.join("live/devices.json");
        let (n, migrated) = db_state(&store);
        // The old registry (the file, nothing in the database) or the new one (every device
        // in the database, marked migrated; the file renamed, or renamed at the next open).
        let old = json.exists() && n == 0 && !migrated;
        let new = n == N as i64 && migrated;
        assert!(
            old || new,
            "killed at {frac} of {full:?}: {n} devices in the database, migrated {migrated}, file there {}",
            json.exists()
        );
        outcomes.push((frac, finished, if old { "old" } else { "new" }));
        // Either way the next open completes it, and every device authenticates.
        if i == 3 || i == 6 {
            let reg = RegistryDb::open(&store).unwrap().load().unwrap();
            assert_eq!(reg.len(), N);
            for d in 0..N {
                assert_eq!(
                    reg.authenticate(&format!("ds_mig_{d}"), Some(&format!("m-{d}"))),
                    Ok(Principal::Device(format!("m-{d}")))
                );
            }
            assert!(!json.exists() && json.with_extension("json.migrated").exists());
        }
    }
    eprintln!("migration of {N} devices took {full:?}; kills: {outcomes:?}");
    assert!(
        outcomes.iter().any(|o| o.2 == "old"),
        "no kill landed inside the migration: {outcomes:?}"
    );
    // A server on a migrated store takes reports with the old secrets and the old ingest key.
    let server = Server::start(&timing, &[]);
    for d in [0, N / 2, N - 1] {
        let r = post_json(
            &server.addr,
            &format!("Bearer ds_mig_{d}"),
            r#"{"lon":24.94,"lat":60.17}"#,
        );
        assert_eq!(r.status, 200, "m-{d}: {}", String::from_utf8_lossy(&r.body));
    }
    let r = post_json(
        &server.addr,
        "Bearer ik_mig",
        r#"{"device":"m-7","lon":24.94,"lat":60.17}"#,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn a_batch_with_bad_rows_registers_nothing_and_a_good_one_is_served_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let st = store.to_str().unwrap();
    common::add_device(&store, "first", "meters", "1h");
    let server = Server::start(&store, &[]);
    // Three bad rows among good ones: an id with a space, an unknown kind, a short hash.
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "id,layer,kind,interval,secret_sha256\n\
         w-1,water,meter,1h,\n\
         w 2,water,meter,1h,\n\
         w-3,water,meter,1h,\n\
         w-4,water,kettle,1h,\n\
         w-5,water,meter,1h,0123\n\
         w-6,water,meter,1h,\n",
    )
    .unwrap();
    let out = urbis(&[
        "devices",
        "import",
        bad.to_str().unwrap(),
        "--store",
        st,
        "--secrets-out",
        dir.path().join("bad-secrets.csv").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for line in ["line 3:", "line 5:", "line 6:"] {
        assert!(err.contains(line), "{line} named: {err}");
    }
    assert!(err.contains("3 bad rows, nothing was registered"), "{err}");
    assert!(
        !err.contains("line 2:") && !err.contains("line 4:"),
        "{err}"
    );
    assert!(!dir.path().join("bad-secrets.csv").exists());
    assert_eq!(RegistryDb::open(&store).unwrap().count().unwrap(), 1);

    // A good file of 10,000 devices: the running server has them within a second.
    let good = dir.path().join("good.csv");
    let mut csv = String::from("id,layer,kind,interval\n");
    for i in 0..10_000 {
        csv.push_str(&format!("w-{i},water,meter,6h\n"));
    }
    std::fs::write(&good, csv).unwrap();
    let secrets = dir.path().join("secrets.csv");
    let out = urbis(&[
        "devices",
        "import",
        good.to_str().unwrap(),
        "--store",
        st,
        "--secrets-out",
        secrets.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = Instant::now();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&secrets).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let seen = loop {
        let j = get_json(&server, "/devices?layer=water");
        if j["devices"].as_array().map_or(0, |a| a.len()) == 10_000 {
            break done.elapsed();
        }
        assert!(
            done.elapsed() < Duration::from_secs(1),
            "the server did not show the 10,000 devices within a second"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("10,000 imported devices served {seen:?} after the import returned");
    // A generated secret works for its device, and for no other.
    let text = std::fs::read_to_string(&secrets).unwrap();
    let line = text.lines().nth(1 + 4_321).unwrap();
    let (id, secret) = line.split_once(',').unwrap();
    assert_eq!(id, "w-4321");
    let r = post_json(
        &server.addr,
        &format!("Bearer {secret}"),
        r#"{"lon":24.94,"lat":60.17}"#,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(get_json(&server, "/devices/w-4321")["reports"], 1);
    let r = post_json(
        &server.addr,
        &format!("Bearer {secret}"),
        r#"{"device":"w-1","lon":24.94,"lat":60.17}"#,
    );
    assert_eq!(r.json()["accepted"], 0);

    // The admin API: a batch all or nothing, then one device removed.
    let bad = br#"[{"id":"a-1","layer":"water"},{"id":"a 2","layer":"water"},{"id":"w-7","layer":"water"}]"#;
    let r = server.request("POST", "/admin/devices", &[], bad);
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    let lines: Vec<u64> = j["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [2], "the bad id; {j}");
    let r = server.request(
        "POST",
        "/admin/devices",
        &[],
        br#"[{"id":"a-1","layer":"water"},{"id":"w-7","layer":"water"}]"#,
    );
    assert_eq!(r.status, 422, "w-7 is registered already");
    assert!(r.json()["detail"].as_str().unwrap().contains("1 bad rows"));
    let r = server.request(
        "POST",
        "/admin/devices",
        &[],
        br#"[{"id":"a-1","layer":"water","kind":"meter","interval":"1h"},{"id":"a-2","layer":"water"}]"#,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    assert_eq!(j["registered"], 2);
    let secret = j["secrets"][0]["secret"].as_str().unwrap().to_string();
    assert_eq!(j["secrets"][0]["id"], "a-1");
    let r = post_json(
        &server.addr,
        &format!("Bearer {secret}"),
        r#"{"lon":24.94,"lat":60.17}"#,
    );
    assert_eq!(
        r.status, 200,
        "the registration answered after the server had it"
    );
    let r = server.request("DELETE", "/admin/devices/a-1", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(server.get("/devices/a-1", &[]).status, 404);
    assert_eq!(
        server
            .request("DELETE", "/admin/devices/a-1", &[], b"")
            .status,
        404
    );
    // A viewer may not change the registry.
    let viewer = common::api_key(&store, "viewer");
    std::thread::sleep(Duration::from_millis(600));
    let r = common::http_request(
        &server.addr,
        "POST",
        "/admin/devices",
        &[("Authorization", &format!("Bearer {viewer}"))],
        br#"[{"id":"v-1","layer":"water"}]"#,
    );
    assert_eq!(r.status, 403);
}
