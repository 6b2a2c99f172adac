//! Layer files across the cluster: every server serves the version the `NAME_layers` bucket
//! names, fetched from the `NAME_files` object store.
//!
//! A version published on this server's store (by `urbis import`, the admin upload, a
//! rollback) is uploaded under its SHA-256 (once: a file the store holds already is not sent
//! again) and named in the bucket; a removed layer is deleted from it. Every server watches
//! the bucket: a version it holds among its kept ones is made current (a rollback), any other
//! is fetched into a staged file, checked against its SHA-256 and published like an import;
//! a deleted key removes the layer. Version numbers are each store's own: what is the same
//! everywhere is the file, so tiles are byte-identical. Only changes made on this server are
//! published (a layer that merely differs from the bucket, because this server has not caught
//! up, is not pushed back), and at start the bucket wins over what the store held, except for
//! layers the bucket does not name, which are published.

use super::{Cluster, ClusterError, js_err};
use crate::store::catalog::{Store, VersionEntry};
use async_nats::jetstream::kv::{Operation, Store as Kv};
use async_nats::jetstream::object_store::{ObjectMetadata, ObjectStore};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// What the bucket holds for a layer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Named {
    /// SHA-256 of the layer file, hex (its name in the object store).
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
    /// The version's catalog entry where it was published (its number is that store's).
    pub entry: VersionEntry,
}

/// The current version of each layer of a store: (version, file).
type Current = HashMap<String, (u64, String)>;

/// Starts replicating the layers of `store` through the cluster.
pub async fn start(cluster: &Cluster, store: Store) -> Result<(), ClusterError> {
    let (follow, history) = super::Follow::open(cluster, "layers").await?;
    let files = cluster
        .js()
        .get_object_store(cluster.bucket("files"))
        .await
        .map_err(|e| js_err("files object store", e))?;
    let mut r = Replicator {
        store,
        kv: follow.kv().clone(),
        files,
        seen: HashMap::new(),
        hashes: HashMap::new(),
    };
    // The bucket first (see `Follow::open`): layers removed while this server was away are
    // removed here, the others followed.
    let mut named: HashMap<String, Named> = HashMap::new();
    let mut deleted = Vec::new();
    for e in history {
        match e.operation {
            Operation::Put => {
                if let Ok(n) = serde_json::from_slice::<Named>(&e.value) {
                    named.insert(e.key, n);
                }
            }
            Operation::Delete | Operation::Purge => deleted.push(e.key),
        }
    }
    for layer in &deleted {
        if !named.contains_key(layer)
            && let Err(e) = r.forget(layer).await
        {
            tracing::warn!(layer, error = %e, "cannot remove a layer removed in the cluster");
        }
    }
    for (layer, n) in &named {
        if let Err(e) = r.follow(layer, n).await {
            tracing::warn!(layer, error = %e, "cannot fetch a layer of the cluster");
        }
    }
    let local = r
        .current()
        .await
        .ok_or_else(|| ClusterError::JetStream("cannot read the store's catalog".into()))?;
    for (layer, v) in &local {
        if !named.contains_key(layer)
            && let Err(e) = r.announce(layer, v).await
        {
            tracing::warn!(layer, error = %e, "cannot publish a layer to the cluster");
        }
    }
    r.seen = local;
    tokio::spawn(async move { r.run(follow).await });
    Ok(())
}

struct Replicator {
    store: Store,
    kv: Kv,
    files: ObjectStore,
    /// The store's current versions as last seen (or made by following the bucket).
    seen: Current,
    /// SHA-256 of local files, by (file, size).
    hashes: HashMap<(String, u64), String>,
}

impl Replicator {
    /// Follows the bucket and publishes local changes four times a second.
    async fn run(&mut self, mut follow: super::Follow) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                e = follow.next() => {
                    let outcome = match e.operation {
                        Operation::Put => match serde_json::from_slice::<Named>(&e.value) {
                            Ok(n) => self.follow(&e.key, &n).await,
                            Err(err) => Err(format!("bad entry: {err}")),
                        },
                        Operation::Delete | Operation::Purge => self.forget(&e.key).await,
                    };
                    if let Err(err) = outcome {
                        tracing::warn!(layer = %e.key, error = %err, "cannot follow the cluster's layer");
                    }
                }
                _ = tick.tick() => self.publish_local_changes().await,
            }
        }
    }

    /// The store's current versions; `None` when the catalog cannot be read (which must
    /// never read as "every layer removed": that would remove them from every server).
    async fn current(&self) -> Option<Current> {
        let store = self.store.clone();
        let read = tokio::task::spawn_blocking(move || store.catalog())
            .await
            .ok()?;
        match read {
            Ok(c) => Some(
                c.layers
                    .iter()
                    .filter_map(|(n, l)| {
                        l.current_entry()
                            .map(|v| (n.clone(), (v.version, v.file.clone())))
                    })
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the catalog; nothing published to the cluster until it can be");
                None
            }
        }
    }

    /// Publishes what changed on this store since it was last looked at.
    async fn publish_local_changes(&mut self) {
        let Some(now) = self.current().await else {
            return;
        };
        if now == self.seen {
            return;
        }
        // What could not be published stays as it was seen, to be tried again next time.
        let mut seen = now.clone();
        for (layer, v) in &now {
            if self.seen.get(layer) != Some(v)
                && let Err(e) = self.announce(layer, v).await
            {
                tracing::warn!(layer, error = %e, "cannot publish a layer to the cluster; trying again");
                match self.seen.get(layer) {
                    Some(old) => seen.insert(layer.clone(), old.clone()),
                    None => seen.remove(layer),
                };
            }
        }
        for (layer, v) in &self.seen {
            if !now.contains_key(layer)
                && let Err(e) = self.kv.delete(layer).await
            {
                tracing::warn!(layer, error = %e, "cannot remove a layer from the cluster; trying again");
                seen.insert(layer.clone(), v.clone());
            }
        }
        self.seen = seen;
    }

    async fn sha_of(&mut self, file: &str) -> Result<(String, u64), String> {
        let path = self.store.dir().join(file);
        let len = std::fs::metadata(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len();
        if let Some(h) = self.hashes.get(&(file.to_string(), len)) {
            return Ok((h.clone(), len));
        }
        let p = path.clone();
        let h = tokio::task::spawn_blocking(move || sha256_file(&p))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{}: {e}", path.display()))?;
        self.hashes.insert((file.to_string(), len), h.clone());
        Ok((h, len))
    }

    /// Uploads a local version (unless the object store has it) and names it in the bucket.
    async fn announce(
        &mut self,
        layer: &str,
        (version, file): &(u64, String),
    ) -> Result<(), String> {
        let (sha, bytes) = self.sha_of(file).await?;
        if let Ok(Some(v)) = self.kv.get(layer).await
            && serde_json::from_slice::<Named>(&v).is_ok_and(|n| n.sha256 == sha)
        {
            return Ok(()); // what the bucket names already (a version this server followed)
        }
        let entry = {
            let store = self.store.clone();
            let (l, ver) = (layer.to_string(), *version);
            tokio::task::spawn_blocking(move || {
                store.catalog().ok().and_then(|c| {
                    c.layers
                        .get(&l)
                        .and_then(|e| e.versions.iter().find(|v| v.version == ver).cloned())
                })
            })
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("version {version} is gone"))?
        };
        if self.files.info(&sha).await.is_err() {
            let path = self.store.dir().join(file);
            let mut f = tokio::fs::File::open(&path)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
            self.files
                .put(
                    ObjectMetadata {
                        name: sha.clone(),
                        description: Some(format!("layer {layer}")),
                        chunk_size: Some(512 * 1024),
                        ..Default::default()
                    },
                    &mut f,
                )
                .await
                .map_err(|e| format!("uploading {}: {e}", path.display()))?;
        }
        let named = Named {
            sha256: sha,
            bytes,
            entry,
        };
        let value = serde_json::to_vec(&named).map_err(|e| e.to_string())?;
        self.kv
            .put(layer, value.into())
            .await
            .map_err(|e| format!("naming it in the bucket: {e}"))?;
        tracing::info!(layer, version, "layer version published to the cluster");
        Ok(())
    }

    /// Makes the bucket's version of a layer current here: a kept version if it is one,
    /// else fetched and published.
    async fn follow(&mut self, layer: &str, n: &Named) -> Result<(), String> {
        let cat = {
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || store.catalog())
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?
        };
        let kept: Vec<(u64, String)> = cat
            .layers
            .get(layer)
            .map(|l| {
                let mut v: Vec<(u64, String)> = l
                    .versions
                    .iter()
                    .map(|v| (v.version, v.file.clone()))
                    .collect();
                // The current one first.
                v.sort_by_key(|(ver, _)| *ver != l.current);
                v
            })
            .unwrap_or_default();
        let current = cat
            .layers
            .get(layer)
            .and_then(|l| l.current_entry().map(|v| (v.version, v.file.clone())));
        for (i, (version, file)) in kept.iter().enumerate() {
            if self.sha_of(file).await.ok().map(|h| h.0).as_deref() != Some(n.sha256.as_str()) {
                continue;
            }
            if i == 0 && current.is_some() {
                self.seen
                    .insert(layer.to_string(), (*version, file.clone()));
                return Ok(()); // serving it already
            }
            let store = self.store.clone();
            let (l, ver) = (layer.to_string(), *version);
            tokio::task::spawn_blocking(move || store.rollback(&l, ver))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            self.seen
                .insert(layer.to_string(), (*version, file.clone()));
            tracing::info!(layer, version, "layer rolled to the cluster's version");
            return Ok(());
        }
        // Fetched into a staged file, checked, published.
        let mut object = self
            .files
            .get(&n.sha256)
            .await
            .map_err(|e| format!("fetching {}: {e}", n.sha256))?;
        let staged = self.store.stage().map_err(|e| e.to_string())?;
        let mut file = staged.file.try_clone().map_err(|e| e.to_string())?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let k = object
                .read(&mut buf)
                .await
                .map_err(|e| format!("fetching {}: {e}", n.sha256))?;
            if k == 0 {
                break;
            }
            hasher.update(&buf[..k]);
            file.write_all(&buf[..k]).map_err(|e| e.to_string())?;
            total += k as u64;
        }
        let got = crate::live::registry::hex(&hasher.finalize());
        if got != n.sha256 || total != n.bytes {
            return Err(format!(
                "the fetched file has SHA-256 {got} and {total} bytes, not {} and {}: not published",
                n.sha256, n.bytes
            ));
        }
        let store = self.store.clone();
        let (l, entry) = (layer.to_string(), n.entry.clone());
        let published = tokio::task::spawn_blocking(move || store.publish(staged, &l, entry))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        self.hashes
            .insert((published.file.clone(), total), n.sha256.clone());
        self.seen
            .insert(layer.to_string(), (published.version, published.file));
        tracing::info!(
            layer,
            version = published.version,
            bytes = total,
            "layer fetched from the cluster"
        );
        Ok(())
    }

    /// The layer left the bucket: removed here too.
    async fn forget(&mut self, layer: &str) -> Result<(), String> {
        self.seen.remove(layer);
        let store = self.store.clone();
        let l = layer.to_string();
        match tokio::task::spawn_blocking(move || store.remove(&l))
            .await
            .map_err(|e| e.to_string())?
        {
            Ok(_) => {
                tracing::info!(layer, "layer removed, as in the cluster");
                Ok(())
            }
            Err(crate::store::StoreError::UnknownLayer(_)) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(crate::live::registry::hex(&h.finalize()))
}
