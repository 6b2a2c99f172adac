// Reads a PMTiles archive with the `pmtiles` npm package (the reference JavaScript reader, the
// one MapLibre's pmtiles protocol uses): run by tests/export.rs with
//   node pmtiles.mjs ARCHIVE LIST
// where LIST has a line `z x y sha256` per tile (the SHA-256 of the tile's MVT bytes, as the
// server serves them but unzipped: the reader unzips what the archive gzipped). Prints one JSON line: the header's type, compression, zooms and
// clustering, how many listed tiles the archive returns with the same bytes, and the layer
// named in its metadata.

import { PMTiles } from 'pmtiles';
import { open, readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';

const [archive, list] = process.argv.slice(2);
const fd = await open(archive, 'r');
// A Source over a local file (the package ships sources for fetch and the browser's File).
const source = {
  getKey: () => archive,
  getBytes: async (offset, length) => {
    const buf = Buffer.alloc(length);
    const { bytesRead } = await fd.read(buf, 0, length, offset);
    const data = buf.buffer.slice(buf.byteOffset, buf.byteOffset + bytesRead);
    return { data };
  },
};
const p = new PMTiles(source);
const h = await p.getHeader();
const meta = await p.getMetadata();
const sha = (bytes) => createHash('sha256').update(Buffer.from(bytes)).digest('hex');
let same = 0;
let listed = 0;
for (const line of (await readFile(list, 'utf8')).split('\n')) {
  if (!line.trim()) continue;
  const [z, x, y, want] = line.split(' ');
  listed += 1;
  const t = await p.getZxy(Number(z), Number(x), Number(y));
  if (t && sha(t.data) === want) same += 1;
}
await fd.close();
console.log(JSON.stringify({
  type: h.tileType, compression: h.tileCompression, clustered: h.clustered,
  min: h.minZoom, max: h.maxZoom, listed, same, layer: meta?.vector_layers?.[0]?.id,
}));
