//! Cold tile generation timer for `benches/peers/tiles.sh`: renders a list of tiles from one
//! layer of a store with no cache (every tile made from the memory map, one after another on
//! one thread), and prints per zoom the tiles per second and the raw tile size p50/p95.
//!
//! Usage: `cargo run --release --example render_tiles -- STORE LAYER TILES.txt [ROUNDS]`
//! where TILES.txt holds one `z/x/y` a line.

use std::time::Instant;
use urbis::engine::render_layer;
use urbis::store::Store;
use urbis::tile::TileId;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 4,
        "usage: render_tiles STORE LAYER TILES.txt [ROUNDS]"
    );
    let store = Store::open(&args[1], false)?;
    let version = store
        .catalog()?
        .layers
        .get(&args[2])
        .map(|l| l.current)
        .unwrap_or(0);
    let layer = urbis::engine::ServedLayer {
        name: args[2].clone(),
        version,
        reader: store.open_layer(&args[2])?,
    };
    let rounds: usize = args.get(4).map(|r| r.parse()).transpose()?.unwrap_or(3);
    let mut tiles: Vec<TileId> = Vec::new();
    for line in std::fs::read_to_string(&args[3])?
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let v: Vec<u64> = line
            .trim()
            .split('/')
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        anyhow::ensure!(v.len() == 3, "bad tile line {line:?}");
        tiles.push(TileId::new(v[0] as u32, v[1], v[2])?);
    }
    let mut zooms: Vec<u8> = tiles.iter().map(|t| t.z).collect();
    zooms.sort_unstable();
    zooms.dedup();
    for z in zooms {
        let list: Vec<TileId> = tiles.iter().copied().filter(|t| t.z == z).collect();
        let mut best = f64::MAX;
        let mut sizes = Vec::new();
        for _ in 0..rounds {
            sizes.clear();
            let start = Instant::now();
            for t in &list {
                let e = render_layer(&layer, *t, 64, Some(500 * 1024));
                sizes.push(if e.features > 0 { e.bytes.len() } else { 0 });
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        sizes.sort_unstable();
        let pct = |p: f64| sizes[((sizes.len() - 1) as f64 * p).round() as usize];
        println!(
            "urbis z{z} tiles={} seconds={best:.6} tiles_per_s={:.1} p50={} p95={}",
            list.len(),
            list.len() as f64 / best,
            pct(0.5),
            pct(0.95)
        );
    }
    Ok(())
}
