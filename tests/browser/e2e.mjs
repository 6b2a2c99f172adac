// End-to-end test of the web viewer (/) and the big screen (/ops) in Debian's Chromium,
// driven by Playwright. tests/browser.rs starts the server (with only the README's run
// command), registers devices, and runs this with:
//   URBIS_URL       the server, e.g. http://127.0.0.1:8080
//   URBIS_KEY       an ingest key (`urbis devices key`)
//   URBIS_API_KEY   an operator's API key (`urbis keys create --role operator`): the pages
//                   sign in with it (`#key=`); anonymous pages see the public layers only
//   URBIS_DEVICES   three device ids of one live layer, comma-separated
//   URBIS_LAYER     that live layer
//   URBIS_BIN       the urbis binary and URBIS_STORE its store, to register a device on a
//                   new layer and remove devices while the pages are open
//   URBIS_PID       the server's process id: the test kills it (-9) and starts the same
//                   command again (`urbis serve` in the store's folder), and stops that one
//   OUT_DIR         where the screenshots go
// Exits non-zero with the failed assertion. Every step prints what it measured.

import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

const base = process.env.URBIS_URL ?? 'http://127.0.0.1:8080';
const key = process.env.URBIS_KEY;
const apiKey = process.env.URBIS_API_KEY;
/** GET a JSON document of the API with the operator's key. */
const read = async (path) => (await fetch(base + path, { headers: { Authorization: `Bearer ${apiKey}` } })).json();
const devices = (process.env.URBIS_DEVICES ?? '').split(',').filter(Boolean);
const liveLayer = process.env.URBIS_LAYER;
const out = process.env.OUT_DIR ?? 'target/browser';
assert.ok(key && apiKey && devices.length >= 3 && liveLayer, 'URBIS_KEY, URBIS_API_KEY, URBIS_DEVICES (3+) and URBIS_LAYER are needed');
mkdirSync(out, { recursive: true });

const log = (...a) => console.log('[e2e]', ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A request with a JSON body: reports with the ingest key, the rest with the API key. */
async function api(method, path, body) {
  const r = await fetch(base + path, {
    method,
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${path === '/ingest' ? key : apiKey}` },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  assert.ok(r.ok, `${method} ${path}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Reports positions over HTTP; resolves once the server says they are durable. */
async function report(...fixes) {
  const t = Date.now() / 1000;
  const res = await api('POST', '/ingest', fixes.map(([device, lon, lat], i) => ({ device, lon, lat, t: t + i * 1e-3 })));
  assert.equal(res.accepted, fixes.length, JSON.stringify(res));
}

// Where the devices go: around Helsinki's Kauppatori, inside the demo data.
const P0 = [24.9520, 60.1675];
const P1 = [24.9535, 60.1680];
const FENCE = [[24.9550, 60.1665], [24.9580, 60.1665], [24.9580, 60.1685], [24.9550, 60.1685], [24.9550, 60.1665]];
const INSIDE = [24.9565, 60.1675];

// The headless flags the issue asks for; a fresh profile per run.
const profile = mkdtempSync(join(tmpdir(), 'urbis-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--disable-quic', '--no-first-run'],
  viewport: { width: 1280, height: 800 },
});

/** Console errors, page errors, failed and >= 400 requests of a page. */
function watch(page, name) {
  // `down`: the server is away on purpose; what fails meanwhile is counted, not an error.
  const w = { errors: [], failed: [], aborted: 0, closing: false, down: false, whileDown: 0 };
  const away = () => { if (w.down) w.whileDown += 1; return w.down; };
  page.on('console', (m) => { if (m.type() === 'error' && !away()) w.errors.push(`${name} console: ${m.text()}`); });
  page.on('pageerror', (e) => w.errors.push(`${name} page error: ${e.message}`));
  page.on('requestfailed', (r) => {
    if (w.closing || away()) return;
    const why = r.failure()?.errorText ?? '';
    // MapLibre cancels the tile requests of a view it has left: not a failure of the server.
    if (why === 'net::ERR_ABORTED' && r.url().includes('/tiles/')) { w.aborted += 1; return; }
    w.failed.push(`${name}: ${r.method()} ${r.url()} ${why}`);
  });
  page.on('response', (r) => { if (r.status() >= 400 && !away()) w.failed.push(`${name}: ${r.status()} ${r.url()}`); });
  return w;
}

function clean(w, name) {
  assert.deepEqual(w.errors, [], `${name}: console errors`);
  assert.deepEqual(w.failed, [], `${name}: failed requests`);
  log(`${name}: 0 console errors, 0 failed requests (${w.aborted} tile requests cancelled by map moves)`);
}

const idle = (page) => page.evaluate(() => new Promise((r) => {
  const m = window.urbis.map;
  if (m.loaded() && m.areTilesLoaded() && !m.isMoving()) r(); else m.once('idle', () => r());
}));

/** Visible device features with this id, as [lon, lat] (any live device layer; a tile's copy
 * of a device the overlay draws is there but transparent, by its `moved` feature state). */
const rendered = (page, id) => page.evaluate((id) => {
  const { map, live } = window.urbis;
  return map.queryRenderedFeatures({ layers: live.deviceLayerIds() })
    .filter((f) => f.properties.id === id && !f.state?.moved)
    .map((f) => ({ layer: f.layer.id, at: f.geometry.coordinates, state: f.properties.state }));
}, id);

/** `urbis serve` in the store's folder (the README's command); resolves once it listens. */
function startServer() {
  const child = spawn(process.env.URBIS_BIN, ['serve'], {
    cwd: dirname(process.env.URBIS_STORE), env: { ...process.env, URBIS_LOG: 'warn' }, stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error(`the restarted server did not listen: ${text}`)), 60000);
    child.stdout.on('data', (b) => {
      text += b;
      if (text.includes('http://')) { clearTimeout(timer); resolve(child); }
    });
    child.on('exit', (code) => reject(new Error(`the restarted server exited with ${code}: ${text}`)));
  });
}
let restarted = null;

/** Calls `f` until `done(value)` or `ms` have passed; resolves with the last value. */
async function poll(f, done, ms, every = 50) {
  const t0 = Date.now();
  for (;;) {
    const v = await f();
    if (done(v) || Date.now() - t0 >= ms) return v;
    await sleep(every);
  }
}

const near = (a, b, tol) => Math.abs(a[0] - b[0]) < tol && Math.abs(a[1] - b[1]) < tol;

/** `rendered` found the device once, at `at`. */
const drawnAt = (found, at) => found.length === 1 && near(found[0].at, at, 1e-6);

let failed = false;
try {
  // ---- Before the pages: the devices report where they are.
  const P2 = [P0[0] - 0.0004, P0[1] + 0.0002];
  await report([devices[0], ...P0], [devices[1], ...P0.map((x) => x + 0.0004)], [devices[2], ...P2]);
  const catalog = await read('/catalog');
  const names = catalog.layers.map((l) => l.name);
  assert.ok(names.includes(liveLayer), `${liveLayer} is in /catalog: ${names}`);

  // ---- 0. Signed out: the public demo layers only, and a sign-in form.
  const anon = await context.newPage();
  await anon.goto(`${base}/`);
  await anon.waitForFunction(() => window.urbis?.ready === true, null, { timeout: 90000 });
  const seen = await anon.evaluate(() => window.urbis.catalog.layers.map((l) => l.name));
  assert.ok(seen.length > 0 && !seen.includes(liveLayer), `anonymous sees public layers only: ${seen}`);
  assert.ok(await anon.$('form.signin input'), 'a sign-in form is offered');
  await anon.close();
  log(`signed out: ${seen.length} public layers, no ${liveLayer}`);

  // ---- 1. The viewer, signed in with the key in the fragment (never sent to the server).
  const page = await context.newPage();
  const w = watch(page, 'viewer');
  const t0 = Date.now();
  const csp = (await page.goto(`${base}/#key=${apiKey}`)).headers()['content-security-policy'] ?? '';
  assert.ok(!page.url().includes('key='), `the key left the address bar: ${page.url()}`);
  // Served under a strict policy (no inline or foreign script): the zero console errors
  // below also mean MapLibre and our code need nothing it forbids.
  assert.ok(csp.includes("script-src 'self'") && csp.includes("connect-src 'self'"), `CSP of /: ${csp}`);
  await page.waitForFunction(() => window.urbis?.ready === true, null, { timeout: 90000 });
  await idle(page);
  log(`viewer idle after ${Date.now() - t0} ms`);

  // Zoomed to the data: the view lies inside the catalog's bounds, and shows most of them.
  const view = await page.evaluate(() => window.urbis.map.getBounds().toArray().flat());
  const stat = catalog.layers.filter((l) => !l.live && l.bounds);
  const db = [Math.min(...stat.map((l) => l.bounds[0])), Math.min(...stat.map((l) => l.bounds[1])),
    Math.max(...stat.map((l) => l.bounds[2])), Math.max(...stat.map((l) => l.bounds[3]))];
  const cx = (view[0] + view[2]) / 2;
  const cy = (view[1] + view[3]) / 2;
  assert.ok(cx > db[0] && cx < db[2] && cy > db[1] && cy < db[3], `view ${view} centred on the data ${db}`);
  assert.ok(view[2] - view[0] >= (db[2] - db[0]) * 0.9, `view ${view} spans the data ${db}`);

  // Features from at least three demo layers are drawn.
  const byLayer = await page.evaluate(() => {
    const c = {};
    for (const f of window.urbis.map.queryRenderedFeatures()) {
      const l = f.layer.metadata?.['urbis:layer'] ?? f.sourceLayer;
      if (l) c[l] = (c[l] ?? 0) + 1;
    }
    return c;
  });
  log('rendered features by layer:', JSON.stringify(byLayer));
  const demo = Object.keys(byLayer).filter((l) => l.startsWith('helsinki'));
  assert.ok(demo.length >= 3, `features of >= 3 demo layers rendered, got ${demo}`);

  // A toggle per catalog layer; switching one off removes its features, on brings them back.
  const toggles = await page.$$eval('#layers input[type=checkbox]', (b) => b.map((x) => x.dataset.layer));
  for (const n of names) assert.ok(toggles.includes(n), `layer list has ${n}: ${toggles}`);
  const count = (l) => page.evaluate((l) => window.urbis.map.queryRenderedFeatures()
    .filter((f) => (f.layer.metadata?.['urbis:layer'] ?? f.sourceLayer) === l).length, l);
  const before = await count('helsinki_points');
  assert.ok(before > 0, 'points drawn');
  await page.click('#layers input[data-layer="helsinki_points"]');
  await idle(page);
  assert.equal(await count('helsinki_points'), 0, 'points hidden by their toggle');
  await page.click('#layers input[data-layer="helsinki_points"]');
  await idle(page);
  assert.equal(await count('helsinki_points'), before, 'points back');

  // Attribution from the catalog is on the map.
  const attribution = await page.textContent('.maplibregl-ctrl-attrib');
  assert.match(attribution, /OpenStreetMap/, `attribution: ${attribution}`);

  // A click on a point of interest opens a popup with its properties.
  await page.evaluate(() => window.urbis.map.jumpTo({ center: [24.9440, 60.1690], zoom: 16 }));
  await idle(page);
  const poi = await page.evaluate(() => {
    const { map } = window.urbis;
    const fs = map.queryRenderedFeatures({ layers: ['pois'] });
    // A point the panel and the controls do not cover (the order of rendered features
    // follows the layer file's order, which says nothing about where they are on screen).
    const panel = document.getElementById('panel')?.getBoundingClientRect();
    const canvas = map.getCanvas().getBoundingClientRect();
    const clear = (p) => p.x > 60 && p.y > 60 && p.x < canvas.width - 60 && p.y < canvas.height - 60
      && !(panel && p.x < panel.right + 20 && p.y < panel.bottom + 20);
    const f = fs.find((x) => Object.keys(x.properties).length >= 2 && clear(map.project(x.geometry.coordinates)));
    if (!f) return null;
    const p = map.project(f.geometry.coordinates);
    // The popup shows the topmost feature there (another layer may draw the same point).
    const top = map.queryRenderedFeatures(p).find((x) => x.layer.type !== 'background');
    return { x: p.x, y: p.y, props: top.properties };
  });
  assert.ok(poi, 'a point of interest to click');
  await page.mouse.click(poi.x, poi.y);
  const popup = await page.waitForSelector('.maplibregl-popup-content table.props', { timeout: 5000 });
  const popupText = await popup.textContent();
  const shown = Object.entries(poi.props).filter(([k, v]) => popupText.includes(k) && popupText.includes(String(v)));
  assert.ok(shown.length >= 2, `popup shows the feature's properties: ${popupText}`);
  log(`popup shows ${shown.length} properties of the clicked point`);
  await page.keyboard.press('Escape');

  // ---- 2. Live: a reported position moves the marker within 2 s, without a reload.
  await page.evaluate((c) => window.urbis.map.jumpTo({ center: c, zoom: 17 }), P0);
  await idle(page);
  let at = await rendered(page, devices[0]);
  assert.equal(at.length, 1, `${devices[0]} drawn once at first: ${JSON.stringify(at)}`);
  assert.ok(near(at[0].at, P0, 1e-5), `${devices[0]} at ${P0}: ${JSON.stringify(at)}`);
  const tiles0 = await page.evaluate(() => performance.getEntriesByType('resource').filter((e) => e.name.includes('/tiles/')).length);
  for (const [i, to] of [P1, P0, P1].entries()) {
    const sent = Date.now();
    await report([devices[0], ...to]);
    const now = await poll(() => rendered(page, devices[0]), (n) => drawnAt(n, to), 2000, 25);
    const ms = Date.now() - sent;
    assert.ok(drawnAt(now, to), `move ${i + 1}: ${devices[0]} drawn once at ${to} within 2 s, got ${JSON.stringify(now)}`);
    const [moved] = now;
    log(`move ${i + 1}: marker at the new position ${ms} ms after the report was sent (layer ${moved.layer}, state ${moved.state})`);
  }
  const tiles1 = await page.evaluate(() => performance.getEntriesByType('resource').filter((e) => e.name.includes('/tiles/')).length);
  assert.equal(tiles1, tiles0, 'the marker moved without loading tiles');

  // A geofence event flashes the fence.
  await api('POST', '/geofences', { type: 'Feature', id: 'harbour', properties: { name: 'Harbour', layers: [liveLayer] }, geometry: { type: 'Polygon', coordinates: [FENCE] } });
  await page.waitForFunction(() => window.urbis.map.querySourceFeatures('urbis:geofences').length > 0, null, { timeout: 5000 });
  await report([devices[0], ...INSIDE]);
  await page.waitForFunction(() => window.urbis.map.getFeatureState({ source: 'urbis:geofences', id: 'harbour' }).flash === true, null, { timeout: 2000, polling: 50 });
  log('geofence enter: the fence flashes');

  // A device on a layer registered after the page loaded: the stream names the layer, the
  // page reads it from /catalog, lists it and draws the device, without a reload.
  const lateLayer = `${liveLayer}-late`;
  execFileSync(process.env.URBIS_BIN, ['devices', 'add', 'late-1', '--layer', lateLayer, '--kind', 'sensor',
    '--interval', '1h', '--store', process.env.URBIS_STORE], { stdio: ['ignore', 'ignore', 'inherit'] });
  const LATE = [P0[0] - 0.0006, P0[1] - 0.0002];
  const registered = Date.now();
  for (;;) {
    const r = await fetch(`${base}/ingest`, {
      method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${key}` },
      body: JSON.stringify([{ device: 'late-1', lon: LATE[0], lat: LATE[1], t: Date.now() / 1000 }]),
    });
    const res = await r.json();
    if (r.ok && res.accepted === 1) break;
    // Until the server has read the registry (within a second) the device is unknown.
    assert.ok(Date.now() - registered < 5000, `late-1 never accepted: ${r.status} ${JSON.stringify(res)}`);
    await sleep(100);
  }
  const lateSent = Date.now();
  await page.waitForFunction((n) => document.querySelector(`#layers input[data-layer="${n}"]`), lateLayer, { timeout: 10000, polling: 50 });
  const late = await poll(() => rendered(page, 'late-1'), (l) => l.length === 1, 10000);
  assert.equal(late.length, 1, `late-1 drawn once on the new layer ${lateLayer}: ${JSON.stringify(late)}`);
  assert.ok(near(late[0].at, LATE, 1e-6), `late-1 at ${LATE}: ${JSON.stringify(late)}`);
  log(`a layer registered after the page loaded: listed and its device drawn ${Date.now() - lateSent} ms after its first report`);

  // Devices removed from the registry leave the map without a reload: late-1, drawn by the
  // overlay, and devices[2], drawn from the tiles only (it has not reported since the page
  // loaded).
  await idle(page);
  const third = await rendered(page, devices[2]);
  assert.equal(third.length, 1, `${devices[2]} drawn from the tiles before its removal: ${JSON.stringify(third)}`);
  assert.ok(near(third[0].at, P2, 1e-5), `${devices[2]} at ${P2}: ${JSON.stringify(third)}`);
  for (const id of ['late-1', devices[2]]) {
    execFileSync(process.env.URBIS_BIN, ['devices', 'rm', id, '--store', process.env.URBIS_STORE],
      { stdio: ['ignore', 'ignore', 'inherit'] });
  }
  const removedAt = Date.now();
  const left = await poll(async () => [...await rendered(page, 'late-1'), ...await rendered(page, devices[2])],
    (l) => l.length === 0, 5000);
  assert.deepEqual(left, [], `removed devices still drawn after 5 s: ${JSON.stringify(left)}`);
  log(`removed devices off the map ${Date.now() - removedAt} ms after \`urbis devices rm\` (the server reads the registry each second)`);
  await idle(page);
  const inTiles = await page.evaluate((ids) => {
    const { map, live } = window.urbis;
    return live.layers.flatMap((l) => map.querySourceFeatures(`urbis:${l.name}`, { sourceLayer: l.name }))
      .filter((f) => ids.includes(f.properties.id)).map((f) => f.properties.id);
  }, ['late-1', devices[2]]);
  assert.deepEqual(inTiles, [], 'the reloaded tiles no longer hold the removed devices');
  // late-1 was the last device of its layer: the layer left /catalog, the list and the map
  // (no requests for its tiles, which would now be 404).
  const lateGone = await page.evaluate((n) => ({
    row: document.querySelector(`#layers input[data-layer="${n}"]`) !== null,
    source: window.urbis.map.getSource(`urbis:${n}`) !== undefined,
  }), lateLayer);
  assert.deepEqual(lateGone, { row: false, source: false }, `${lateLayer} off the list and the map`);
  const cat = await read('/catalog');
  assert.ok(!cat.layers.some((l) => l.name === lateLayer), `${lateLayer} left /catalog`);
  // The list's device count of the live layer follows /catalog.
  const want = String(cat.layers.find((l) => l.name === liveLayer).features);
  const listed = () => page.evaluate((n) => document.querySelector(`#layers input[data-layer="${n}"]`)
    .closest('label').querySelector('.count').textContent, liveLayer);
  assert.equal(await poll(listed, (n) => n === want, 3000), want, `${liveLayer}'s count in the list equals /catalog's`);
  log(`${liveLayer}: the list shows ${want} devices, as /catalog does`);

  // The server crashes and comes back (kill -9, the same command again) behind a proxy
  // that answers 502 while it is away: EventSource gives up on an HTTP error, the page opens
  // a new stream by itself (resuming from its last event) and markers move again.
  let refused = 0;
  let proxyUp = false;
  const isStream = (u) => new URL(u).pathname === '/stream';
  await page.route(isStream, (route) => {
    if (proxyUp) return route.continue();
    refused += 1;
    return route.fulfill({ status: 502, contentType: 'text/plain', body: 'Bad Gateway' });
  });
  const sourceBefore = await page.evaluate(() => window.urbis.live.source.url);
  w.down = true;
  const killedAt = Date.now();
  process.kill(Number(process.env.URBIS_PID), 'SIGKILL');
  restarted = await startServer();
  while (refused === 0 && Date.now() - killedAt < 15000) await sleep(50);
  assert.ok(refused > 0, 'the page tried the stream again while the server was away');
  proxyUp = true;
  await page.waitForFunction((before) => {
    const s = window.urbis.live.source;
    return s.readyState === EventSource.OPEN && s.url !== before && s.url.includes('last_event_id=');
  }, sourceBefore, { timeout: 20000, polling: 100 });
  const backAfter = Date.now() - killedAt;
  await page.unroute(isStream);
  w.down = false;
  // Still inside the fence (the big screen counts it); the map goes there first, which
  // also loads tiles from the restarted server.
  const P3 = [INSIDE[0] - 0.0005, INSIDE[1] + 0.0003];
  await page.evaluate((c) => window.urbis.map.jumpTo({ center: c }), P3);
  await idle(page);
  const sentAgain = Date.now();
  await report([devices[0], ...P3]);
  const after = await poll(() => rendered(page, devices[0]), (n) => drawnAt(n, P3), 2000);
  assert.ok(drawnAt(after, P3),
    `after the restart ${devices[0]} drawn once at ${P3} within 2 s: ${JSON.stringify(after)}`);
  log(`server killed and restarted: the stream was refused ${refused}x (502), resumed by the page after ${backAfter} ms; a report then moved the marker in ${Date.now() - sentAgain} ms (${w.whileDown} errors while it was away, expected)`);

  await idle(page);
  await page.screenshot({ path: join(out, 'viewer.png') });
  clean(w, 'viewer');

  // ---- 3. The big screen, 1920x1080.
  const ops = await context.newPage();
  await ops.setViewportSize({ width: 1920, height: 1080 });
  const wo = watch(ops, 'ops');
  const opsCsp = (await ops.goto(`${base}/ops#key=${apiKey}`)).headers()['content-security-policy'] ?? '';
  assert.ok(opsCsp.includes("script-src 'self'"), `CSP of /ops: ${opsCsp}`);
  await ops.waitForFunction(() => window.urbis?.ready === true && document.body.dataset.updated, null, { timeout: 90000 });
  await idle(ops);

  const kpis = () => ops.evaluate(() => Object.fromEntries([...document.querySelectorAll('[data-kpi]')]
    .map((e) => [e.dataset.kpi, e.textContent])));
  const num = (s) => Number(String(s).replace(/,/g, ''));
  /** The page's figures equal /devices (and /catalog, /health) read at the same moment. */
  async function kpisMatch(what) {
    let last = null;
    const until = Date.now() + 12000;
    while (Date.now() < until) {
      const [k, d, c] = await Promise.all([kpis(), read('/devices?summary=true'), read('/catalog')]);
      const want = { devices: d.count, live: d.states.live ?? 0, sleeping: d.states.sleeping ?? 0, overdue: d.states.overdue ?? 0,
        lost: d.states.lost ?? 0, reports_per_minute: d.reports_last_minute, open_alarms: d.open_alarms, layers: c.layers.length };
      const got = Object.fromEntries(Object.keys(want).map((n) => [n, num(k[n])]));
      last = { got, want, health: k.health };
      if (JSON.stringify(got) === JSON.stringify(want) && k.health === 'OK') {
        log(`${what}: KPIs equal /devices: ${JSON.stringify(got)}, health ${k.health}`);
        return got;
      }
      await sleep(250);
    }
    assert.fail(`${what}: KPIs never equalled /devices: ${JSON.stringify(last)}`);
  }
  const k1 = await kpisMatch('ops at start');
  assert.equal(k1.open_alarms, 1, 'one device inside the fence');

  // An alarm reaches the feed and the figures follow.
  const sent = Date.now();
  await report([devices[0], ...P1]);
  // (5 s: software WebGL at 1920x1080 can hold the page's frames for a moment under load.)
  await ops.waitForFunction(() => document.querySelector('#feed li.exit')?.textContent.includes('Harbour'), null, { timeout: 5000, polling: 50 });
  log(`geofence exit in the alarm feed ${Date.now() - sent} ms after the report`);
  const k2 = await kpisMatch('after the exit');
  assert.equal(k2.open_alarms, 0);

  // Large type for 5 m, nothing cut off or overflowing the screen.
  async function readable(page, minFigure, minLabel, what) {
    const m = await page.evaluate(() => {
      const px = (e) => parseFloat(getComputedStyle(e).fontSize);
      const figures = [...document.querySelectorAll('.kpi .n')];
      const labels = [...document.querySelectorAll('.kpi .l, #feed li')];
      // Everything on the panel stays within its padding (inside the screen, not clipped).
      const side = document.getElementById('side');
      const sr = side.getBoundingClientRect();
      const cs = getComputedStyle(side);
      const box = { left: sr.left + parseFloat(cs.paddingLeft), right: Math.min(sr.right - parseFloat(cs.paddingRight), innerWidth),
        top: sr.top + parseFloat(cs.paddingTop), bottom: Math.min(sr.bottom - parseFloat(cs.paddingBottom), innerHeight) };
      const outside = [...side.querySelectorAll('.kpi, #feed-box, header, header > *, footer')].filter((e) => {
        const r = e.getBoundingClientRect();
        return r.left < box.left - 0.5 || r.top < box.top - 0.5 || r.right > box.right + 0.5 || r.bottom > box.bottom + 0.5;
      }).map((e) => e.className || e.id || e.tagName);
      const cut = figures.filter((e) => e.scrollWidth > e.clientWidth + 1).map((e) => e.dataset.kpi);
      return { figure: Math.min(...figures.map(px)), label: Math.min(...labels.map(px)), outside, cut,
        scroll: document.documentElement.scrollHeight > innerHeight || document.documentElement.scrollWidth > innerWidth };
    });
    log(`${what}: smallest figure ${m.figure}px, smallest label ${m.label}px`);
    assert.ok(m.figure >= minFigure, `${what}: figures ${m.figure}px >= ${minFigure}px`);
    assert.ok(m.label >= minLabel, `${what}: labels ${m.label}px >= ${minLabel}px`);
    assert.deepEqual(m.outside, [], `${what}: panels inside the screen`);
    assert.deepEqual(m.cut, [], `${what}: no figure cut off`);
    assert.equal(m.scroll, false, `${what}: no scrolling`);
  }
  await readable(ops, 64, 24, '1920x1080');
  await idle(ops);
  await ops.screenshot({ path: join(out, 'ops-1920x1080.png') });

  // Runs for days: a burst of alarms leaves the feed at its cap, the DOM and the heap flat.
  const cdp = await context.newCDPSession(ops);
  async function footprint() {
    await cdp.send('HeapProfiler.collectGarbage');
    const heap = (await cdp.send('Runtime.getHeapUsage')).usedSize;
    const dom = await ops.evaluate(() => document.getElementsByTagName('*').length);
    const feed = await ops.evaluate(() => document.querySelectorAll('#feed li').length);
    return { heap, dom, feed };
  }
  async function burst(n) {
    for (let i = 0; i < n; i++) {
      await report([devices[1], ...INSIDE]);
      await report([devices[1], ...P1]);
    }
    // The last event is in the feed, and the screen has caught up.
    await ops.waitForFunction(() => document.querySelector('#feed li')?.textContent.includes('exit'), null, { timeout: 5000 });
    await sleep(1500);
  }
  await burst(10);
  const f1 = await footprint();
  await burst(150);
  const f2 = await footprint();
  log(`after 20 alarms: ${JSON.stringify(f1)}; after 300 more: ${JSON.stringify(f2)}`);
  assert.equal(f1.feed, 12, 'the feed is full at its cap');
  assert.equal(f2.feed, 12, 'the feed stays at its cap');
  assert.equal(f2.dom, f1.dom, 'the DOM does not grow');
  assert.ok(f2.heap - f1.heap < 2 * 1024 * 1024, `the heap stays flat: ${f1.heap} -> ${f2.heap}`);
  const k3 = await kpisMatch('after the burst');
  assert.ok(k3.reports_per_minute >= 300, `the 300 reports of the last seconds are counted: ${k3.reports_per_minute}`);
  clean(wo, 'ops');

  // ---- 4. The big screen, 3840x2160.
  const ops4k = await context.newPage();
  await ops4k.setViewportSize({ width: 3840, height: 2160 });
  const w4 = watch(ops4k, 'ops-4k');
  await ops4k.goto(`${base}/ops#key=${apiKey}`);
  await ops4k.waitForFunction(() => window.urbis?.ready === true && document.body.dataset.updated, null, { timeout: 120000 });
  await idle(ops4k);
  await readable(ops4k, 128, 48, '3840x2160');
  await ops4k.screenshot({ path: join(out, 'ops-3840x2160.png') });
  clean(w4, 'ops-4k');
  log(`screenshots in ${out}`);
  for (const x of [w, wo, w4]) x.closing = true;
} catch (e) {
  failed = true;
  console.error('[e2e] FAILED:', e.message);
  try {
    for (const [i, p] of context.pages().entries()) await p.screenshot({ path: join(out, `failure-${i}.png`) });
  } catch { /* best effort */ }
} finally {
  restarted?.kill('SIGTERM');
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
