//! The tile generator: `(layers, z, x, y)` → tile bytes, from the memory-mapped layer files
//! and the live layers, with a bounded cache keyed by layer version.
//!
//! Depends on `store`, `tile` and (to draw live layers) `live`; knows nothing of HTTP. A tile
//! request names one layer or several (a composite tile). Each name resolves to a
//! [`TileSource`]: a layer file version ([`ServedLayer`], drawn by [`render_layer`]: the level
//! of detail built for the zoom, the R-tree query of the tile grown by the buffer, an integer
//! shift into tile coordinates, clipping, encoding) or a live layer ([`LiveLayer`]). The
//! composer gives each source an equal share of the byte budget and concatenates the parts
//! (MVT allows a tile to be several layer messages one after another), so a composite tile
//! never exceeds the budget, whatever its sources. Parts of layer files are cached under their
//! versions; live parts are cached by the live room, which drops exactly the tiles a moving
//! device touches. New layer versions published by `urbis import` are picked up by
//! [`Engine::refresh`] (the server calls it every second); a cache entry names the layer
//! versions it was made from, so it never serves a replaced version.

mod render;
mod source;

pub use render::{render_layer, render_layer_as};
pub use source::{LiveLayer, TileSource};

use crate::live::Hub;
use crate::store::{LayerReader, Store, StoreError};
use crate::tile::{LayerView, TileBody, TileId};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

/// Tuning of tile generation.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Tile buffer in tile units (of 4096).
    pub buffer: u32,
    /// Byte budget per tile (raw, before gzip).
    pub budget: usize,
    /// Cache size limit in bytes (0 disables the cache).
    pub cache_bytes: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            buffer: 64,
            budget: 500 * 1024,
            cache_bytes: 256 << 20,
        }
    }
}

/// A layer the engine serves: one version of it.
#[derive(Debug)]
pub struct ServedLayer {
    /// Layer name.
    pub name: String,
    /// Version served.
    pub version: u64,
    /// The open file.
    pub reader: LayerReader,
}

/// A tile archive the engine serves as a layer: one version of it (see
/// [`crate::store::archive`]).
#[derive(Debug)]
pub struct ServedArchive {
    /// Layer name.
    pub name: String,
    /// Version served.
    pub version: u64,
    /// The open archive.
    pub archive: crate::store::archive::TileArchive,
}

/// Errors of tile generation.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No such layer.
    #[error("no layer named '{0}'")]
    UnknownLayer(String),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TileKey {
    /// The layers, versions and views, in the order of the request.
    layers: Vec<(String, u64, LayerView)>,
    tile: TileId,
    gzip: bool,
    /// The byte budget of each layer's part.
    budget: usize,
}

/// The tile generator and its cache.
pub struct Engine {
    store: Store,
    config: EngineConfig,
    layers: RwLock<Arc<BTreeMap<String, Arc<ServedLayer>>>>,
    archives: RwLock<Arc<BTreeMap<String, Arc<ServedArchive>>>>,
    catalog_stamp: Mutex<Option<SystemTime>>,
    cache: moka::sync::Cache<TileKey, Arc<TileBody>>,
    /// Cache entries evicted for room (not replaced or invalidated).
    evictions: Arc<std::sync::atomic::AtomicU64>,
    live: Option<Arc<Hub>>,
    observer: std::sync::OnceLock<Arc<dyn TileObserver>>,
    /// See [`Engine::refreshed_at`].
    refreshed: std::sync::atomic::AtomicU64,
    /// Layers of the catalog whose current version could not be opened, with why.
    unserved: Mutex<BTreeMap<String, String>>,
}

/// What the engine tells the operations room as it works (metrics); every method has a
/// default that does nothing. Set once with [`Engine::observe`]. Called on the tile path:
/// quick, never blocking.
pub trait TileObserver: Send + Sync {
    /// A layer's part of a tile was made: at zoom `z`, in `seconds`, `bytes` long (as sent:
    /// gzip-compressed when asked), with
    /// `dropped` features left out by the byte budget.
    fn tile_made(&self, _layer: &str, _z: u8, _seconds: f64, _bytes: usize, _dropped: usize) {}
    /// A request was answered from the cache (`hit`) or not.
    fn cache_lookup(&self, _hit: bool) {}
}

/// The tile cache's figures now.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheStats {
    /// Tiles held.
    pub entries: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Entries evicted for room since the start.
    pub evictions: u64,
}

impl Engine {
    /// The store it serves.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Opens the current version of every layer of `store`.
    pub fn open(store: Store, config: EngineConfig) -> Result<Engine, EngineError> {
        let evictions = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = Arc::clone(&evictions);
        let cache = moka::sync::Cache::builder()
            .max_capacity(config.cache_bytes)
            .weigher(|_k: &TileKey, v: &Arc<TileBody>| {
                v.bytes.len().try_into().unwrap_or(u32::MAX).max(1)
            })
            .eviction_listener(move |_k, _v, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
            .build();
        let engine = Engine {
            store,
            config,
            layers: RwLock::new(Arc::new(BTreeMap::new())),
            archives: RwLock::new(Arc::new(BTreeMap::new())),
            catalog_stamp: Mutex::new(None),
            cache,
            evictions,
            live: None,
            observer: std::sync::OnceLock::new(),
            refreshed: std::sync::atomic::AtomicU64::new(0),
            unserved: Mutex::new(BTreeMap::new()),
        };
        engine.refresh()?;
        Ok(engine)
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Sets who is told of tiles made and cache lookups (once; later calls are ignored).
    pub fn observe(&self, observer: Arc<dyn TileObserver>) {
        let _ = self.observer.set(observer);
    }

    /// The tile cache's figures now.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.run_pending_tasks();
        CacheStats {
            entries: self.cache.entry_count(),
            bytes: self.cache.weighted_size(),
            evictions: self.evictions.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Makes a source's part of a tile, telling the observer.
    fn made(&self, source: &Source, tile: TileId, budget: usize, gzip: bool) -> Arc<TileBody> {
        let started = std::time::Instant::now();
        let part = source
            .get()
            .part(tile, self.config.buffer, budget, gzip, source.view());
        if let Some(o) = self.observer.get() {
            o.tile_made(
                source.get().name(),
                tile.z,
                started.elapsed().as_secs_f64(),
                part.bytes.len(),
                part.dropped,
            );
        }
        part
    }

    /// The layers served now.
    pub fn layers(&self) -> Arc<BTreeMap<String, Arc<ServedLayer>>> {
        self.layers
            .read()
            .map(|l| Arc::clone(&l))
            .unwrap_or_default()
    }

    /// One served layer.
    pub fn layer(&self, name: &str) -> Option<Arc<ServedLayer>> {
        self.layers().get(name).cloned()
    }

    /// The tile archives served now, as layers.
    pub fn archives(&self) -> Arc<BTreeMap<String, Arc<ServedArchive>>> {
        self.archives
            .read()
            .map(|l| Arc::clone(&l))
            .unwrap_or_default()
    }

    /// True if `name` is served, as a layer file or a tile archive (not live).
    pub fn has_layer(&self, name: &str) -> bool {
        self.layers().contains_key(name) || self.archives().contains_key(name)
    }

    /// Re-reads the catalog when it changed and opens new layer versions; returns whether
    /// anything changed. Layers whose version did not change keep their open reader.
    pub fn refresh(&self) -> Result<bool, EngineError> {
        let r = self.refresh_inner();
        if r.is_ok() {
            self.refreshed.store(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        r
    }

    /// When the catalog was last read (or found unchanged) without error, seconds since the
    /// epoch; 0 before the first time.
    pub fn refreshed_at(&self) -> u64 {
        self.refreshed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Layers of the catalog whose current version could not be opened (corrupt, truncated,
    /// unreadable), with why; the version before is served when there was one.
    pub fn unserved(&self) -> BTreeMap<String, String> {
        self.unserved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn refresh_inner(&self) -> Result<bool, EngineError> {
        let path = self.store.dir().join("catalog.json");
        let stamp = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        {
            let mut last = self.catalog_stamp.lock().unwrap_or_else(|e| e.into_inner());
            if stamp.is_some() && *last == stamp {
                return Ok(false);
            }
            *last = stamp;
        }
        let catalog = self.store.catalog()?;
        let old = self.layers();
        let old_archives = self.archives();
        let mut next = BTreeMap::new();
        let mut archives = BTreeMap::new();
        let mut unserved = BTreeMap::new();
        for (name, entry) in &catalog.layers {
            let Some(v) = entry.current_entry() else {
                continue;
            };
            if let Some(l) = old.get(name).filter(|l| l.version == v.version) {
                next.insert(name.clone(), Arc::clone(l));
                continue;
            }
            if let Some(a) = old_archives.get(name).filter(|a| a.version == v.version) {
                archives.insert(name.clone(), Arc::clone(a));
                continue;
            }
            let path = self.store.dir().join(&v.file);
            if crate::store::archive::is_archive(&path) {
                match crate::store::archive::TileArchive::open(&path) {
                    Ok(archive) => {
                        archives.insert(
                            name.clone(),
                            Arc::new(ServedArchive {
                                name: name.clone(),
                                version: v.version,
                                archive,
                            }),
                        );
                    }
                    Err(e) => {
                        tracing::error!(layer = %name, error = %e, "cannot open the new archive version");
                        unserved.insert(name.clone(), format!("v{}: {e}", v.version));
                        if let Some(a) = old_archives.get(name) {
                            archives.insert(name.clone(), Arc::clone(a));
                        }
                    }
                }
                continue;
            }
            match LayerReader::open(path) {
                Ok(reader) => {
                    next.insert(
                        name.clone(),
                        Arc::new(ServedLayer {
                            name: name.clone(),
                            version: v.version,
                            reader,
                        }),
                    );
                }
                Err(e) => {
                    // Keep serving the old version rather than nothing.
                    tracing::error!(layer = %name, error = %e, "cannot open the new layer version");
                    unserved.insert(name.clone(), format!("v{}: {e}", v.version));
                    if let Some(l) = old.get(name) {
                        next.insert(name.clone(), Arc::clone(l));
                    }
                }
            }
        }
        let changed = next.len() != old.len()
            || next
                .iter()
                .any(|(k, v)| old.get(k).is_none_or(|o| o.version != v.version))
            || archives.len() != old_archives.len()
            || archives
                .iter()
                .any(|(k, v)| old_archives.get(k).is_none_or(|o| o.version != v.version));
        if let Ok(mut l) = self.layers.write() {
            *l = Arc::new(next);
        }
        if let Ok(mut a) = self.archives.write() {
            *a = Arc::new(archives);
        }
        *self.unserved.lock().unwrap_or_else(|e| e.into_inner()) = unserved;
        Ok(changed)
    }

    /// Serves the live layers of `hub` too: a tile request naming a live layer draws its
    /// devices (a live layer's name wins over a layer file's of the same name).
    pub fn with_live(mut self, hub: Arc<Hub>) -> Engine {
        self.live = Some(hub);
        self
    }

    /// The live hub, when live layers are served.
    pub fn live(&self) -> Option<&Arc<Hub>> {
        self.live.as_ref()
    }

    /// True if `name` is a live layer (no allocation: asked on every tile request).
    pub fn is_live_layer(&self, name: &str) -> bool {
        self.live.as_ref().is_some_and(|h| h.is_live_layer(name))
    }

    /// The sources of a request, in its order, each with its view.
    fn sources(&self, names: &[(&str, &LayerView)]) -> Result<Vec<Source>, EngineError> {
        let mut layers = self.layers();
        let mut out = Vec::with_capacity(names.len());
        for (name, view) in names {
            let view = (*view).clone();
            if let Some(hub) = self.live.as_ref().filter(|h| h.is_live_layer(name)) {
                out.push(Source::Live(
                    LiveLayer {
                        hub: Arc::clone(hub),
                        name: name.to_string(),
                    },
                    view,
                ));
                continue;
            }
            if let Some(l) = layers.get(*name) {
                out.push(Source::File(Arc::clone(l), view));
                continue;
            }
            if let Some(a) = self.archives().get(*name) {
                out.push(Source::Archive(Arc::clone(a), view));
                continue;
            }
            // Maybe it was published since the last poll.
            if self.refresh()? {
                layers = self.layers();
            }
            if let Some(l) = layers.get(*name) {
                out.push(Source::File(Arc::clone(l), view));
            } else if let Some(a) = self.archives().get(*name) {
                out.push(Source::Archive(Arc::clone(a), view));
            } else {
                return Err(EngineError::UnknownLayer(name.to_string()));
            }
        }
        Ok(out)
    }

    /// Every property of each named layer.
    fn all_of<'a>(names: &[&'a str]) -> Vec<(&'a str, &'static LayerView)> {
        names.iter().map(|n| (*n, &LayerView::ALL)).collect()
    }

    /// The budget of each part of a tile of `parts` layers.
    fn share(&self, parts: usize) -> usize {
        self.config.budget / parts.max(1)
    }

    /// A cached tile, if there is one (cheap: no generation).
    pub fn cached(
        &self,
        names: &[&str],
        tile: TileId,
        gzip: bool,
    ) -> Result<Option<Arc<TileBody>>, EngineError> {
        self.cached_as(&Self::all_of(names), tile, gzip)
    }

    /// A cached tile of layers seen through views, if there is one.
    pub fn cached_as(
        &self,
        layers: &[(&str, &LayerView)],
        tile: TileId,
        gzip: bool,
    ) -> Result<Option<Arc<TileBody>>, EngineError> {
        let sources = self.sources(layers)?;
        let share = self.share(sources.len());
        let hit = match sources.as_slice() {
            [Source::Live(l, view)] => l.hub.cached_tile(&l.name, tile, share, gzip, view),
            s => key(s, tile, gzip, share).and_then(|k| self.cache.get(&k)),
        };
        if let Some(o) = self.observer.get() {
            o.cache_lookup(hit.is_some());
        }
        Ok(hit)
    }

    /// The tile for `names` (one layer, or several for a composite) at `tile`, from the cache
    /// or generated, with every property.
    pub fn tile(
        &self,
        names: &[&str],
        tile: TileId,
        gzip: bool,
    ) -> Result<Arc<TileBody>, EngineError> {
        self.tile_as(&Self::all_of(names), tile, gzip)
    }

    /// The tile of layers each seen through its view (the properties it keeps): what a
    /// security rule allows. The views are part of the cache keys.
    pub fn tile_as(
        &self,
        layers: &[(&str, &LayerView)],
        tile: TileId,
        gzip: bool,
    ) -> Result<Arc<TileBody>, EngineError> {
        let sources = self.sources(layers)?;
        Ok(self.compose(&sources, tile, gzip))
    }

    /// Composes a tile from its sources: an equal share of the byte budget each, parts
    /// concatenated in the order asked. Tiles of layer files only are cached whole; in a tile
    /// with live layers, the layer files' parts are cached one by one and the live parts by
    /// the live room.
    fn compose(&self, sources: &[Source], tile: TileId, gzip: bool) -> Arc<TileBody> {
        let share = self.share(sources.len());
        let whole = key(sources, tile, gzip, share);
        if let Some(hit) = whole.as_ref().and_then(|k| self.cache.get(k)) {
            return hit;
        }
        let body = match sources {
            [one] => self.made(one, tile, share, gzip),
            _ => {
                let (mut raw, mut features, mut dropped) = (Vec::new(), 0, 0);
                for s in sources {
                    let part = match (whole.is_none(), s) {
                        // A layer file's part of a tile with live layers: cached on its own.
                        (true, Source::File(..) | Source::Archive(..)) => {
                            self.cached_part(s, tile, share)
                        }
                        _ => self.made(s, tile, share, false),
                    };
                    if part.features > 0 {
                        raw.extend_from_slice(&part.bytes);
                    }
                    features += part.features;
                    dropped += part.dropped;
                }
                Arc::new(TileBody::new(raw, gzip, features, dropped))
            }
        };
        if let Some(k) = whole {
            self.remember(k, &body);
        }
        body
    }

    /// One versioned source's raw part, from the cache or made and kept.
    fn cached_part(&self, source: &Source, tile: TileId, budget: usize) -> Arc<TileBody> {
        let k = key(std::slice::from_ref(source), tile, false, budget);
        if let Some(hit) = k.as_ref().and_then(|k| self.cache.get(k)) {
            return hit;
        }
        let part = self.made(source, tile, budget, false);
        if let Some(k) = k {
            self.remember(k, &part);
        }
        part
    }

    fn remember(&self, k: TileKey, body: &Arc<TileBody>) {
        if self.config.cache_bytes > 0 {
            self.cache.insert(k, Arc::clone(body));
        }
    }
}

/// A resolved layer of a request, with the view it is seen through.
enum Source {
    /// A layer file version.
    File(Arc<ServedLayer>, LayerView),
    /// A live layer.
    Live(LiveLayer, LayerView),
    /// A tile archive.
    Archive(Arc<ServedArchive>, LayerView),
}

impl Source {
    fn get(&self) -> &dyn TileSource {
        match self {
            Source::File(l, _) => l.as_ref(),
            Source::Live(l, _) => l,
            Source::Archive(a, _) => a.as_ref(),
        }
    }

    fn view(&self) -> &LayerView {
        match self {
            Source::File(_, v) | Source::Live(_, v) | Source::Archive(_, v) => v,
        }
    }
}

/// The cache key of a tile of `sources`, if every one of them is versioned.
fn key(sources: &[Source], tile: TileId, gzip: bool, budget: usize) -> Option<TileKey> {
    let layers = sources
        .iter()
        .map(|s| {
            let view = s.view().clone();
            let s = s.get();
            s.version().map(|v| (s.name().to_string(), v, view))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(TileKey {
        layers,
        tile,
        gzip,
        budget,
    })
}
