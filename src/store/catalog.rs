//! The store directory and its catalog: which layers exist, which version of each is current.
//!
//! Layout of a store directory:
//!
//! ```text
//! catalog.json           {"format":1,"layers":{NAME:{"current":V,"versions":[...]}}}
//! NAME.vV.urbis          one immutable layer file per published version
//! store.lock             held (flock) while the catalog changes
//! ```
//!
//! Publishing is atomic: the layer file is written to an unnamed temporary file (`O_TMPFILE`)
//! in the store directory, fsynced, and linked under its final name; the catalog is rewritten
//! to a temporary name, fsynced and renamed over `catalog.json`; then the directory is fsynced.
//! A process killed before the link leaves nothing behind. Where the file system has no
//! `O_TMPFILE`, a named `.staging-PID-N.tmp` file is used instead and swept by the next
//! publish once its process is gone. Version numbers are assigned under the lock, so two
//! imports of one layer at once both publish, one after the other. The last
//! [`KEEP_VERSIONS`] versions of a layer are kept for rollback (`urbis import --keep-versions`
//! sets another count); older files are deleted.

use super::StoreError;
use super::reader::LayerReader;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Versions of a layer kept on disk.
pub const KEEP_VERSIONS: usize = 3;
const CATALOG: &str = "catalog.json";
const LOCK: &str = "store.lock";

/// The catalog file's content.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Catalog {
    /// Catalog format version (1).
    pub format: u32,
    /// Layers by name.
    pub layers: BTreeMap<String, LayerEntry>,
}

/// One layer in the catalog.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LayerEntry {
    /// The version served.
    pub current: u64,
    /// The versions on disk, oldest first.
    pub versions: Vec<VersionEntry>,
}

impl LayerEntry {
    /// The entry of the current version.
    pub fn current_entry(&self) -> Option<&VersionEntry> {
        self.versions.iter().find(|v| v.version == self.current)
    }
}

/// One published version of a layer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct VersionEntry {
    /// Version number, from 1.
    pub version: u64,
    /// File name inside the store directory.
    pub file: String,
    /// Seconds since the Unix epoch at publication.
    pub created: u64,
    /// Features in the layer.
    pub features: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// Lowest zoom.
    pub minzoom: u8,
    /// Full-resolution zoom.
    pub maxzoom: u8,
    /// `[west, south, east, north]` in degrees.
    pub bounds: [f64; 4],
    /// The source file name.
    pub source: String,
}

/// A layer file being written, not yet visible in the store.
#[derive(Debug)]
pub struct StagedFile {
    /// The open file to write the layer into.
    pub file: File,
    named: Option<PathBuf>,
}

impl StagedFile {
    /// A new unnamed file in `dir` (`O_TMPFILE`: it vanishes with the last handle, even when
    /// the process is killed); where the file system has none, a named `.staging-PID-N.tmp`
    /// file, removed on drop and swept by a later publish once its process is gone.
    pub fn create_in(dir: &Path) -> Result<StagedFile, StoreError> {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
        match rustix::fs::open(dir, flags, Mode::from_raw_mode(0o644)) {
            Ok(fd) => Ok(StagedFile {
                file: File::from(fd),
                named: None,
            }),
            Err(_) => {
                static SEQ: AtomicU64 = AtomicU64::new(0);
                let name = format!(
                    ".staging-{}-{}.tmp",
                    std::process::id(),
                    SEQ.fetch_add(1, Ordering::Relaxed)
                );
                let path = dir.join(name);
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| StoreError::io(&path, e))?;
                Ok(StagedFile {
                    file,
                    named: Some(path),
                })
            }
        }
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if let Some(p) = self.named.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// A store directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    keep_versions: usize,
}

/// True for names usable as layer names (and so as file names and URL segments).
pub fn valid_layer_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Store {
    /// Opens a store directory, creating it when `create` is set.
    pub fn open(dir: impl AsRef<Path>, create: bool) -> Result<Store, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        if create {
            fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        } else if !dir.is_dir() {
            return Err(StoreError::io(
                &dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "store directory not found"),
            ));
        }
        Ok(Store {
            dir,
            keep_versions: KEEP_VERSIONS,
        })
    }

    /// Keeps the last `n` versions of a layer when publishing (at least 1; by default
    /// [`KEEP_VERSIONS`]); older files are deleted by the next publish.
    pub fn with_keep_versions(mut self, n: usize) -> Store {
        self.keep_versions = n.max(1);
        self
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the catalog; a store without one is empty.
    pub fn catalog(&self) -> Result<Catalog, StoreError> {
        let path = self.dir.join(CATALOG);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Catalog {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Catalog {
                format: 1,
                layers: BTreeMap::new(),
            }),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    /// The path of a layer's current file.
    pub fn current_path(&self, name: &str) -> Result<PathBuf, StoreError> {
        let cat = self.catalog()?;
        let entry = cat
            .layers
            .get(name)
            .ok_or_else(|| StoreError::UnknownLayer(name.to_string()))?;
        let v = entry
            .current_entry()
            .ok_or_else(|| StoreError::UnknownLayer(name.to_string()))?;
        Ok(self.dir.join(&v.file))
    }

    /// Opens a layer's current version.
    pub fn open_layer(&self, name: &str) -> Result<LayerReader, StoreError> {
        LayerReader::open(self.current_path(name)?)
    }

    /// A new file to write a layer into, invisible until [`Store::publish`].
    pub fn stage(&self) -> Result<StagedFile, StoreError> {
        StagedFile::create_in(&self.dir)
    }

    fn lock(&self) -> Result<File, StoreError> {
        let path = self.dir.join(LOCK);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        f.lock().map_err(|e| StoreError::io(&path, e))?;
        Ok(f)
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io(&self.dir, e))
    }

    fn write_catalog(&self, cat: &Catalog) -> Result<(), StoreError> {
        let tmp = self
            .dir
            .join(format!(".catalog-{}.tmp", std::process::id()));
        let path = self.dir.join(CATALOG);
        let mut f = File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
        let bytes = serde_json::to_vec_pretty(cat).map_err(|e| StoreError::Catalog {
            path: path.clone(),
            message: e.to_string(),
        })?;
        f.write_all(&bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| StoreError::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| StoreError::io(&path, e))?;
        self.sync_dir()
    }

    /// Removes staging files (and the API's `.download-` files) left by processes that no
    /// longer run.
    fn sweep_stale(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix(".staging-")
                .or_else(|| name.strip_prefix(".catalog-"))
                .or_else(|| name.strip_prefix(".download-"))
                .and_then(|r| r.split(['-', '.']).next())
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid
                && pid != std::process::id()
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// Makes a fully written and fsynced staged file the current version of layer `name`.
    /// `entry` describes it; its `version`, `file` and `created` are filled in here.
    pub fn publish(
        &self,
        staged: StagedFile,
        name: &str,
        mut entry: VersionEntry,
    ) -> Result<VersionEntry, StoreError> {
        if !valid_layer_name(name) {
            return Err(StoreError::InvalidName(name.to_string()));
        }
        let mut staged = staged;
        staged
            .file
            .sync_all()
            .map_err(|e| StoreError::io(&self.dir, e))?;
        let _lock = self.lock()?;
        self.sweep_stale();
        let mut cat = self.catalog()?;
        cat.format = 1;
        let layer = cat.layers.entry(name.to_string()).or_default();
        let version = layer
            .versions
            .iter()
            .map(|v| v.version)
            .max()
            .unwrap_or(0)
            .max(layer.current)
            + 1;
        let file_name = format!("{name}.v{version}.urbis");
        let dest = self.dir.join(&file_name);
        match staged.named.take() {
            Some(tmp) => fs::rename(&tmp, &dest).map_err(|e| StoreError::io(&dest, e))?,
            None => {
                use std::os::fd::AsRawFd;
                let proc_path = format!("/proc/self/fd/{}", staged.file.as_raw_fd());
                rustix::fs::linkat(
                    rustix::fs::CWD,
                    proc_path.as_str(),
                    rustix::fs::CWD,
                    &dest,
                    rustix::fs::AtFlags::SYMLINK_FOLLOW,
                )
                .map_err(|e| StoreError::io(&dest, e.into()))?;
            }
        }
        entry.version = version;
        entry.file = file_name;
        entry.created = now();
        layer.versions.push(entry.clone());
        layer.current = version;
        let mut removed = Vec::new();
        while layer.versions.len() > self.keep_versions {
            removed.push(layer.versions.remove(0).file);
        }
        self.write_catalog(&cat)?;
        for f in removed {
            let _ = fs::remove_file(self.dir.join(f));
        }
        Ok(entry)
    }

    /// Makes `version` (one of the kept ones) the current version of layer `name`, atomically
    /// (the catalog is rewritten under the lock, like a publish): servers serve it within a
    /// second, and since cache entries name the version they were made from, no tile of the
    /// version it replaces is served after. The next import is numbered after the newest kept
    /// version.
    pub fn rollback(&self, name: &str, version: u64) -> Result<VersionEntry, StoreError> {
        let _lock = self.lock()?;
        let mut cat = self.catalog()?;
        let layer = cat
            .layers
            .get_mut(name)
            .ok_or_else(|| StoreError::UnknownLayer(name.to_string()))?;
        let Some(entry) = layer
            .versions
            .iter()
            .find(|v| v.version == version)
            .cloned()
        else {
            return Err(StoreError::UnknownVersion {
                layer: name.to_string(),
                version,
                kept: layer
                    .versions
                    .iter()
                    .map(|v| format!("v{}", v.version))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        layer.current = version;
        self.write_catalog(&cat)?;
        Ok(entry)
    }

    /// Deletes the versions of layer `name` published before `before` (seconds since 1970),
    /// never the current one; returns them.
    pub fn expire_versions(
        &self,
        name: &str,
        before: u64,
    ) -> Result<Vec<VersionEntry>, StoreError> {
        let _lock = self.lock()?;
        let mut cat = self.catalog()?;
        let Some(layer) = cat.layers.get_mut(name) else {
            return Ok(Vec::new());
        };
        let current = layer.current;
        let (gone, kept): (Vec<VersionEntry>, Vec<VersionEntry>) = layer
            .versions
            .drain(..)
            .partition(|v| v.version != current && v.created < before);
        layer.versions = kept;
        if gone.is_empty() {
            return Ok(gone);
        }
        self.write_catalog(&cat)?;
        for v in &gone {
            let _ = fs::remove_file(self.dir.join(&v.file));
        }
        Ok(gone)
    }

    /// Removes a layer and all its files.
    pub fn remove(&self, name: &str) -> Result<LayerEntry, StoreError> {
        let _lock = self.lock()?;
        let mut cat = self.catalog()?;
        let entry = cat
            .layers
            .remove(name)
            .ok_or_else(|| StoreError::UnknownLayer(name.to_string()))?;
        self.write_catalog(&cat)?;
        for v in &entry.versions {
            let _ = fs::remove_file(self.dir.join(&v.file));
        }
        Ok(entry)
    }
}
