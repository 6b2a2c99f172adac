// The operations-center big screen at `/ops`: the dark city map with live devices, key
// figures from the JSON APIs and an alarm feed from /stream. Built to run for days: the feed
// keeps FEED_MAX entries, one timer drives the polling, a poll is skipped while the previous
// one is still out, and the stream is one EventSource that reconnects by itself.

import { maplibregl, Live, dataBounds, el, getJSON, apiKey, signInForm, transformRequest } from './urbis.js';

const FEED_MAX = 12;
const POLL_MS = 5000;
const CATALOG_EVERY = 6; // polls: the layer count every 30 s

const kpi = Object.fromEntries([...document.querySelectorAll('[data-kpi]')].map((e) => [e.dataset.kpi, e]));
const feed = document.getElementById('feed');
const footer = document.getElementById('footer');
const clock = document.getElementById('clock');
const params = new URLSearchParams(location.search);
if (params.has('kiosk')) document.body.classList.add('kiosk');

/** Exact below 100,000; compact above (the exact value stays in the tooltip). */
function show(name, value, cls) {
  const e = kpi[name];
  if (!e) return;
  const text = typeof value === 'number'
    ? (value < 100000 ? value.toLocaleString('en-US') : Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 }).format(value))
    : String(value);
  if (e.textContent !== text) e.textContent = text;
  e.title = typeof value === 'number' ? value.toLocaleString('en-US') : String(value);
  if (cls !== undefined) e.className = `n ${cls}`;
}

let streamStatus = 'connecting';
let polls = 0;
let inFlight = false;
let layerCount = null;

async function poll() {
  if (inFlight) return;
  inFlight = true;
  try {
    const wantCatalog = polls % CATALOG_EVERY === 0 || layerCount === null;
    polls += 1;
    const [devices, health, ready, catalog] = await Promise.allSettled([
      getJSON('devices?summary=true'),
      getJSON('health'),
      getJSON('ready'),
      wantCatalog ? getJSON('catalog') : Promise.resolve(null),
    ]);
    if (devices.status === 'rejected' && !signin && / 40[13] /.test(devices.reason.message)) {
      // The big screen needs a key with the devices right: ask for one.
      signin = signInForm(document.getElementById('side'), apiKey ? 'This key may not read devices.' : 'Sign in with a key to see devices.');
    }
    if (devices.status === 'fulfilled') {
      const d = devices.value;
      show('devices', d.count);
      for (const s of ['live', 'sleeping', 'overdue', 'lost']) show(s, d.states?.[s] ?? 0);
      show('reports_per_minute', d.reports_last_minute ?? 0);
      show('open_alarms', d.open_alarms ?? 0);
      kpi.open_alarms.parentElement.classList.toggle('on', (d.open_alarms ?? 0) > 0);
    }
    if (catalog.status === 'fulfilled' && catalog.value) {
      layerCount = catalog.value.layers.length;
      show('layers', layerCount);
    }
    // Health: tiles are served; ready: device reports are acknowledged (durable).
    const serving = health.status === 'fulfilled' && health.value.status === 'ok';
    const ok = serving && ready.status === 'fulfilled';
    const why = health.status === 'rejected' ? health.reason.message : ready.status === 'rejected' ? ready.reason.message : '';
    show('health', ok ? 'OK' : serving ? 'DEGRADED' : 'DOWN', ok ? 'ok' : 'bad');
    kpi.health.title = ok ? 'serving tiles; device reports durable' : why;
    footer.textContent = `updated ${new Date().toLocaleTimeString('en-GB')} · stream ${streamStatus}${why ? ` · ${why}` : ''}`;
    document.body.dataset.updated = String(Date.now());
  } finally {
    inFlight = false;
  }
}

/** Newest first; the oldest entries leave the DOM (the feed never grows past FEED_MAX). */
function alarm(kind, text, t) {
  const when = new Date((t ?? Date.now() / 1000) * 1000).toLocaleTimeString('en-GB');
  const li = el('li', { className: `${kind} new-item` }, el('time', { textContent: when }), el('span', { className: 'k', textContent: kind }), text);
  feed.prepend(li);
  while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
}

let signin = null;
let soon = null;
/** A figure changed (an alarm or a state): refresh within a moment rather than in 5 s. */
function pollSoon() {
  if (soon) return;
  soon = setTimeout(() => { soon = null; poll(); }, 300);
}

async function main() {
  setInterval(() => { clock.textContent = new Date().toLocaleTimeString('en-GB'); }, 1000);
  clock.textContent = new Date().toLocaleTimeString('en-GB');
  const full = () => (document.fullscreenElement ? document.exitFullscreen() : document.documentElement.requestFullscreen()).catch(() => {});
  document.getElementById('fullscreen').addEventListener('click', full);
  addEventListener('keydown', (e) => { if (e.key === 'f' || e.key === 'F') full(); });

  await poll();
  setInterval(poll, POLL_MS);

  const catalog = await getJSON('catalog');
  const bounds = dataBounds(catalog.layers.filter((l) => !l.live)) ?? dataBounds(catalog.layers);
  const map = new maplibregl.Map({
    container: 'map',
    style: new URL('styles/city-dark.json', document.baseURI).href,
    bounds: bounds ?? undefined,
    fitBoundsOptions: { padding: 40 },
    center: bounds ? undefined : [0, 20],
    zoom: bounds ? undefined : 1,
    attributionControl: { compact: false },
    transformRequest,
  });
  window.urbis = { map, ready: false };
  await map.once('load');
  const live = new Live(map, catalog.layers.filter((l) => l.live), {
    onGeofence: (g) => {
      alarm(g.kind, `${g.device} · ${g.name ?? g.fence}`, g.t);
      pollSoon();
    },
    onState: (d) => {
      if (d.state === 'overdue' || d.state === 'lost') alarm(d.state, `${d.id} (${d.layer})`);
      pollSoon();
    },
    onAlert: (a) => {
      alarm(a.state === 'firing' ? `${a.severity} alert` : 'resolved', `${a.rule}: ${a.summary}`, a.at);
      if (a.state === 'firing') document.body.dataset.alerts = String(Number(document.body.dataset.alerts ?? 0) + 1);
    },
    onRemoved: () => pollSoon(),
    onLayerRemoved: () => {
      layerCount = null; // the next poll reads /catalog
      pollSoon();
    },
    onStatus: (s) => { streamStatus = s; },
    onLayersAdded: (_added, cat) => {
      layerCount = cat.layers.length;
      show('layers', layerCount);
    },
  }, 1.6 * Math.max(1, innerHeight / 1080)); // markers seen from 5 m, at 1080p and 4K alike
  live.install();
  live.start();
  window.urbis.live = live;
  addEventListener('pagehide', () => live.stop());
  map.once('idle', () => { window.urbis.ready = true; });
}

main().catch((e) => {
  footer.textContent = `Could not start: ${e.message}`;
  console.error(e);
});
