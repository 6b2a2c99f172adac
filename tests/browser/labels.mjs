// Map labels in Debian's Chromium: run by tests/labels.rs with
//   node labels.mjs BASE_URL OUT_DIR
// Opens the viewer on the demo's Helsinki at street zoom and checks that MapLibre rendered
// street names (queryRenderedFeatures on the style's street-names symbol layer returns named
// features), that glyph ranges were fetched and none failed, and that no console error or
// failed request happened. Prints one JSON line of what it saw.

import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';

const [base, outDir] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--disable-quic', '--no-first-run'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors = [];
  const glyphs = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => {
    const why = r.failure()?.errorText ?? '';
    if (why === 'net::ERR_ABORTED' && r.url().includes('/tiles/')) return; // map moves cancel tiles
    errors.push(`failed: ${r.url()} ${why}`);
  });
  page.on('response', (r) => {
    if (r.url().includes('/fonts/')) glyphs.push({ url: r.url(), status: r.status() });
    if (r.status() >= 400) errors.push(`${r.status()} ${r.url()}`);
  });
  // Helsinki's centre at zoom 15.5 (the viewer reads the position from the hash).
  await page.goto(`${base}/#15.5/60.1685/24.9435`);
  await page.waitForFunction(() => window.urbis?.map?.loaded(), null, { timeout: 30000 });
  let names = [];
  for (let i = 0; i < 100 && names.length === 0; i += 1) {
    await page.waitForTimeout(200);
    names = await page.evaluate(() => {
      const { map } = window.urbis;
      if (!map.getLayer('street-names')) return [];
      return map.queryRenderedFeatures({ layers: ['street-names'] }).map((f) => f.properties.name).filter(Boolean);
    });
  }
  await page.waitForFunction(() => window.urbis.map.areTilesLoaded(), null, { timeout: 30000 });
  // Once every tile is in and the labels placed (MapLibre fades them in over 300 ms), all of
  // them.
  await page.waitForTimeout(1000);
  names = await page.evaluate(() => window.urbis.map.queryRenderedFeatures({ layers: ['street-names'] })
    .map((f) => f.properties.name).filter(Boolean));
  await page.screenshot({ path: `${outDir}/labels.png` });
  const places = await page.evaluate(() => window.urbis.map.queryRenderedFeatures({ layers: ['poi-names'] }).length);
  assert.ok(names.length > 0, `street names rendered (errors: ${errors.join('; ')})`);
  assert.ok(glyphs.length > 0, 'glyph ranges were fetched');
  assert.deepEqual(glyphs.filter((g) => g.status !== 200), [], 'every glyph request succeeded');
  assert.deepEqual(errors, [], 'no console error or failed request');
  console.log(JSON.stringify({ streets: [...new Set(names)].length, sample: names.slice(0, 5), pois: places, glyphs: glyphs.length }));
} finally {
  await browser.close();
}
