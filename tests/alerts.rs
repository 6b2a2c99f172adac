//! Alert rules against a real server: a device that goes lost fires an alert that the test
//! sees on `/stream`, at `GET /alerts` and at a webhook receiver it runs (whose first answer
//! is a 503, so the retry is seen too), and that resolves when the device reports again; a
//! webhook that never answers does not slow device ingest; bad rules files are refused with
//! the rule and field named.

mod common;

use common::live::{now, post_json};
use common::{Server, webhook};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn report(server: &Server, secret: &str) {
    let body = format!(r#"{{"lat":-34.9,"lon":-56.16,"t":{}}}"#, now());
    let r = post_json(&server.addr, &format!("Bearer {secret}"), &body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn a_lost_device_fires_an_alert_on_the_stream_the_api_and_the_webhook_and_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let secret = common::add_device(&store, "tracker-1", "fleet", "1s");
    // Another layer's lost devices must not count.
    let other = common::add_device(&store, "meter-1", "meters", "1s");
    let (url, hook) = webhook(1);
    let rules = dir.path().join("alerts.toml");
    std::fs::write(
        &rules,
        format!(
            r#"
            interval = "1s"
            [webhook]
            url = "{url}"
            timeout = "2s"
            retries = 3
            [[rule]]
            name = "fleet lost"
            when = "devices_lost"
            layer = "fleet"
            severity = "critical"
            [[rule]]
            name = "never"
            when = "devices_lost"
            layer = "fleet"
            above = 5
            "#
        ),
    )
    .unwrap();
    let server = Server::start(&store, &["--alerts", rules.to_str().unwrap()]);
    let stream = server.stream("/stream", &[]);
    assert_eq!(stream.status, 200);
    report(&server, &secret);
    report(&server, &other);
    let before = server.get("/alerts", &[]).json();
    assert_eq!(before["rules"][0]["state"], "inactive", "{before}");
    assert_eq!(before["firing"].as_array().unwrap().len(), 0);

    // Lost after three intervals and a minute of grace.
    let fired = stream
        .until(Duration::from_secs(120), |e| e.event == "alert")
        .expect("an alert event on the stream");
    let a = fired.json();
    assert_eq!(a["rule"], "fleet lost", "{a}");
    assert_eq!(a["state"], "firing");
    assert_eq!(a["severity"], "critical");
    assert_eq!(a["layer"], "fleet");
    assert_eq!(
        a["value"], 1.0,
        "one device of fleet lost, the meter not counted: {a}"
    );
    assert!(
        a["summary"]
            .as_str()
            .unwrap()
            .contains("1 devices of fleet lost"),
        "{a}"
    );
    assert!(fired.id.is_none(), "an alert has no log id: {fired:?}");
    let now_firing = server.get("/alerts", &[]).json();
    assert_eq!(now_firing["rules"][0]["state"], "firing", "{now_firing}");
    assert_eq!(now_firing["rules"][1]["state"], "inactive", "{now_firing}");
    assert_eq!(now_firing["firing"][0]["rule"], "fleet lost");
    assert_eq!(now_firing["recent"][0]["state"], "firing");
    // The webhook answered 503 first: the same event was posted again.
    let (s1, first) = hook.recv_timeout(Duration::from_secs(10)).expect("a POST");
    let (s2, again) = hook.recv_timeout(Duration::from_secs(10)).expect("a retry");
    assert_eq!((s1, s2), (503, 200));
    assert_eq!(first, again);
    assert_eq!(again["rule"], "fleet lost");
    assert_eq!(again["state"], "firing");
    // Metrics tell the same.
    let m = String::from_utf8(server.get("/metrics", &[]).body).unwrap();
    assert!(
        m.contains(r#"urbis_devices{layer="fleet",state="lost"} 1"#),
        "{m}"
    );

    // The device reports again: the alert resolves everywhere.
    report(&server, &secret);
    let resolved = stream
        .until(Duration::from_secs(20), |e| e.event == "alert")
        .expect("the resolved alert on the stream");
    assert_eq!(resolved.json()["state"], "resolved", "{:?}", resolved);
    assert_eq!(resolved.json()["rule"], "fleet lost");
    let (_, r) = hook.recv_timeout(Duration::from_secs(10)).expect("a POST");
    assert_eq!(r["state"], "resolved");
    let after = server.get("/alerts", &[]).json();
    assert_eq!(after["rules"][0]["state"], "inactive", "{after}");
    assert_eq!(after["recent"].as_array().unwrap().len(), 2);

    // /alerts is for those who may watch the stream: not anonymous callers.
    assert_eq!(server.get_anonymous("/alerts").status, 401);
}

#[test]
fn a_webhook_that_never_answers_does_not_slow_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let secret = common::add_device(&store, "tracker-2", "fleet", "30s");
    // Accepts connections and never answers: every POST waits for its timeout.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", dead.local_addr().unwrap());
    let (held_tx, held) = mpsc::channel();
    std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in dead.incoming().flatten() {
            conns.push(c);
            let _ = held_tx.send(());
        }
    });
    let rules = dir.path().join("alerts.toml");
    std::fs::write(
        &rules,
        format!(
            r#"
            interval = "1s"
            [webhook]
            url = "{url}"
            timeout = "60s"
            [[rule]]
            name = "refused"
            when = "ingest_refused"
            window = "1m"
            "#
        ),
    )
    .unwrap();
    let server = Server::start(&store, &["--alerts", rules.to_str().unwrap()]);
    let time_reports = |n: usize| -> Vec<Duration> {
        let mut took: Vec<Duration> = (0..n)
            .map(|_| {
                let t = Instant::now();
                report(&server, &secret);
                t.elapsed()
            })
            .collect();
        took.sort();
        took
    };
    let before = time_reports(100);
    // A refused report fires the rule; its webhook POST hangs.
    assert_eq!(
        post_json(&server.addr, "Bearer ds_wrong", r#"{"lat":1,"lon":2}"#).status,
        401
    );
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let a = server.get("/alerts", &[]).json();
        if a["rules"][0]["state"] == "firing" {
            break;
        }
        assert!(Instant::now() < end, "the rule did not fire: {a}");
        std::thread::sleep(Duration::from_millis(100));
    }
    held.recv_timeout(Duration::from_secs(10))
        .expect("the server connected to the webhook");
    let during = time_reports(100);
    let median = |v: &[Duration]| v[v.len() / 2];
    let worst = during[during.len() - 1];
    assert!(
        median(&during) <= median(&before) * 5 + Duration::from_millis(20),
        "ingest slowed while the webhook hangs: median {:?} before, {:?} during",
        median(&before),
        median(&during)
    );
    assert!(
        worst < Duration::from_secs(2),
        "a report waited {worst:?} while the webhook hangs"
    );
}

#[test]
fn bad_rules_files_are_refused_naming_the_rule_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("bad.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"quiet meters\"\nwhen = \"no_reports\"\nlayer = \"meters\"\nsilent = \"half an hour\"\n",
    )
    .unwrap();
    let out = common::urbis(&["alerts", "check", rules.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("rule \"quiet meters\": silent"),
        "{err}"
    );
    let store = dir.path().join("store");
    let out = common::urbis(&[
        "serve",
        "--no-demo",
        "--store",
        store.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
        "--alerts",
        rules.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("alerts") && err.contains("quiet meters"),
        "{err}"
    );

    // A good file exports as Prometheus rules naming the metrics.
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"quiet meters\"\nwhen = \"no_reports\"\nlayer = \"meters\"\nsilent = \"30m\"\nfor = \"1m\"\n",
    )
    .unwrap();
    let out = common::urbis(&["alerts", "export", rules.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let y = String::from_utf8_lossy(&out.stdout);
    assert!(y.contains("- alert: \"quiet meters\""), "{y}");
    assert!(
        y.contains("urbis_live_last_report_timestamp_seconds"),
        "{y}"
    );
    assert!(y.contains("for: 60s"), "{y}");
    // And the example shipped with the project is valid.
    let out = common::urbis(&[
        "alerts",
        "check",
        common::root()
            .join("examples/alerts.toml")
            .to_str()
            .unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
