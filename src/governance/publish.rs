//! Publishing a layer with its governance records, the one path of `urbis import` and the
//! admin upload: metadata checked before anything is written, the classification set before
//! the first version is visible (a restricted layer is never served as internal for a
//! moment), the import (validation, repair, quality report, atomic publish), then the
//! lineage of each published version and the metadata.

use super::meta::{self, Lineage};
use crate::import::{ImportError, ImportObserver, ImportOptions, ImportOutcome, import_file};
use crate::store::Store;
use crate::store::db::{Classification, Db, DbError, LayerPolicyMeta};

/// What to publish besides the file.
#[derive(Debug, Clone, Default)]
pub struct Governance {
    /// The layer's classification (default: keep the layer's, or internal for a new one).
    pub classification: Option<Classification>,
    /// Catalog metadata, `KEY=VALUE` pairs (see `meta::KEYS`).
    pub meta: Vec<(String, String)>,
    /// Who publishes (`cli:USER`, or an API key id): recorded in the lineage.
    pub principal: String,
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Bad metadata, naming the key.
    #[error("metadata {0}")]
    Meta(#[from] meta::MetaError),
    /// The import refused the file.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// The database.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Reading the file for its checksum.
    #[error("{0}")]
    Io(String),
}

/// Imports `opts.file` into `store` with its governance records; returns what was
/// published.
pub fn publish(
    store: &Store,
    opts: &ImportOptions,
    gov: &Governance,
    observer: &dyn ImportObserver,
) -> Result<Vec<ImportOutcome>, PublishError> {
    let db = Db::open(store.dir())?;
    // Checked on a scratch copy first: bad metadata refuses the import before it starts.
    meta::apply(
        &mut meta::CatalogMeta::default(),
        &mut LayerPolicyMeta::default(),
        &gov.meta,
    )?;
    let lineage = meta::lineage_of(&opts.file, &gov.principal)
        .map_err(|e| PublishError::Io(format!("{}: {e}", opts.file.display())))?;
    let classify = |layer: &str| -> Result<(), DbError> {
        if let Some(c) = gov.classification {
            let mut m = db.layer_meta(layer)?.unwrap_or_default();
            m.classification = c;
            db.set_layer_meta(layer, m)?;
        }
        Ok(())
    };
    if let Some(l) = &opts.layer {
        classify(l)?;
    }
    let outcomes = import_file(store, opts, observer)?;
    for o in &outcomes {
        classify(&o.layer)?;
        meta::set(&db, &o.layer, &gov.meta)?;
        meta::record_lineage(
            &db,
            &o.layer,
            o.version.version,
            &Lineage {
                time: o.version.created,
                ..lineage.clone()
            },
        )?;
    }
    Ok(outcomes)
}
