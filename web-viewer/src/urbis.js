// Shared by the viewer (/) and the big screen (/ops): the map with every catalog layer, live
// device layers fed by live tiles and the /stream, geofences, and small DOM helpers.
// Plain ES modules, no bundler: the server embeds these files and MapLibre's ES build.

import * as maplibregl from './maplibre-gl.mjs';

export { maplibregl };

/** Colours of the device states (the same in both views and the legend). */
export const STATE_COLOURS = {
  new: '#22d3ee',
  live: '#22c55e',
  sleeping: '#60a5fa',
  overdue: '#f59e0b',
  lost: '#ef4444',
};
/** Device states in the order the panels list them. */
export const STATES = ['live', 'sleeping', 'overdue', 'lost', 'new'];

const SIMPLE_TYPES = ['Point', 'MultiPoint', 'LineString', 'MultiLineString', 'Polygon', 'MultiPolygon'];
/** Points of layers no style draws are drawn from this zoom on (as in the PNG tiles). */
const UNSTYLED_POINTS_FROM = 14;
const PALETTE = ['#8b5cf6', '#0ea5e9', '#f97316', '#14b8a6', '#e11d48', '#84cc16', '#a855f7', '#0891b2'];

/** An absolute URL for a path relative to the page (the server may sit under a prefix). */
export function url(path) {
  return new URL(path, document.baseURI).href;
}

const KEY_ITEM = 'urbis-api-key';

/**
 * The API key of this tab, or null (anonymous). A page opened as `…#key=uk_…` takes the key
 * from the fragment (which browsers never send to the server), keeps it for the tab's session
 * in sessionStorage, and takes it out of the address bar at once. Never put in a cookie.
 */
export const apiKey = (() => {
  const m = location.hash.match(/(?:^#|&)key=([^&]*)/);
  if (m) {
    const key = decodeURIComponent(m[1]);
    if (key) sessionStorage.setItem(KEY_ITEM, key);
    else sessionStorage.removeItem(KEY_ITEM);
    const rest = location.hash.slice(1).split('&').filter((p) => !p.startsWith('key=')).join('&');
    history.replaceState(null, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
  }
  return sessionStorage.getItem(KEY_ITEM);
})();

/** Signs in with `key` (or out, with null) and reloads the page. */
export function signIn(key) {
  if (key) sessionStorage.setItem(KEY_ITEM, key.trim());
  else sessionStorage.removeItem(KEY_ITEM);
  location.reload();
}

/** Headers that carry the key to this server. */
function authHeaders() {
  return apiKey ? { Authorization: `Bearer ${apiKey}` } : {};
}

/**
 * MapLibre's request hook: the key goes with every request to this server (style, TileJSON,
 * tiles) as a header, never in a URL; other origins get nothing.
 */
export function transformRequest(u) {
  return apiKey && new URL(u, document.baseURI).origin === location.origin
    ? { url: u, headers: authHeaders() }
    : { url: u };
}

/**
 * A small sign-in form in `parent`: a key field and a button (and "sign out" when signed in),
 * for the case where what anonymous callers may see is not enough.
 */
export function signInForm(parent, why) {
  const input = el('input', { type: 'password', placeholder: 'API key (uk_…)', autocomplete: 'off', id: 'urbis-key' });
  const form = el('form', { className: 'signin', onsubmit: (e) => { e.preventDefault(); signIn(input.value); } },
    why ? el('p', { textContent: why }) : null,
    input,
    el('button', { type: 'submit', textContent: 'Sign in' }),
    apiKey ? el('button', { type: 'button', textContent: 'Sign out', onclick: () => signIn(null) }) : null);
  parent.append(form);
  return form;
}

/** GET a JSON document; rejects with the server's problem detail when there is one. */
export async function getJSON(path, { signal, timeout = 10000 } = {}) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(new Error(`${path}: no answer in ${timeout} ms`)), timeout);
  const abort = () => ctl.abort(signal.reason);
  signal?.addEventListener('abort', abort, { once: true });
  try {
    const r = await fetch(url(path), { signal: ctl.signal, headers: { Accept: 'application/json', ...authHeaders() } });
    if (!r.ok) {
      let detail = r.statusText;
      try { detail = (await r.json()).detail || detail; } catch { /* not problem+json */ }
      throw new Error(`${path}: ${r.status} ${detail}`);
    }
    return await r.json();
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', abort);
  }
}

/** `document.createElement` with properties and children. */
export function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k in e) e[k] = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

/** The union of the catalog layers' bounds ([w, s, e, n]), or null. */
export function dataBounds(layers) {
  let b = null;
  for (const l of layers) {
    const x = l.bounds;
    if (!Array.isArray(x) || x.length !== 4 || !x.every(Number.isFinite)) continue;
    b = b ? [Math.min(b[0], x[0]), Math.min(b[1], x[1]), Math.max(b[2], x[2]), Math.max(b[3], x[3])] : [...x];
  }
  if (b && (b[2] - b[0] < 1e-4 || b[3] - b[1] < 1e-4)) {
    // One point (a single device): a small box around it.
    b = [b[0] - 0.01, b[1] - 0.01, b[2] + 0.01, b[3] + 0.01];
  }
  return b;
}

/** Which catalog layer a style layer draws, if any. */
export function catalogLayerOf(styleLayer) {
  return styleLayer.metadata?.['urbis:layer'] ?? styleLayer['source-layer'] ?? null;
}

function colourFor(name) {
  let h = 0;
  for (const c of name) h = (h * 31 + c.codePointAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
}

/**
 * Adds a plain drawing (fill, line, circle by geometry type) for every static catalog layer
 * that the style does not draw, so that the map shows every layer the catalog offers. It is
 * kept light (faint fills, thin semi-transparent lines, points only from zoom 14) so that the
 * style's own drawing stays readable.
 */
export function addUnstyledLayers(map, layers, { beforeId } = {}) {
  const drawn = new Set(map.getStyle().layers.map(catalogLayerOf).filter(Boolean));
  for (const l of layers) {
    if (l.live || drawn.has(l.name)) continue;
    const src = `urbis:${l.name}`;
    map.addSource(src, { type: 'vector', url: l.tilejson });
    const colour = colourFor(l.name);
    const meta = { 'urbis:layer': l.name };
    const types = Object.keys(l.geometry_types || {});
    // A layer of collections (or of no known type) may hold any kind: draw all three.
    const anyKind = types.length === 0 || types.some((t) => !SIMPLE_TYPES.includes(t));
    const has = (...t) => anyKind || t.some((x) => types.includes(x));
    const base = { source: src, 'source-layer': l.name, metadata: meta };
    if (has('Polygon', 'MultiPolygon')) {
      map.addLayer({
        ...base, id: `${l.name}:fill`, type: 'fill',
        filter: ['match', ['geometry-type'], ['Polygon', 'MultiPolygon'], true, false],
        paint: { 'fill-color': colour, 'fill-opacity': 0.08, 'fill-outline-color': colour },
      }, beforeId);
    }
    if (has('LineString', 'MultiLineString')) {
      map.addLayer({
        ...base, id: `${l.name}:line`, type: 'line',
        filter: ['match', ['geometry-type'], ['LineString', 'MultiLineString'], true, false],
        paint: { 'line-color': colour, 'line-opacity': 0.6, 'line-width': ['interpolate', ['linear'], ['zoom'], 10, 0.5, 18, 2] },
      }, beforeId);
    }
    if (has('Point', 'MultiPoint')) {
      // Points only from street zooms: below, thousands of dots would cover the basemap.
      map.addLayer({
        ...base, id: `${l.name}:point`, type: 'circle', minzoom: UNSTYLED_POINTS_FROM,
        filter: ['match', ['geometry-type'], ['Point', 'MultiPoint'], true, false],
        paint: {
          'circle-color': colour, 'circle-opacity': 0.7,
          'circle-radius': ['interpolate', ['linear'], ['zoom'], UNSTYLED_POINTS_FROM, 1.5, 18, 3.5],
        },
      }, beforeId);
    }
  }
}

const STATE_MATCH = ['match', ['get', 'state'], ...Object.entries(STATE_COLOURS).flat(), '#9ca3af'];

/** The map layers `Live.installLayer` adds for one live layer. */
const mapLayerIds = (name) => [`${name}:devices`, `${name}:moved`, `${name}:singles`, `${name}:clusters`];

/** First and longest wait before a closed stream is opened again. */
const RECONNECT_MIN_MS = 1000;
const RECONNECT_MAX_MS = 30000;

/**
 * Live device layers: live tiles (clusters below `clustered_below`, devices above) plus an
 * overlay of every device the stream has reported since the page loaded, so that a marker
 * moves the moment its report is durable, without reloading tiles. At cluster zooms the
 * live tiles are reloaded (at most every 2 s, only after changes) to recount the clusters.
 *
 * Cost per report is constant however large the fleet: the overlay takes a diff
 * (`updateData`, at most once per frame, only the devices that changed), and a tile's copy of
 * a device the overlay now draws is hidden by feature state (`moved`), not by a filter that
 * would re-lay out the tiles with a list of every moved id.
 */
export class Live {
  /**
   * @param map the MapLibre map (its style loaded)
   * @param layers the live layers of /catalog
   * @param hooks `{onGeofence(event), onState(event), onRemoved(event), onAlert(event), onStatus(text),
   *   onChange(), onLayersAdded(layers, catalog), onLayerRemoved(name)}`, all optional;
   *   `onLayerRemoved` hears of a live layer whose last device was removed; `onLayersAdded` hears of live layers
   *   registered after the page loaded, which the stream revealed and /catalog described
   * @param scale marker and line size factor (the big screen draws them larger)
   */
  constructor(map, layers, hooks = {}, scale = 1) {
    this.map = map;
    this.scale = scale;
    this.layers = [];
    this.initial = layers;
    this.hooks = hooks;
    this.waiting = new Map(); // layer name -> ids reported before the layer was added
    this.lookingUp = false;
    this.moved = new Map(); // device id -> GeoJSON feature (bounded by the device count)
    this.changed = new Set(); // device ids to send to the overlay at the next frame
    this.removed = new Map(); // device id -> layer, to take off the map at the next frame
    this.inOverlay = new Set(); // device ids the overlay source holds
    this.clearOverlay = false;
    this.overlayPending = false;
    this.tilesDirty = new Set();
    this.flashTimers = new Map(); // fence id -> timer (at most one per fence)
    this.source = null;
    this.lastEventId = null; // of the last event heard, to resume from on a new connection
    this.reconnectTimer = null;
    this.backoff = RECONNECT_MIN_MS;
    this.refreshTimer = null;
    this.fencesLoading = null;
  }

  /** Adds the sources and layers. */
  install() {
    this.installShared();
    this.addLayers(this.initial);
  }

  /**
   * Adds live layers (new ones only) on top of the map; the devices the stream reported
   * for them before they were added are drawn at once.
   */
  addLayers(layers) {
    const added = [];
    for (const l of layers) {
      if (!l.live || this.layers.some((x) => x.name === l.name)) continue;
      this.layers.push(l);
      this.installLayer(l);
      added.push(l);
      for (const id of this.waiting.get(l.name) ?? []) this.changed.add(id);
      this.waiting.delete(l.name);
    }
    if (added.length) this.scheduleOverlay();
    return added;
  }

  installShared() {
    const map = this.map;
    const k = this.scale;
    map.addSource('urbis:geofences', { type: 'geojson', data: { type: 'FeatureCollection', features: [] }, promoteId: 'fid' });
    const flash = ['boolean', ['feature-state', 'flash'], false];
    map.addLayer({
      id: 'geofences:fill', type: 'fill', source: 'urbis:geofences', metadata: { 'urbis:layer': 'geofences' },
      paint: { 'fill-color': ['case', flash, '#f43f5e', '#a78bfa'], 'fill-opacity': ['case', flash, 0.55, 0.12] },
    });
    map.addLayer({
      id: 'geofences:line', type: 'line', source: 'urbis:geofences', metadata: { 'urbis:layer': 'geofences' },
      paint: { 'line-color': ['case', flash, '#f43f5e', '#8b5cf6'], 'line-width': ['case', flash, 4 * k, 1.5 * k], 'line-dasharray': [3, 2] },
    });
    map.addSource('urbis:moved', { type: 'geojson', data: { type: 'FeatureCollection', features: [] }, promoteId: 'id' });
  }

  installLayer(l) {
    const map = this.map;
    const k = this.scale;
    {
      const below = l.clustered_below ?? 15;
      const meta = { 'urbis:layer': l.name, 'urbis:live': true };
      map.addSource(`urbis:${l.name}`, { type: 'vector', tiles: [l.tiles], minzoom: 0, maxzoom: l.maxzoom ?? 22, promoteId: 'id' });
      const src = { source: `urbis:${l.name}`, 'source-layer': l.name, metadata: meta };
      const worst = ['case',
        ['>', ['coalesce', ['get', 'lost'], 0], 0], STATE_COLOURS.lost,
        ['>', ['coalesce', ['get', 'overdue'], 0], 0], STATE_COLOURS.overdue,
        STATE_COLOURS.live];
      map.addLayer({
        ...src, id: `${l.name}:clusters`, type: 'circle', maxzoom: below,
        filter: ['has', 'point_count'],
        paint: {
          'circle-color': worst, 'circle-opacity': 0.85,
          'circle-radius': ['interpolate', ['linear'], ['get', 'point_count'], 2, 9 * k, 50, 16 * k, 1000, 28 * k],
          'circle-stroke-color': '#ffffff', 'circle-stroke-width': 2 * k,
        },
      });
      const device = {
        type: 'circle',
        paint: {
          'circle-color': STATE_MATCH, 'circle-radius': ['interpolate', ['linear'], ['zoom'], 10, 5 * k, 18, 9 * k],
          'circle-stroke-color': '#ffffff', 'circle-stroke-width': 2 * k,
        },
      };
      // Single devices at cluster zooms come from the tiles (reloaded after changes).
      map.addLayer({ ...src, ...device, id: `${l.name}:singles`, maxzoom: below, filter: ['!', ['has', 'point_count']] });
      // At street zooms, devices the stream moved are drawn from the overlay instead.
      const hidden = ['case', ['boolean', ['feature-state', 'moved'], false], 0, 1];
      map.addLayer({
        ...src, id: `${l.name}:devices`, type: 'circle', minzoom: below, filter: ['!', ['has', 'point_count']],
        paint: { ...device.paint, 'circle-opacity': hidden, 'circle-stroke-opacity': hidden },
      });
      map.addLayer({
        ...device, id: `${l.name}:moved`, source: 'urbis:moved', minzoom: below, metadata: meta,
        filter: ['==', ['get', 'layer'], l.name],
      });
    }
  }

  /** Ids of the live device layers a click or a test may query. */
  deviceLayerIds() {
    return this.layers.flatMap((l) => mapLayerIds(l.name));
  }

  /** Loads the geofences and subscribes to the stream. */
  start() {
    this.loadFences();
    this.connect();
    // One timer for the tile reloads, whatever the event rate.
    this.refreshTimer = setInterval(() => this.reloadTiles(), 2000);
  }

  /** Closes the stream and the timers (the page is going away). */
  stop() {
    this.source?.close();
    clearTimeout(this.reconnectTimer);
    clearInterval(this.refreshTimer);
    for (const t of this.flashTimers.values()) clearTimeout(t);
    this.flashTimers.clear();
  }

  connect() {
    // Every live layer, also those registered later (the stream names them). While the
    // server is unreachable EventSource reconnects by itself and sends Last-Event-ID, so
    // nothing is missed (or the server says `reset`). An HTTP error instead (a proxy's 502
    // while the server restarts) closes it for good: then a new one is opened here, with
    // backoff, resuming from the last event heard.
    // EventSource cannot set headers: the key goes as ?key= on this one request.
    const q = new URLSearchParams();
    if (this.lastEventId) q.set('last_event_id', this.lastEventId);
    if (apiKey) q.set('key', apiKey);
    const es = new EventSource(url('stream') + (q.size ? `?${q}` : ''));
    this.source = es;
    const on = (type, f) => es.addEventListener(type, (m) => {
      if (m.lastEventId) this.lastEventId = m.lastEventId;
      f(m);
    });
    es.addEventListener('open', () => {
      this.backoff = RECONNECT_MIN_MS;
      this.hooks.onStatus?.('live');
    });
    es.addEventListener('error', () => {
      if (es.readyState !== EventSource.CLOSED) {
        this.hooks.onStatus?.('reconnecting');
        return;
      }
      if (this.source !== es) return;
      this.hooks.onStatus?.(`closed; again in ${Math.round(this.backoff / 1000)} s`);
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, RECONNECT_MAX_MS);
    });
    on('position', (m) => this.onDevice(JSON.parse(m.data)));
    on('state', (m) => {
      const d = JSON.parse(m.data);
      this.onDevice(d);
      this.hooks.onState?.(d);
    });
    on('geofence', (m) => {
      const g = JSON.parse(m.data);
      this.flash(g.fence);
      this.hooks.onGeofence?.(g);
    });
    on('removed', (m) => {
      const d = JSON.parse(m.data);
      this.onRemoved(d);
      this.hooks.onRemoved?.(d);
    });
    on('geofences', () => this.loadFences());
    on('reset', () => this.resync());
    on('cutoff', () => this.resync());
    // Alert rules firing and resolving (the server's --alerts): no device to draw.
    on('alert', (m) => this.hooks.onAlert?.(JSON.parse(m.data)));
  }

  onDevice(d) {
    if (!d?.id || !Array.isArray(d.position)) return;
    const old = this.moved.get(d.id);
    const props = { ...(old?.properties ?? {}), id: d.id, layer: d.layer, state: d.state };
    if (d.kind) props.kind = d.kind;
    if (d.t != null) props.t = d.t;
    for (const [k, v] of Object.entries(d.telemetry ?? {})) props[k] = v;
    this.moved.set(d.id, { type: 'Feature', properties: props, geometry: { type: 'Point', coordinates: d.position } });
    if (!this.layers.some((l) => l.name === d.layer)) {
      // A layer registered after the page loaded: kept until the page adds it.
      if (!this.waiting.has(d.layer)) this.waiting.set(d.layer, new Set());
      this.waiting.get(d.layer).add(d.id);
      this.lookUpLayers();
      return;
    }
    this.changed.add(d.id);
    this.tilesDirty.add(d.layer);
    this.scheduleOverlay();
    this.hooks.onChange?.();
  }

  /**
   * A device left the registry: off the overlay, its tiles' copy hidden at once and the
   * layer's tiles reloaded (a rare event: the reload is worth it at every zoom).
   */
  onRemoved(d) {
    if (!d?.id || !d.layer) return;
    this.moved.delete(d.id);
    this.changed.delete(d.id);
    const waiting = this.waiting.get(d.layer);
    if (waiting?.delete(d.id) && waiting.size === 0) this.waiting.delete(d.layer);
    if (!this.layers.some((l) => l.name === d.layer)) return;
    if (d.layer_gone) {
      // Its last device: the layer left /catalog and its tiles are gone with it.
      if (this.inOverlay.delete(d.id)) this.map.getSource('urbis:moved')?.updateData({ remove: [d.id] });
      this.dropLayer(d.layer);
      this.hooks.onLayerRemoved?.(d.layer);
    } else {
      this.removed.set(d.id, d.layer);
      this.tilesDirty.add(d.layer);
      this.scheduleOverlay();
    }
    this.hooks.onChange?.();
  }

  /** Takes a live layer off the map (its map layers, then its source). */
  dropLayer(name) {
    for (const id of mapLayerIds(name)) if (this.map.getLayer(id)) this.map.removeLayer(id);
    if (this.map.getSource(`urbis:${name}`)) this.map.removeSource(`urbis:${name}`);
    this.layers = this.layers.filter((l) => l.name !== name);
    this.tilesDirty.delete(name);
    for (const [id, layer] of this.removed) if (layer === name) this.removed.delete(id);
  }

  /**
   * Reads /catalog for the layers the stream named but the map lacks; tries again every 5 s
   * while one is still missing (one request out at a time, one timer).
   */
  lookUpLayers() {
    if (this.lookingUp) return;
    this.lookingUp = true;
    getJSON('catalog')
      .then((catalog) => {
        const added = this.addLayers(catalog.layers.filter((l) => l.live && this.waiting.has(l.name)));
        if (added.length) this.hooks.onLayersAdded?.(added, catalog);
      })
      .catch((e) => this.hooks.onStatus?.(`catalog: ${e.message}`))
      .finally(() => {
        setTimeout(() => {
          this.lookingUp = false;
          if (this.waiting.size) this.lookUpLayers();
        }, this.waiting.size ? 5000 : 0);
      });
  }

  /** Missed events: forget the overlay and draw the tiles afresh. */
  resync() {
    this.moved.clear();
    this.changed.clear();
    this.removed.clear();
    this.clearOverlay = true;
    for (const l of this.layers) this.tilesDirty.add(l.name);
    this.reloadTiles(true);
    this.scheduleOverlay();
    this.loadFences();
    this.hooks.onChange?.();
  }

  scheduleOverlay() {
    if (this.overlayPending) return;
    this.overlayPending = true;
    // At most one overlay update per frame, however many reports arrive.
    requestAnimationFrame(() => {
      this.overlayPending = false;
      const src = this.map.getSource('urbis:moved');
      if (!src) return;
      if (this.clearOverlay) {
        this.clearOverlay = false;
        this.inOverlay.clear();
        src.updateData({ removeAll: true });
        for (const l of this.layers) this.map.removeFeatureState({ source: `urbis:${l.name}`, sourceLayer: l.name });
      }
      const ids = [...this.changed];
      this.changed.clear();
      const add = [];
      const remove = [];
      if (this.removed.size) {
        for (const [id, layer] of this.removed) {
          if (this.inOverlay.delete(id)) remove.push(id);
          // Hidden until the reloaded tiles, which no longer hold it, arrive.
          this.map.setFeatureState({ source: `urbis:${layer}`, sourceLayer: layer, id }, { moved: true });
        }
        this.removed.clear();
        this.reloadTiles(true);
      }
      if (ids.length === 0 && remove.length === 0) return;
      for (const id of ids) {
        const f = this.moved.get(id);
        if (!f) continue;
        if (this.inOverlay.has(id)) remove.push(id);
        else {
          this.inOverlay.add(id);
          this.map.setFeatureState({ source: `urbis:${f.properties.layer}`, sourceLayer: f.properties.layer, id }, { moved: true });
        }
        add.push(f);
      }
      src.updateData({ remove, add });
    });
  }

  reloadTiles(force = false) {
    for (const l of this.layers) {
      if (!this.tilesDirty.has(l.name)) continue;
      // Only the cluster zooms need it: above them the overlay is current.
      if (!force && this.map.getZoom() >= (l.clustered_below ?? 15)) continue;
      this.tilesDirty.delete(l.name);
      this.map.getSource(`urbis:${l.name}`)?.setTiles([l.tiles]);
    }
  }

  async loadFences() {
    if (this.fencesLoading) return this.fencesLoading;
    this.fencesLoading = (async () => {
      try {
        const fc = await getJSON('geofences');
        for (const f of fc.features) f.properties = { ...(f.properties ?? {}), fid: f.id };
        this.map.getSource('urbis:geofences')?.setData(fc);
      } catch (e) {
        this.hooks.onStatus?.(`geofences: ${e.message}`);
      } finally {
        this.fencesLoading = null;
      }
    })();
    return this.fencesLoading;
  }

  /** Flashes a fence for 3 s (a new event restarts its flash: one timer per fence). */
  flash(fence) {
    if (fence == null) return;
    const id = { source: 'urbis:geofences', id: fence };
    this.map.setFeatureState(id, { flash: true });
    clearTimeout(this.flashTimers.get(fence));
    this.flashTimers.set(fence, setTimeout(() => {
      this.flashTimers.delete(fence);
      this.map.setFeatureState(id, { flash: false });
    }, 3000));
  }
}

/** A `<table>` of a feature's properties (text only: values are never parsed as HTML). */
export function propertyTable(props) {
  const rows = Object.entries(props).map(([k, v]) => el('tr', {}, el('th', { textContent: k }), el('td', { textContent: typeof v === 'object' ? JSON.stringify(v) : String(v) })));
  return el('table', { className: 'props' }, ...rows);
}

/** Formats a number with thousands separators. */
export function fmt(n) {
  return Number.isFinite(n) ? n.toLocaleString('en-US') : '–';
}
