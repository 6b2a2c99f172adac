//! `urbis export`: every tile the server would serve for some layers into one archive file,
//! or a layer's features into a GIS file.

use crate::StoreArg;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct ExportArgs {
    /// The layers: one, or several (comma-separated) for composite tiles.
    layers: String,
    /// The file to write, its extension its format: out.mbtiles (MBTiles 1.3), out.pmtiles
    /// (PMTiles v3) for tiles; out.fgb (FlatGeobuf), out.gpkg (GeoPackage) or out.geojson for
    /// one layer's features at full resolution with every property.
    #[arg(long)]
    to: PathBuf,
    /// Lowest zoom [default: the layers' lowest].
    #[arg(long)]
    minzoom: Option<u8>,
    /// Highest zoom [default: the layers' highest].
    #[arg(long)]
    maxzoom: Option<u8>,
    /// Only the tiles that meet WEST,SOUTH,EAST,NORTH (degrees).
    #[arg(long)]
    bbox: Option<String>,
    #[command(flatten)]
    store: StoreArg,
    /// Tile byte budget in KiB, as the server's --tile-budget-kb.
    #[arg(long, default_value_t = 500)]
    tile_budget_kb: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// `urbis export`.
pub fn export(a: ExportArgs) -> anyhow::Result<()> {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    use urbis::engine::{Engine, EngineConfig};
    let bbox = match &a.bbox {
        None => None,
        Some(b) => {
            let v: Vec<f64> = b.split(',').filter_map(|x| x.trim().parse().ok()).collect();
            let [w, s, e, n] = v[..] else {
                anyhow::bail!("--bbox {b:?}: give WEST,SOUTH,EAST,NORTH in degrees");
            };
            Some([w, s, e, n])
        }
    };
    let store = urbis::store::Store::open(&a.store.store, false)?;
    // The server's tiles, without its cache: each tile is made once.
    let engine = Engine::open(
        store,
        EngineConfig {
            budget: a.tile_budget_kb.clamp(16, 65_536) * 1024,
            cache_bytes: 0,
            ..EngineConfig::default()
        },
    )?;
    let opts = urbis::export::ExportOptions {
        layers: a.layers.split(',').map(|l| l.trim().to_string()).collect(),
        minzoom: a.minzoom,
        maxzoom: a.maxzoom,
        bbox,
    };
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "export {msg} [{bar:30}] {pos}/{len} tiles {elapsed_precise} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(a.layers.clone());
    let started = std::time::Instant::now();
    let summary = urbis::export::export(&engine, &opts, &a.to, &|done, total| {
        if done % 64 == 0 || done == total {
            bar.set_length(total);
            bar.set_position(done);
        }
    });
    bar.finish_and_clear();
    let summary = summary?;
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else if summary.tiles == 0 && summary.features > 0 {
        println!(
            "exported {} features of {} to {} in {:.1} s",
            summary.features,
            a.layers,
            a.to.display(),
            started.elapsed().as_secs_f64()
        );
    } else {
        println!(
            "exported {} tiles ({} empty left out, {:.1} MB) of {} at z{}-{} to {} in {:.1} s",
            summary.tiles,
            summary.empty,
            summary.bytes as f64 / 1e6,
            a.layers,
            summary.minzoom,
            summary.maxzoom,
            a.to.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
