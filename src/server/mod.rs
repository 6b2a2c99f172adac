//! The composition root: opens the store (importing the embedded demo into an empty one),
//! starts the tile engine and its catalog watcher, serves the API, and shuts down gracefully
//! on SIGTERM or Ctrl-C.

pub mod tls;

use crate::api::{AppState, router};
use crate::config::Config;
use crate::engine::{Engine, EngineConfig};
use crate::import::{ImportOptions, Silent, import_file};
use crate::store::Store;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Attribution of the embedded demo data.
pub const DEMO_ATTRIBUTION: &str = "© OpenStreetMap contributors";

/// Where the demo data lives: `./data` when run from the repository, else the repository the
/// binary was built from.
fn demo_dir() -> Option<PathBuf> {
    [
        PathBuf::from("data"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data"),
    ]
    .into_iter()
    .find(|d| d.join("helsinki/helsinki.geojson").is_file())
}

/// The PNG tile cache, MB.
const RASTER_CACHE_MB: u64 = 64;

/// Imports the Helsinki demo layers into `store` when it has no layers yet.
pub fn import_demo_if_empty(store: &Store) -> anyhow::Result<()> {
    if !store.catalog()?.layers.is_empty() {
        return Ok(());
    }
    let Some(dir) = demo_dir() else {
        tracing::warn!(
            "the store is empty and no demo data was found (looked for data/helsinki/); import layers with `urbis import`"
        );
        return Ok(());
    };
    // The GeoPackage's tables, one layer each (helsinki.geojson holds the same features in
    // one layer: imported too, the map drew everything twice).
    for (file, layer) in [("helsinki/helsinki_layers.gpkg", "helsinki")] {
        tracing::info!("importing demo layer(s) from {}", dir.join(file).display());
        let opts = ImportOptions {
            file: dir.join(file),
            layer: Some(layer.to_string()),
            table: None,
            minzoom: 0,
            maxzoom: None,
            attribution: Some(DEMO_ATTRIBUTION.to_string()),
            feature_timeout: None,
            memory_mb: None,
        };
        for o in import_file(store, &opts, &Silent)? {
            // The demo layers are open data: anyone may see them, without a key.
            crate::store::db::Db::open(store.dir())?.set_layer_meta(
                &o.layer,
                crate::store::db::LayerPolicyMeta {
                    classification: crate::store::db::Classification::Public,
                    personal: false,
                },
            )?;
            tracing::info!(
                "imported {} v{}: {} features",
                o.layer,
                o.version.version,
                o.version.features
            );
        }
    }
    Ok(())
}

/// Serves HTTP/1.1 and HTTP/2 on `listener` until `shutdown`: every connection gets its
/// client address (for the audit log and per-address limits) and must send its request
/// headers within `header_timeout` (a slow client cannot hold connections open); at shutdown
/// the open connections get a few seconds to finish (event streams never do).
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    header_timeout: Duration,
    max_connections: usize,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let open = std::sync::Arc::new(tokio::sync::Semaphore::new(max_connections));
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    // HTTP/2 has no header timeout: pings find peers that went away, and a connection
    // carries a bounded number of streams.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_concurrent_streams(256);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, addr) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors, say: wait a moment rather than spin.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // At the cap, a new connection is closed at once: the ones open go on.
                let Ok(permit) = std::sync::Arc::clone(&open).try_acquire_owned() else {
                    tracing::warn!(max = max_connections, "too many open connections: one refused");
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let svc = hyper_util::service::TowerToHyperService::new(
                    app.clone()
                        .layer(axum::Extension(axum::extract::ConnectInfo(addr))),
                );
                match &tls {
                    None => {
                        let conn = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                            .into_owned();
                        let conn = graceful.watch(conn);
                        tokio::spawn(async move {
                            let _ = conn.await;
                            drop(permit);
                        });
                    }
                    Some(acceptor) => {
                        // The handshake runs in the connection's own task, under the same
                        // timeout as the headers: a client that stalls in it holds nothing.
                        let (acceptor, builder) = (acceptor.clone(), builder.clone());
                        let watcher = graceful.watcher();
                        tokio::spawn(async move {
                            let Ok(Ok(tls)) =
                                tokio::time::timeout(header_timeout, acceptor.accept(stream)).await
                            else {
                                return;
                            };
                            let conn = builder
                                .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                                .into_owned();
                            let _ = watcher.watch(conn).await;
                            drop(permit);
                        });
                    }
                }
            }
            () = &mut shutdown => break,
        }
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// Runs the server until a shutdown signal.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let store = Store::open(&config.store, true)?;
    if config.demo {
        let s = store.clone();
        tokio::task::spawn_blocking(move || import_demo_if_empty(&s)).await??;
    }
    let engine_config = EngineConfig {
        buffer: config.buffer,
        budget: config.tile_budget,
        cache_bytes: config.cache_bytes,
    };
    // The policy first: a bad policy file is refused before anything else is opened.
    let security = {
        let (dir, policy) = (config.store.clone(), config.policy.clone());
        Arc::new(
            tokio::task::spawn_blocking(move || crate::security::Security::open(&dir, policy))
                .await??,
        )
    };
    let (hub, cluster) = {
        let longest = crate::governance::retention::longest(&config.store, config.retention_s);
        let cfg = crate::live::LiveConfig {
            store_dir: config.store.clone(),
            retention_s: config.retention_s,
            keep_segments_s: longest,
            buffer: config.buffer,
            queue: config.ingest_queue,
            segment_bytes: config.wal_segment_mb << 20,
            dtls_only: config.coap_dtls_only,
        };
        match &config.cluster {
            None => (
                tokio::task::spawn_blocking(move || crate::live::Hub::open(cfg)).await??,
                None,
            ),
            Some(cc) => {
                let cluster = crate::cluster::Cluster::connect(cc.clone()).await?;
                tracing::info!(nats = %crate::cluster::display_urls(&cc.urls), name = %cc.name, replicas = cc.replicas, "cluster mode");
                // Layers and rows first: the devices registered in the cluster are known
                // before its reports apply.
                crate::cluster::tables::start(&cluster, config.store.clone()).await?;
                crate::cluster::layers::start(&cluster, store.clone()).await?;
                let log = cluster.report_log();
                let shared: Arc<dyn crate::live::SharedLog> = log.clone();
                let hub =
                    tokio::task::spawn_blocking(move || crate::live::Hub::open_shared(cfg, shared))
                        .await??;
                log.feeds(&hub);
                cluster.start_applier(Arc::clone(&hub));
                (hub, Some(cluster))
            }
        }
    };
    let engine = Arc::new(Engine::open(store, engine_config)?.with_live(Arc::clone(&hub)));
    let watcher = Arc::clone(&engine);
    tokio::spawn(async move {
        // Four times a second (a stat of catalog.json when nothing changed), so that a new
        // version is served within a second of its publication, as the README promises, with
        // room to spare (polled once a second, the switch took up to a second and a bit).
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let e = Arc::clone(&watcher);
            match tokio::task::spawn_blocking(move || e.refresh()).await {
                Ok(Ok(true)) => tracing::info!("catalog changed: serving the new layer versions"),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot re-read the catalog"),
                _ => {}
            }
        }
    });
    let listeners = Arc::new(crate::ops::ready::Listeners::default());
    let coap_listener = crate::live::coap::Listener::new(Arc::clone(&hub));
    let coaps = match tokio::net::UdpSocket::bind(config.coaps_bind).await {
        Ok(socket) => {
            let at = socket.local_addr()?;
            let running = listeners.started("coaps", format!("udp://{at}"));
            let task = crate::live::dtls::run(Arc::clone(&coap_listener), Arc::clone(&hub), socket);
            tokio::spawn(async move {
                let _running = running;
                task.await
            });
            format!(" and coaps on udp://{at}")
        }
        Err(e) if config.coaps_bind == crate::config::DEFAULT_COAPS_BIND.parse()? => {
            tracing::warn!(
                "CoAP over DTLS is off: cannot listen on udp {} ({e}); set --coaps-bind to another address",
                config.coaps_bind
            );
            " and coaps off".to_string()
        }
        Err(e) => anyhow::bail!(
            "cannot listen for CoAP over DTLS on udp {}: {e}",
            config.coaps_bind
        ),
    };
    let coap = match tokio::net::UdpSocket::bind(config.coap_bind).await {
        Ok(socket) => {
            let at = socket.local_addr()?;
            let running = listeners.started("coap", format!("udp://{at}"));
            let task = Arc::clone(&coap_listener).run(socket);
            tokio::spawn(async move {
                let _running = running;
                task.await
            });
            format!("coap on udp://{at}{coaps}")
        }
        // The default port taken (another CoAP server on this machine) should not stop the
        // tile server that the README's one command starts; another address that fails does.
        Err(e) if config.coap_bind == crate::config::DEFAULT_COAP_BIND.parse()? => {
            tracing::warn!(
                "CoAP is off: cannot listen on udp {} ({e}); set --coap-bind to another address",
                config.coap_bind
            );
            format!("coap off{coaps}")
        }
        Err(e) => anyhow::bail!("cannot listen for CoAP on udp {}: {e}", config.coap_bind),
    };
    let ticker = Arc::clone(&hub);
    let (store_dir, default_s) = (config.store.clone(), config.retention_s);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut seconds = 0u64;
        loop {
            tick.tick().await;
            let h = Arc::clone(&ticker);
            let dir = store_dir.clone();
            seconds += 1;
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = h.refresh_registry() {
                    tracing::warn!(error = %e, "cannot re-read the device registry");
                }
                h.tick_states();
                // A retention set longer on a running server protects the log's whole
                // segments from the hourly sweep within a minute.
                if seconds.is_multiple_of(60) {
                    h.keep_segments_for(crate::governance::retention::longest(&dir, default_s));
                }
            })
            .await;
        }
    });
    let watcher = Arc::clone(&security);
    tokio::spawn(async move {
        // Four times a second: a revoked key stops working within a second.
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let s = Arc::clone(&watcher);
            let _ = tokio::task::spawn_blocking(move || s.refresh()).await;
        }
    });
    let metrics = Arc::new(if config.metrics {
        crate::ops::metrics::Metrics::new()
    } else {
        crate::ops::metrics::Metrics::disabled()
    });
    // With metrics on (the default) the engine and the hub tell the Prometheus families and
    // the minute figures (the operation report, the alert rules); `--no-metrics` counts
    // nothing (the minutes then record only that the server was up and ready).
    let minutes = Arc::new(
        crate::ops::minutes::Minutes::open(Some(&config.store))
            .map_err(|e| anyhow::anyhow!("cannot keep operation figures: {e}"))?,
    );
    if config.metrics {
        let observer = Arc::new(crate::ops::Observer {
            metrics: Arc::clone(&metrics),
            minutes: Arc::clone(&minutes),
        });
        engine.observe(Arc::clone(&observer) as Arc<dyn crate::engine::TileObserver>);
        hub.observe(observer as Arc<dyn crate::live::LiveObserver>);
    }
    let started = crate::live::now_s();
    let alerts = config.alerts.clone().map(|rules| {
        let n = rules.rules.len();
        let a = Arc::new(crate::ops::alerts::Alerts::new(rules));
        tracing::info!(rules = n, "alert rules loaded");
        a
    });
    if let (Some(a), Some(c)) = (&alerts, &cluster) {
        // Changes of the rules over the shared state go to the webhook once for the cluster.
        a.share(Arc::new(
            crate::cluster::alerts::AlertClaims::open(c).await?,
        ));
    }
    let fonts = Arc::new(crate::fonts::Fonts::discover(&config.fonts));
    if fonts.is_empty() {
        tracing::warn!(
            folders = ?config.fonts,
            "no label fonts found: the styles leave out their label layers (install fonts-dejavu-core or fonts-noto-cjk, or give --fonts DIR)"
        );
    } else {
        tracing::info!(
            fonts = fonts.names().count(),
            labels = ?fonts.default_stack(),
            "label fonts"
        );
    }
    let state = AppState {
        minutes: Arc::clone(&minutes),
        alerts: alerts.clone(),
        listeners: Arc::clone(&listeners),
        slow_tile: Duration::from_millis(config.slow_tile_ms),
        metrics,
        limiter: Arc::new(crate::security::limits::Limiter::new(config.rates)),
        security,
        engine: Arc::clone(&engine),
        public_url: config.public_url.clone(),
        max_age: config.max_age,
        max_upload_bytes: config.max_upload_bytes,
        live: Some(Arc::clone(&hub)),
        rasters: Arc::new(crate::api::rasters(RASTER_CACHE_MB)),
        fonts: Arc::clone(&fonts),
    };
    // Retention once a day, the first a minute after start (device history per live layer,
    // earlier layer versions); every deletion audited.
    {
        let (hub, store_dir, security) = (
            Arc::clone(&hub),
            config.store.clone(),
            Arc::clone(&state.security),
        );
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            let mut tick = tokio::time::interval(Duration::from_secs(86_400));
            loop {
                tick.tick().await;
                let Ok(store) = crate::store::Store::open(&store_dir, false) else {
                    continue;
                };
                let audit = |action: &str, target: &str| {
                    security.audit(&crate::security::audit::Event {
                        key_id: "-",
                        role: "server",
                        client: "retention",
                        action,
                        target,
                        outcome: "ok",
                    });
                };
                let now = crate::security::keys::now();
                match crate::governance::retention::run(Some(&hub), &store, now, &audit).await {
                    Ok(s) => tracing::info!(
                        segments_deleted = s.segments_deleted,
                        segments_rewritten = s.segments_rewritten,
                        "retention run"
                    ),
                    Err(e) => tracing::warn!(error = %e, "retention run failed"),
                }
            }
        });
    }
    // The minute figures: each minute closed with the device counts and readiness of its end.
    {
        let st = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let st = st.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let now = crate::security::keys::now() as i64;
                    st.minutes.roll(now, || sample(&st));
                })
                .await;
            }
        });
    }
    if let Some(alerts) = alerts {
        let st = state.clone();
        crate::ops::alerts::spawn(
            alerts,
            crate::ops::alerts::Sources {
                hub: Arc::clone(&hub),
                minutes: Arc::clone(&minutes),
                ready: Box::new(move || {
                    crate::ops::ready::checks(&st.engine, st.live.as_deref(), &st.listeners)
                        .into_iter()
                        .filter(|c| !c.ok)
                        .map(|c| format!("{} ({})", c.name, c.detail))
                        .collect()
                }),
                store: config.store.clone(),
                started,
            },
        );
    }
    let state_for_flush = state.clone();
    let state_for_metrics = state.clone();
    let mut app = router(state);
    let acceptor = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let files = tls::CertFiles::open(cert, key).map_err(anyhow::Error::msg)?;
            let acceptor =
                tokio_rustls::TlsAcceptor::from(files.server_config().map_err(anyhow::Error::msg)?);
            let watcher = Arc::clone(&files);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let f = Arc::clone(&watcher);
                    let _ = tokio::task::spawn_blocking(move || f.refresh()).await;
                }
            });
            // Browsers that came once over HTTPS never fall back to clear text.
            app = app.layer(axum::middleware::map_response(
                |mut r: axum::response::Response| async move {
                    r.headers_mut().insert(
                        axum::http::header::STRICT_TRANSPORT_SECURITY,
                        axum::http::HeaderValue::from_static("max-age=31536000"),
                    );
                    r
                },
            ));
            Some(acceptor)
        }
        _ => {
            tracing::warn!(
                "serving plain HTTP: API keys travel in clear text unless a TLS proxy is in front (or give --tls-cert and --tls-key)"
            );
            None
        }
    };
    // Named at the end of the one "listening" line (supervisors and tests read that line).
    let mut scrape_at = String::new();
    if let Some(bind) = config.metrics_bind {
        let scrape = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {bind} for metrics: {e}"))?;
        scrape_at = format!("; metrics at http://{}/metrics", scrape.local_addr()?);
        let router = axum::Router::new()
            .route("/metrics", axum::routing::get(crate::api::metrics))
            .with_state(state_for_metrics);
        let running = listeners.started("metrics", format!("http://{}", scrape.local_addr()?));
        tokio::spawn(async move {
            let _running = running;
            if let Err(e) = axum::serve(scrape, router).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
    }
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.bind))?;
    let addr = listener.local_addr()?;
    println!(
        "urbis listening on {scheme}://{addr} ({} layers; catalog at {scheme}://{addr}/catalog); {coap}{scrape_at}",
        engine.layers().len()
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    serve_http(
        listener,
        app,
        Duration::from_secs(config.header_timeout_s),
        config.max_connections as usize,
        acceptor,
        shutdown_signal(),
    )
    .await;
    // The running minute's figures are kept too.
    let st = state_for_flush;
    let _ = tokio::task::spawn_blocking(move || {
        st.minutes.flush(|| sample(&st));
        if let Some(h) = &st.live {
            h.snapshot_now();
        }
    })
    .await;
    Ok(())
}

fn sample(
    st: &AppState,
) -> (
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
    bool,
) {
    crate::ops::minutes::sample(&st.engine, st.live.as_deref(), &st.listeners)
}
