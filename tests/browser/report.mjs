// Opens an operation report (report.html, from disk) in Debian's Chromium with Playwright and
// checks that it is self-contained: every request stays inside the file (file: or data:), no
// console error, no page error, the embedded map decodes at its size. Run by tests/report.rs:
//   node report.mjs FILE WIDTH HEIGHT
// Prints one JSON line of what it saw; exits non-zero on a failed assertion.

import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { pathToFileURL } from 'node:url';

const [file, width, height] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run'],
});
try {
  const page = await browser.newPage();
  const requests = [];
  const errors = [];
  page.on('request', (r) => requests.push(r.url()));
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') errors.push(`console ${m.type()}: ${m.text()}`); });
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => errors.push(`failed: ${r.url()} ${r.failure()?.errorText}`));
  await page.goto(pathToFileURL(file).href, { waitUntil: 'load' });
  const map = await page.evaluate(() => {
    const img = document.getElementById('map');
    return img && { complete: img.complete, w: img.naturalWidth, h: img.naturalHeight };
  });
  const outside = requests.filter((u) => !u.startsWith('file:') && !u.startsWith('data:'));
  assert.deepEqual(outside, [], 'requests outside the file');
  assert.deepEqual(errors, [], 'console or page errors');
  assert.ok(map && map.complete, 'the map image is in the page');
  assert.equal(map.w, Number(width), 'map width');
  assert.equal(map.h, Number(height), 'map height');
  const text = await page.evaluate(() => document.body.innerText);
  const svg = await page.evaluate(() => document.querySelectorAll('svg polyline').length);
  console.log(JSON.stringify({ requests: requests.length, outside: outside.length, errors: errors.length, map, svgLines: svg, hasTitle: text.includes('Operation report') }));
} finally {
  await browser.close();
}
