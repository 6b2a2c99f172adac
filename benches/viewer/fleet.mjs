// A fleet in the viewer: DEVICES devices moving at RATE reports/s while the map at `/` shows
// them, in headless Debian Chromium (software WebGL, so a pessimistic "modest PC"). Measures
// per view (street zoom: the stream overlay; city zoom: live-tile clusters reloaded):
// frames per second, long tasks (> 50 ms on the main thread), and how long a report of a
// probe device takes to show at its new place. Run by benches/viewer/fleet.sh.
const { chromium } = await import(new URL('../../tests/browser/node_modules/playwright-core/index.mjs', import.meta.url));

const base = process.env.URBIS_URL;
const key = process.env.URBIS_KEY ?? 'ik_bench';
const DEVICES = Number(process.env.DEVICES ?? 5000);
const RATE = Number(process.env.RATE ?? 1000);
const SECONDS = Number(process.env.SECONDS_RUN ?? 15);
const BOX = [24.925, 60.155, 24.965, 60.175];
const CENTRE = [(BOX[0] + BOX[2]) / 2, (BOX[1] + BOX[3]) / 2];
const rnd = (a, b) => a + Math.random() * (b - a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function ingest(records) {
  const r = await fetch(`${base}/ingest`, {
    method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${key}` }, body: JSON.stringify(records),
  });
  if (!r.ok) throw new Error(`ingest: ${r.status} ${await r.text()}`);
}
const fix = (i, lon, lat) => ({ device: `dev-${i}`, lon, lat, t: Date.now() / 1000 });

// Everyone somewhere in central Helsinki first.
for (let i = 1; i < DEVICES; i += 1000) {
  await ingest(Array.from({ length: Math.min(1000, DEVICES - i) }, (_, k) => fix(i + k, rnd(BOX[0], BOX[2]), rnd(BOX[1], BOX[3]))));
}
await ingest([fix(0, ...CENTRE)]);

const context = await chromium.launchPersistentContext('', {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: true, viewport: { width: 1280, height: 800 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic'],
});
const page = await context.newPage();
page.on('pageerror', (e) => console.error('page error:', e.message));
await page.goto(`${base}/#key=${process.env.URBIS_API_KEY ?? ''}`);
await page.waitForFunction(() => window.urbis?.ready === true, null, { timeout: 90000 });
const idle = () => page.evaluate(() => new Promise((r) => { const m = window.urbis.map; if (m.loaded() && m.areTilesLoaded()) r(); else m.once('idle', r); }));

const rows = [];
for (const [name, zoom] of [['street z16 (overlay)', 16], ['city z13 (clusters)', 13]]) {
  await page.evaluate(([c, z]) => window.urbis.map.jumpTo({ center: c, zoom: z }), [CENTRE, zoom]);
  await idle();
  await page.evaluate(() => {
    const s = { frames: 0, long: [], run: true };
    window.__bench = s;
    const tick = () => { s.frames += 1; if (s.run) requestAnimationFrame(tick); };
    requestAnimationFrame(tick);
    s.obs = new PerformanceObserver((l) => { for (const e of l.getEntries()) s.long.push(e.duration); });
    s.obs.observe({ type: 'longtask' });
  });
  const started = Date.now();
  let sent = 0;
  const probes = [];
  let probeAt = started + 1000;
  while (Date.now() - started < SECONDS * 1000) {
    const tickStart = Date.now();
    const n = Math.round(RATE / 10);
    await ingest(Array.from({ length: n }, () => fix(1 + Math.floor(Math.random() * (DEVICES - 1)), rnd(BOX[0], BOX[2]), rnd(BOX[1], BOX[3]))));
    sent += n;
    if (zoom >= 15 && Date.now() >= probeAt) {
      probeAt += 1000;
      const to = [CENTRE[0] + rnd(-0.002, 0.002), CENTRE[1] + rnd(-0.001, 0.001)];
      const t0 = Date.now();
      await ingest([fix(0, ...to)]);
      const ms = await page.evaluate(async ([to, t0]) => {
        const { map, live } = window.urbis;
        for (;;) {
          const f = map.queryRenderedFeatures({ layers: live.deviceLayerIds() }).find((x) => x.properties.id === 'dev-0' && !x.state?.moved);
          if (f && Math.abs(f.geometry.coordinates[0] - to[0]) < 1e-6 && Math.abs(f.geometry.coordinates[1] - to[1]) < 1e-6) return Date.now() - t0;
          if (Date.now() - t0 > 10000) return null;
          await new Promise((r) => setTimeout(r, 10));
        }
      }, [to, t0]);
      probes.push(ms);
    }
    const wait = 100 - (Date.now() - tickStart);
    if (wait > 0) await sleep(wait);
  }
  const secs = (Date.now() - started) / 1000;
  const s = await page.evaluate(() => { const s = window.__bench; s.run = false; s.obs.disconnect(); return { frames: s.frames, long: s.long }; });
  const p = probes.filter((x) => x != null).sort((a, b) => a - b);
  rows.push({
    view: name,
    'reports/s': Math.round(sent / secs),
    fps: (s.frames / secs).toFixed(1),
    'long tasks': s.long.length,
    'long-task ms/s': Math.round(s.long.reduce((a, b) => a + b, 0) / secs),
    'longest ms': Math.round(Math.max(0, ...s.long)),
    'probe p50 ms': p.length ? p[Math.floor(p.length / 2)] : '-',
    'probe max ms': p.length ? p[p.length - 1] : '-',
    'probes missed': probes.length - p.length,
  });
}
const heap = await page.evaluate(() => performance.memory?.usedJSHeapSize ?? null);
console.table(rows);
console.log(`JS heap after both runs: ${(heap / 1048576).toFixed(1)} MiB`);
await context.close();
