// The map viewer at `/`: every layer of /catalog over a style from /styles, a layer list
// with toggles, popups with feature properties, live devices moving from /stream.

import {
  maplibregl, STATE_COLOURS, STATES, Live, addUnstyledLayers, catalogLayerOf, dataBounds, el, fmt,
  getJSON, propertyTable, url, apiKey, signInForm, transformRequest,
} from './urbis.js';

const params = new URLSearchParams(location.search);
const status = document.getElementById('status');
const say = (text, error = false) => {
  status.textContent = text;
  status.classList.toggle('error', error);
};

async function main() {
  const [catalog, styles] = await Promise.all([getJSON('catalog'), getJSON('styles')]);
  const layers = catalog.layers;
  // Anonymous callers see public layers only: offer to sign in (and out, once signed in).
  signInForm(document.getElementById('panel-body'),
    apiKey ? null : layers.length ? 'Signed out: public layers only.' : 'No public layers: sign in with a key.');
  const styleName = params.get('style') || 'city';
  const picker = document.getElementById('style');
  for (const s of styles.styles) picker.append(el('option', { value: s.name, textContent: s.name, selected: s.name === styleName }));
  picker.addEventListener('change', () => {
    params.set('style', picker.value);
    location.search = params.toString();
  });

  const bounds = dataBounds(layers.filter((l) => !l.live)) ?? dataBounds(layers);
  const map = new maplibregl.Map({
    container: 'map',
    style: url(`styles/${encodeURIComponent(styleName)}.json`),
    bounds: bounds ?? undefined,
    fitBoundsOptions: { padding: 30 },
    center: bounds ? undefined : [0, 20],
    zoom: bounds ? undefined : 1,
    hash: true,
    attributionControl: { compact: false },
    transformRequest,
  });
  // For the end-to-end tests and for anyone at the console.
  window.urbis = { map, catalog, ready: false, live: null };
  map.addControl(new maplibregl.NavigationControl(), 'top-right');
  map.addControl(new maplibregl.ScaleControl(), 'bottom-left');
  map.on('error', (e) => say(`map: ${e.error?.message ?? e.error ?? 'error'}`, true));

  await map.once('load');
  addUnstyledLayers(map, layers);
  const liveLayers = layers.filter((l) => l.live);
  let popups = null;
  const live = new Live(map, liveLayers, {
    onStatus: (s) => say(`stream: ${s}`),
    // A live layer registered since the page loaded: listed, clickable, in the legend.
    onLayersAdded: (added) => {
      catalog.layers.push(...added);
      addLayerRows(map, added);
      buildLegend(true);
      popups.refresh();
    },
    onRemoved: () => refreshCountsSoon(),
    // A live layer whose last device was removed: out of the list too.
    onLayerRemoved: (name) => {
      const i = catalog.layers.findIndex((l) => l.name === name);
      if (i >= 0) catalog.layers.splice(i, 1);
      layerRow(name)?.remove();
      popups.refresh();
    },
  });
  live.install();
  // Geofences and the stream need rights an anonymous caller has only when a policy grants
  // it live layers: without a key and without live layers, nothing to ask for (and no 401s).
  if (apiKey || liveLayers.length) live.start();
  window.urbis.live = live;
  addEventListener('pagehide', () => live.stop());

  addLayerRows(map, [...layers, { name: 'geofences' }]);
  // Devices are registered and removed while the page is open: the counts follow.
  setInterval(refreshCountsSoon, COUNTS_EVERY_MS);
  buildLegend(liveLayers.length > 0);
  popups = wirePopups(map);
  document.getElementById('toggle-panel').addEventListener('click', (e) => {
    const panel = document.getElementById('panel');
    const collapsed = panel.classList.toggle('collapsed');
    e.currentTarget.setAttribute('aria-expanded', String(!collapsed));
  });
  map.once('idle', () => { window.urbis.ready = true; });
}

/** The list's row (`<li>`) of a layer, or null. */
function layerRow(name) {
  return document.querySelector(`#layers input[data-layer="${CSS.escape(name)}"]`)?.closest('li') ?? null;
}

/**
 * One row per catalog layer (and the geofences): a toggle, the feature count, zoom to it.
 * Rows added later (live layers registered since) go above the geofences row.
 */
function addLayerRows(map, rows) {
  const list = document.getElementById('layers');
  const styleLayers = map.getStyle().layers;
  const fences = layerRow('geofences');
  for (const row of rows) {
    const ids = styleLayers.filter((s) => catalogLayerOf(s) === row.name).map((s) => s.id);
    if (ids.length === 0 || layerRow(row.name)) continue;
    const box = el('input', { type: 'checkbox', checked: true, dataset: { layer: row.name } });
    box.addEventListener('change', () => {
      for (const id of ids) map.setLayoutProperty(id, 'visibility', box.checked ? 'visible' : 'none');
    });
    const zoom = Array.isArray(row.bounds) && row.bounds.every(Number.isFinite)
      ? el('button', { type: 'button', title: `Zoom to ${row.name}`, textContent: '⤢', onclick: () => map.fitBounds(row.bounds, { padding: 30 }) })
      : null;
    list.insertBefore(el('li', {},
      el('label', {}, box, el('span', { textContent: row.name }),
        row.features != null ? el('span', { className: 'count', textContent: fmt(row.features) }) : null,
        row.live ? el('span', { className: 'live', textContent: 'live' }) : null),
      zoom), fences);
  }
}

const COUNTS_EVERY_MS = 60_000;
let countsTimer = null;

/** Reads the list's feature counts again from /catalog, soon (one request for a burst). */
function refreshCountsSoon() {
  if (countsTimer) return;
  countsTimer = setTimeout(async () => {
    try {
      const catalog = await getJSON('catalog');
      for (const l of catalog.layers) {
        const count = layerRow(l.name)?.querySelector('.count');
        if (count && l.features != null) count.textContent = fmt(l.features);
      }
    } catch { /* the next change, or the next minute, tries again */ } finally {
      countsTimer = null;
    }
  }, 500);
}

function buildLegend(hasLive) {
  const legend = document.getElementById('legend');
  if (!hasLive || legend.childElementCount) return;
  for (const s of STATES) legend.append(el('span', { textContent: s, style: `--c:${STATE_COLOURS[s]}` }));
}

/**
 * Click: the topmost feature's properties in a popup; a cluster zooms in. Returns
 * `{refresh()}`, to call when layers were added.
 */
function wirePopups(map) {
  const popup = new maplibregl.Popup({ maxWidth: '360px' });
  // getStyle() serialises the whole style: read once, and again only when layers are added.
  let ids = [];
  const refresh = () => {
    ids = map.getStyle().layers.filter((l) => l.type !== 'background' && l.source).map((l) => l.id);
  };
  refresh();
  const interactive = () => ids;
  map.on('click', async (e) => {
    const [f] = map.queryRenderedFeatures(e.point, { layers: interactive() });
    if (!f) return;
    const p = f.properties;
    if (p.point_count != null && p.cluster) {
      map.easeTo({ center: e.lngLat, zoom: Math.min(map.getZoom() + 2, 22) });
      return;
    }
    const title = catalogLayerOf(f.layer) ?? f.layer.id;
    const body = el('div', {}, el('h3', { textContent: title }), propertyTable(p));
    popup.setLngLat(e.lngLat).setDOMContent(body).addTo(map);
    if (f.layer.metadata?.['urbis:live'] && p.id) {
      // A device: its current record (last seen, reports, all telemetry).
      try {
        const d = await getJSON(`devices/${encodeURIComponent(p.id)}`);
        const { position, telemetry, ...rest } = d;
        body.replaceChildren(el('h3', { textContent: `${d.id} (${d.layer})` }), propertyTable({ ...rest, ...telemetry, position: position?.map((x) => x.toFixed(6)).join(', ') }));
      } catch { /* the tile's properties stay */ }
    }
  });
  map.on('mousemove', (e) => {
    map.getCanvas().style.cursor = map.queryRenderedFeatures(e.point, { layers: interactive() }).length ? 'pointer' : '';
  });
  return { refresh };
}

main().catch((e) => {
  say(`Could not start the map: ${e.message}`, true);
  console.error(e);
});
