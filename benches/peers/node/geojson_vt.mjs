// geojson-vt + vt-pbf on the same data and tiles as Urbis (benches/peers/tiles.sh).
// Usage: node geojson_vt.mjs DATA.geojson TILES.txt [ROUNDS]
// Prints the index build time, then per zoom the tiles per second of getTile + vt-pbf
// encoding on a fresh index each round (cold: geojson-vt splits tiles lazily on first
// request) and the tile size p50/p95.
import fs from 'node:fs';
import GeoJSONVT from 'geojson-vt';
import vtpbf from 'vt-pbf';

const [, , dataPath, tilesPath, roundsArg] = process.argv;
const rounds = Number(roundsArg || 3);
const data = JSON.parse(fs.readFileSync(dataPath, 'utf8'));
const tiles = fs.readFileSync(tilesPath, 'utf8').trim().split('\n').map((l) => l.split('/').map(Number));
const options = { maxZoom: 14, indexMaxZoom: 5, indexMaxPoints: 100000, tolerance: 3, extent: 4096, buffer: 64 };

let t0 = performance.now();
new GeoJSONVT(data, options);
console.log(`geojson-vt index build ${((performance.now() - t0) / 1000).toFixed(3)} s (not counted below)`);

for (const z of [...new Set(tiles.map((t) => t[0]))]) {
  const list = tiles.filter((t) => t[0] === z);
  let best = Infinity;
  let sizes = [];
  for (let r = 0; r < rounds; r++) {
    const index = new GeoJSONVT(data, options);
    sizes = [];
    t0 = performance.now();
    for (const [tz, tx, ty] of list) {
      const tile = index.getTile(tz, tx, ty);
      if (!tile || tile.features.length === 0) { sizes.push(0); continue; }
      const buf = vtpbf.fromGeojsonVt({ montevideo: tile }, { version: 2, extent: 4096 });
      sizes.push(buf.length);
    }
    best = Math.min(best, (performance.now() - t0) / 1000);
  }
  sizes.sort((a, b) => a - b);
  const pct = (p) => sizes[Math.round((sizes.length - 1) * p)];
  console.log(`geojson-vt z${z} tiles=${list.length} seconds=${best.toFixed(6)} tiles_per_s=${(list.length / best).toFixed(1)} p50=${pct(0.5)} p95=${pct(0.95)}`);
}
