// The big screen (/ops) while `urbis simulate` drives a fleet: run by tests/simulate.rs with
//   node simulate.mjs BASE_URL API_KEY LAYER DEVICES
// Checks, in Debian's Chromium: the device count reaches DEVICES with devices live and
// reports counted per minute; zoomed in on the fleet, markers move between two looks 3 s
// apart; no console error and no failed request. Prints one JSON line of what it saw.

import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';

const [base, key, layer, devicesArg] = process.argv.slice(2);
const want = Number(devicesArg);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--disable-quic', '--no-first-run'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1920, height: 1080 } });
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => {
    const why = r.failure()?.errorText ?? '';
    if (why === 'net::ERR_ABORTED' && r.url().includes('/tiles/')) return; // map moves cancel tiles
    errors.push(`failed: ${r.url()} ${why}`);
  });
  page.on('response', (r) => { if (r.status() >= 400) errors.push(`${r.status()} ${r.url()}`); });
  await page.goto(`${base}/ops#key=${key}`);
  const kpi = (name) => page.evaluate((n) => Number((document.querySelector(`[data-kpi="${n}"]`)?.textContent ?? '').replace(/,/g, '')), name);
  // The count and the live devices, as the page's 5 s poll shows them.
  let shown = 0;
  let live = 0;
  for (let i = 0; i < 200 && !(shown === want && live > 0); i += 1) {
    await sleep(200);
    shown = await kpi('devices');
    live = await kpi('live');
  }
  assert.equal(shown, want, `the big screen counts the fleet (errors: ${errors.join('; ')})`);
  assert.ok(live > 0, `devices shown live (errors: ${errors.join('; ')})`);
  await page.waitForFunction(() => window.urbis?.live, null, { timeout: 20000 });
  // Zoom in on the fleet (street zoom: single markers, moved by the stream).
  const list = await (await fetch(`${base}/devices?layer=${layer}&limit=1000`, { headers: { Authorization: `Bearer ${key}` } })).json();
  const at = list.devices.filter((d) => d.position).map((d) => d.position);
  assert.ok(at.length > 0, 'devices have positions');
  await page.evaluate(([lon, lat]) => window.urbis.map.jumpTo({ center: [lon, lat], zoom: 15.5 }), at[0]);
  const look = () => page.evaluate(() => {
    const { map, live } = window.urbis;
    const out = {};
    for (const f of map.queryRenderedFeatures({ layers: live.deviceLayerIds() })) {
      if (f.properties.id && !f.state?.moved && f.geometry.type === 'Point') out[f.properties.id] = f.geometry.coordinates;
    }
    return out;
  });
  let first = {};
  for (let i = 0; i < 50 && Object.keys(first).length === 0; i += 1) {
    await sleep(200);
    first = await look();
  }
  await sleep(3000);
  const second = await look();
  const both = Object.keys(first).filter((id) => second[id]);
  const moved = both.filter((id) => first[id][0] !== second[id][0] || first[id][1] !== second[id][1]);
  assert.ok(both.length > 0, `markers in view (${Object.keys(first).length} then ${Object.keys(second).length})`);
  assert.ok(moved.length > 0, `markers moved: ${moved.length} of ${both.length}`);
  const perMinute = await kpi('reports_per_minute');
  assert.ok(perMinute > 0, 'reports per minute shown');
  await page.screenshot({ path: process.env.OUT_FILE ?? '/tmp/urbis-simulate.png' });
  assert.deepEqual(errors, [], 'console errors or failed requests');
  console.log(JSON.stringify({ shown, live, inView: both.length, moved: moved.length, perMinute }));
} finally {
  await browser.close();
}
