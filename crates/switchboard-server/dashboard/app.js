// Switchboard service map: the dashboard served at /dashboard/.
//
// Plain ES2020, no build step. It polls GET /v1/graph every 2 s and keeps one Cytoscape graph
// up to date in place (data of existing elements is updated; the layout runs again only when
// the set of nodes or edges changed, so the user's zoom and pan survive the refreshes).
//
// Every string that comes from the API reaches the page through textContent or an attribute
// (see h() below): there is no innerHTML anywhere in this file.

'use strict';

(() => {
  // ---------------------------------------------------------------------------------------
  // Settings
  // ---------------------------------------------------------------------------------------

  const REFRESH_MS = 2000;
  /** /v1/topics (partitions, subscription modes) changes slowly: read it every Nth refresh. */
  const TOPICS_EVERY = 5;
  const REQUEST_TIMEOUT_MS = 10000;
  /** Long-poll wait of the live tail; the broker caps it (20 s by default). */
  const TAIL_WAIT_MS = 10000;
  const TAIL_MAX_ROWS = 200;
  /**
   * Browsers allow about six HTTP/1.1 connections per origin; the tail keeps at most this
   * many long polls open so the graph refresh always has a connection left.
   */
  const TAIL_MAX_POLLS = 3;
  const WINDOWS = ['1m', '5m', '1h'];
  const WINDOW_SECONDS = { '1m': 60, '5m': 300, '1h': 3600 };
  const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif';

  // Health thresholds on the error share (0 to 1).
  const WARN_ERRORS = 0.01;
  const CRIT_ERRORS = 0.05;

  const COLORS = {
    ok: '#23895b',
    warn: '#c77700',
    crit: '#d92d20',
    idle: '#98a2b3',
    select: '#2563eb',
  };

  const CONGESTION_LABELS = {
    backlog_growing: 'Backlog growing',
    lag_growing: 'Lag growing',
    no_consumers: 'No consumers',
    in_flight_cap: 'At in-flight cap',
    latency_climbing: 'Latency climbing',
    errors_climbing: 'Errors climbing',
    breaker_open: 'Breaker open',
  };

  const HEALTH_LABELS = { ok: 'OK', warn: 'Degraded', crit: 'Critical', idle: 'Idle' };
  const HEALTH_RANK = { crit: 3, warn: 2, ok: 1, idle: 0 };

  // ---------------------------------------------------------------------------------------
  // State
  // ---------------------------------------------------------------------------------------

  const store = {
    get(key) {
      try { return window.localStorage.getItem(key); } catch (_) { return null; }
    },
    set(key, value) {
      try {
        if (value === null || value === '') window.localStorage.removeItem(key);
        else window.localStorage.setItem(key, value);
      } catch (_) { /* storage may be disabled; the setting then lasts for this page only */ }
    },
  };

  const state = {
    window: WINDOWS.includes(store.get('switchboard.window')) ? store.get('switchboard.window') : '1m',
    token: store.get('switchboard.token') || '',
    graph: null,
    /** name → Topic from GET /v1/topics */
    topics: new Map(),
    updates: 0,
    refreshSeq: 0,
    refreshTimer: 0,
    lastOkAt: 0,
    /** { type: 'node' | 'edge', id } */
    selected: null,
    tab: 'edges',
    filter: '',
    sort: {
      edges: { key: 'health', dir: -1 },
      services: { key: 'name', dir: 1 },
    },
    layoutKey: '',
    /** Set once the user zooms or pans; until then every re-layout fits the graph in view. */
    userMovedViewport: false,
  };

  // ---------------------------------------------------------------------------------------
  // DOM helpers
  // ---------------------------------------------------------------------------------------

  const $ = (sel, root = document) => root.querySelector(sel);

  /**
   * Creates an element. `props`: `class`, `text` (textContent), `on<event>` handlers, and any
   * other key as an attribute (false/null/undefined skip it, true sets it empty). Children:
   * nodes, strings (as text nodes), arrays, or null (skipped). Strings never become markup.
   */
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    if (props) {
      for (const [key, value] of Object.entries(props)) {
        if (value === undefined || value === null || value === false) continue;
        if (key === 'class') el.className = value;
        else if (key === 'text') el.textContent = String(value);
        else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
        else el.setAttribute(key, value === true ? '' : String(value));
      }
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      if (Array.isArray(child)) append(el, child);
      else if (child instanceof Node) el.appendChild(child);
      else el.appendChild(document.createTextNode(String(child)));
    }
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    return el;
  }

  /** Replaces the children of `el` (null and false children are skipped, as in h()). */
  function fill(el, ...children) {
    el.replaceChildren();
    append(el, children);
  }

  function setText(el, text) {
    const s = String(text);
    if (el.textContent !== s) el.textContent = s;
  }

  // ---------------------------------------------------------------------------------------
  // Formatting
  // ---------------------------------------------------------------------------------------

  const isNum = (v) => typeof v === 'number' && Number.isFinite(v);

  function fmtNumber(v) {
    if (!isNum(v)) return '—';
    const a = Math.abs(v);
    if (a === 0) return '0';
    if (a < 1) return v.toFixed(2);
    if (a < 100) return v.toFixed(1);
    if (a < 10000) return v.toFixed(0);
    if (a < 1e6) return (v / 1e3).toFixed(1) + 'k';
    return (v / 1e6).toFixed(1) + 'M';
  }

  const fmtRate = (v) => (isNum(v) ? fmtNumber(v) + '/s' : '—');

  /** Always in ms (the detail panel's fields must parse as milliseconds). */
  function fmtMs(v) {
    if (!isNum(v)) return '—';
    if (v < 1) return v.toFixed(2) + ' ms';
    if (v < 100) return v.toFixed(1) + ' ms';
    return Math.round(v) + ' ms';
  }

  /** Shorter, for labels on the map: seconds past 1000 ms. */
  function fmtMsShort(v) {
    if (!isNum(v)) return '—';
    if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 1) + ' s';
    return fmtMs(v);
  }

  /** A share (0 to 1) as a percentage. */
  function fmtPct(v) {
    if (!isNum(v)) return '—';
    if (v === 0) return '0 %';
    const p = v * 100;
    return (p < 0.1 ? p.toFixed(2) : p < 10 ? p.toFixed(1) : p.toFixed(0)) + ' %';
  }

  function fmtCount(v) {
    if (!isNum(v)) return '—';
    return Math.round(v).toLocaleString('en-US');
  }

  function fmtClock(date) {
    const p = (n) => String(n).padStart(2, '0');
    return `${p(date.getHours())}:${p(date.getMinutes())}:${p(date.getSeconds())}`;
  }

  function fmtTime(value) {
    if (!value) return '—';
    const d = typeof value === 'number' ? new Date(value * 1000) : new Date(value);
    if (Number.isNaN(d.getTime())) return String(value);
    const ms = String(d.getMilliseconds()).padStart(3, '0');
    const today = new Date().toDateString() === d.toDateString();
    const day = today ? '' : d.toISOString().slice(0, 10) + ' ';
    return `${day}${fmtClock(d)}.${ms}`;
  }

  function truncate(s, n) {
    return s.length > n ? s.slice(0, n - 1) + '…' : s;
  }

  const congestionLabel = (kind) => CONGESTION_LABELS[kind] || String(kind).replace(/_/g, ' ');

  // ---------------------------------------------------------------------------------------
  // Model: ids, names, health
  // ---------------------------------------------------------------------------------------

  /** `subscription:orders/email` → { topic: 'orders', sub: 'email' } */
  function splitSubscription(nameOrId) {
    const name = nameOrId.startsWith('subscription:') ? nameOrId.slice('subscription:'.length) : nameOrId;
    const at = name.indexOf('/');
    return at < 0 ? { topic: name, sub: '' } : { topic: name.slice(0, at), sub: name.slice(at + 1) };
  }

  /** The readable name of a node id (`service:order` → `order`). */
  function nameOfId(id) {
    const at = id.indexOf(':');
    return at < 0 ? id : id.slice(at + 1);
  }

  function kindOfId(id) {
    const at = id.indexOf(':');
    return at < 0 ? '' : id.slice(0, at);
  }

  /**
   * Health from the error share and the congestion findings. A climbing latency alone is a
   * warning; every other congestion finding (a growing backlog, no consumers, an open
   * breaker…) is critical, as is an error share of 5 % or more.
   */
  function healthOf(errorShare, congested) {
    const kinds = (congested || []).map((c) => c.kind);
    if (errorShare >= CRIT_ERRORS || kinds.some((k) => k !== 'latency_climbing')) return 'crit';
    if (errorShare >= WARN_ERRORS || kinds.length > 0) return 'warn';
    return 'ok';
  }

  function edgeHealth(e) {
    const health = healthOf(e.error_rate || 0, e.congested);
    // An edge with no traffic in the window and nothing wrong is drawn grey, not green.
    return health === 'ok' && !(e.rate > 0) ? 'idle' : health;
  }

  const nodeErrorShare = (n) => (n.rate_in > 0 ? (n.errors_per_second || 0) / n.rate_in : 0);
  const nodeHealth = (n) => healthOf(nodeErrorShare(n), n.congested);

  const edgeP = (e, q) => (e.latency ? e.latency[q] : null);
  const edgeE2e = (e, q) => (e.end_to_end ? e.end_to_end[q] : null);

  function edgeTitle(e) {
    return `${nameOfId(e.source)} → ${nameOfId(e.target)}`;
  }

  function findNode(id) {
    return state.graph ? state.graph.nodes.find((n) => n.id === id) || null : null;
  }

  function findEdge(id) {
    return state.graph ? state.graph.edges.find((e) => e.id === id) || null : null;
  }

  function subscriptionMode(topic, sub) {
    const t = state.topics.get(topic);
    const s = t && (t.subscriptions || []).find((x) => x.name === sub);
    return s && s.config ? s.config.mode : null;
  }

  // ---------------------------------------------------------------------------------------
  // API
  // ---------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
      this.detail = detail;
    }
  }

  /**
   * A JSON request to the broker (same origin). Sends the bearer token when one is set.
   * Rejects with ApiError carrying the problem's `detail`; an abort by `signal` rejects with
   * the DOMException AbortError as fetch does.
   */
  async function api(path, { method = 'GET', body, signal, timeoutMs = REQUEST_TIMEOUT_MS } = {}) {
    const headers = { Accept: 'application/json, application/problem+json' };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';

    const ctl = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => { timedOut = true; ctl.abort(); }, timeoutMs);
    const forward = () => ctl.abort();
    if (signal) {
      if (signal.aborted) ctl.abort();
      else signal.addEventListener('abort', forward, { once: true });
    }
    try {
      let resp;
      try {
        resp = await fetch(path, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: ctl.signal,
          cache: 'no-store',
          credentials: 'same-origin',
        });
      } catch (err) {
        if (timedOut) throw new ApiError(0, `The broker did not answer within ${timeoutMs / 1000} s.`);
        if (err && err.name === 'AbortError') throw err;
        throw new ApiError(0, 'The broker cannot be reached (network error).');
      }
      const text = await resp.text();
      let json = null;
      if (text) {
        try { json = JSON.parse(text); } catch (_) { json = null; }
      }
      if (!resp.ok) {
        const detail = (json && (json.detail || json.title)) || resp.statusText || `HTTP ${resp.status}`;
        throw new ApiError(resp.status, String(detail));
      }
      return json;
    } finally {
      clearTimeout(timer);
      if (signal) signal.removeEventListener('abort', forward);
    }
  }

  const isAuthError = (err) => err instanceof ApiError && (err.status === 401 || err.status === 403);
  const errorText = (err) => (err instanceof ApiError ? err.detail : String((err && err.message) || err));
  const enc = encodeURIComponent;
  const subPath = (topic, sub) => `/v1/topics/${enc(topic)}/subscriptions/${enc(sub)}`;

  // ---------------------------------------------------------------------------------------
  // Banner and live indicator
  // ---------------------------------------------------------------------------------------

  const banner = { el: $('#banner'), text: $('#banner-text'), kind: '' };

  function showBanner(kind, message) {
    banner.kind = kind;
    setText(banner.text, message);
    banner.el.dataset.kind = kind;
    banner.el.hidden = false;
  }

  function clearBanner(kind) {
    if (!kind || banner.kind === kind) {
      banner.el.hidden = true;
      banner.kind = '';
    }
  }

  $('#banner-close').addEventListener('click', () => clearBanner());

  function authMessage(err) {
    const what = err.status === 401 ? 'needs a token' : 'refused this token';
    return `The broker ${what} (${err.status}: ${err.detail}). Enter a token with admin on * in the Token field above.`;
  }

  function setLive(kind, text, title) {
    const el = $('#live');
    el.dataset.state = kind;
    setText($('#live-text'), text);
    el.title = title || '';
  }

  // ---------------------------------------------------------------------------------------
  // Header: window selector, token, dropped counters
  // ---------------------------------------------------------------------------------------

  function renderWindowButtons() {
    for (const b of document.querySelectorAll('[data-window]')) {
      b.setAttribute('aria-pressed', String(b.dataset.window === state.window));
    }
  }

  for (const b of document.querySelectorAll('[data-window]')) {
    b.addEventListener('click', () => {
      if (state.window === b.dataset.window) return;
      state.window = b.dataset.window;
      store.set('switchboard.window', state.window);
      renderWindowButtons();
      refreshNow();
      if (state.selected) {
        // The sections name the window, and the history is per window: start the panel anew.
        buildDetail();
        updateDetail();
        loadHistory();
        loadDetailExtra();
      }
    });
  }

  const tokenInput = $('#token-input');
  tokenInput.value = state.token;

  function renderTokenState() {
    setText($('#token-state'), state.token ? 'set' : '');
    $('#token-clear').hidden = !state.token;
  }

  $('#token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    state.token = tokenInput.value.trim();
    store.set('switchboard.token', state.token);
    renderTokenState();
    tokenInput.classList.remove('needs-token');
    clearBanner('auth');
    refreshNow();
    loadTopics();
  });

  $('#token-clear').addEventListener('click', () => {
    state.token = '';
    tokenInput.value = '';
    store.set('switchboard.token', null);
    renderTokenState();
    refreshNow();
  });

  function renderDropped(g) {
    const el = $('#dropped');
    const d = g.dropped || {};
    const parts = [
      ['nodes', 'node'], ['edges', 'edge'], ['pending', 'pending span'],
      ['unpaired', 'unpaired span'], ['invalid_names', 'invalid name'],
    ]
      .filter(([k]) => d[k] > 0)
      .map(([k, one]) => {
        const n = d[k];
        return h('span', { class: 'dropped-item', 'data-dropped': k },
          h('strong', { text: fmtCount(n) }), ` ${one}${n === 1 ? '' : 's'}`);
      });
    el.hidden = parts.length === 0;
    fill(el, ...(parts.length ? [h('span', { class: 'dropped-label', text: 'Dropped' }), ...parts] : []));
  }

  function renderSummary(g) {
    const count = (kind) => g.nodes.filter((n) => n.kind === kind).length;
    const congested = g.nodes.filter((n) => n.congested && n.congested.length).length
      + g.edges.filter((e) => e.congested && e.congested.length).length;
    const items = [
      `${count('service')} services`,
      `${count('topic')} topics`,
      `${count('subscription')} subscriptions`,
      `${g.edges.length} edges`,
    ];
    if (g.pending_spans > 0) items.push(`${fmtCount(g.pending_spans)} spans pending`);
    const el = $('#map-summary');
    fill(el,
      h('span', { text: items.join(' · ') }),
      congested ? h('span', { class: 'summary-alert', text: `⚠ ${congested} congested` }) : null,
    );
    if (g.nodes.length) $('#map-empty').hidden = true;
    else setMapMessage('No services yet.', 'The map fills in as services send traces to /v1/traces and the broker sees publishes and deliveries.');
  }

  /** The message in the middle of the map while there is nothing to draw. */
  function setMapMessage(title, text) {
    setText($('#map-empty-title'), title);
    setText($('#map-empty-text'), text || '');
    $('#map-empty').hidden = false;
  }

  // ---------------------------------------------------------------------------------------
  // The map (Cytoscape)
  // ---------------------------------------------------------------------------------------

  const measureCtx = document.createElement('canvas').getContext('2d');
  function textWidth(s, px, weight) {
    measureCtx.font = `${weight} ${px}px ${FONT}`;
    return measureCtx.measureText(s).width;
  }

  function nodeData(n) {
    const congested = (n.congested || []).length > 0;
    const health = nodeHealth(n);
    const lines = [congested ? `⚠ ${n.name}` : n.name];
    if (congested) lines.push([...new Set(n.congested.map((c) => congestionLabel(c.kind)))].join(' · '));
    const label = lines.join('\n');
    let w;
    let hgt;
    if (n.kind === 'subscription') {
      w = 26; hgt = 24; // small hexagon, the label sits below it
    } else {
      const tw = Math.max(...lines.map((l, i) => textWidth(l, 14, i === 0 ? 600 : 500)));
      w = Math.ceil(tw) + (n.kind === 'topic' ? 40 : 28);
      hgt = congested ? 54 : 38;
    }
    return {
      id: n.id,
      kind: n.kind,
      name: n.name,
      label,
      w,
      h: hgt,
      health,
      color: COLORS[health],
      congested,
      virtual: !!n.virtual_node,
    };
  }

  /** Edge width by rate: log scale, 1 px (idle) to 10 px (10k/s and more). */
  function edgeWidth(rate) {
    const w = 1 + 2.25 * Math.log10(1 + Math.max(0, rate || 0));
    return Math.max(1, Math.min(10, Math.round(w * 10) / 10));
  }

  function edgeLabel(e) {
    const parts = [fmtRate(e.rate)];
    const e2e = edgeE2e(e, 'p99_ms');
    const p99 = edgeP(e, 'p99_ms');
    if (e.kind === 'consume' && isNum(e2e)) parts.push(`e2e p99 ${fmtMsShort(e2e)}`);
    else if (isNum(p99)) parts.push(`p99 ${fmtMsShort(p99)}`);
    if (e.error_rate >= WARN_ERRORS) parts.push(`${fmtPct(e.error_rate)} err`);
    const line = parts.join(' · ');
    if (e.congested && e.congested.length) {
      // Deliver and consume edges share their subscription's findings, which its node's
      // callout already names: the edge only gets the ⚠, so the two labels do not repeat.
      const sub = e.kind === 'deliver' ? e.target : e.kind === 'consume' ? e.source : null;
      const node = sub && findNode(sub);
      const same = node && sameFindings(node.congested, e.congested);
      if (same) return `⚠ ${line}`;
      const kinds = [...new Set(e.congested.map((c) => congestionLabel(c.kind)))].join(' · ');
      return `⚠ ${kinds}\n${line}`;
    }
    return line;
  }

  function edgeShortLabel(e) {
    return `${e.congested && e.congested.length ? '⚠ ' : ''}${fmtRate(e.rate)}`;
  }

  function sameFindings(a, b) {
    const kinds = (l) => [...new Set((l || []).map((c) => c.kind))].sort().join();
    return kinds(a) === kinds(b);
  }

  function edgeData(e) {
    const health = edgeHealth(e);
    const width = edgeWidth(e.rate);
    return {
      id: e.id,
      source: e.source,
      target: e.target,
      kind: e.kind,
      // The label drawn is `full`, or `short` where the full one is longer than the edge
      // (see fitEdgeLabels).
      full: edgeLabel(e),
      short: edgeShortLabel(e),
      width,
      // Cytoscape scales arrow heads with the line width; keep them readable at both ends.
      arrow: Math.max(0.7, Math.min(1.3, 1.6 / Math.sqrt(width))),
      health,
      color: COLORS[health],
      congested: (e.congested || []).length > 0,
    };
  }


  function cyStyle() {
    return [
      {
        selector: 'node',
        style: {
          label: 'data(label)',
          width: 'data(w)',
          height: 'data(h)',
          shape: 'round-rectangle',
          'font-family': FONT,
          'font-size': 14,
          'font-weight': 600,
          color: '#172033',
          'text-valign': 'center',
          'text-halign': 'center',
          'text-wrap': 'wrap',
          'text-max-width': '260px',
          'line-height': 1.25,
          'background-color': '#ffffff',
          'border-width': 2,
          'border-color': 'data(color)',
          'transition-property': 'border-color, border-width, opacity',
          'transition-duration': '250ms',
        },
      },
      { selector: 'node[kind = "topic"]', style: { shape: 'barrel', 'background-color': '#efeafd' } },
      {
        selector: 'node[kind = "subscription"]',
        style: {
          shape: 'hexagon',
          'background-color': '#e3f4ec',
          'text-valign': 'bottom',
          'text-margin-y': 5,
          'font-size': 12,
          'font-weight': 500,
          color: '#344054',
          'text-background-color': '#f7f9fc',
          'text-background-opacity': 0.85,
          'text-background-padding': 2,
          'text-background-shape': 'roundrectangle',
        },
      },
      {
        selector: 'node[?virtual]',
        style: { 'border-style': 'dashed', 'background-color': '#f4f5f7', color: '#475467', 'font-style': 'italic' },
      },
      {
        // The congestion callout: a thick red border, and the ⚠ line in the label.
        selector: 'node[?congested]',
        style: { 'border-width': 5, 'border-color': COLORS.crit, color: '#a0180e' },
      },
      {
        selector: 'edge',
        style: {
          'curve-style': 'bezier',
          'control-point-step-size': 36,
          width: 'data(width)',
          'line-color': 'data(color)',
          'target-arrow-color': 'data(color)',
          'target-arrow-shape': 'triangle',
          'arrow-scale': 'data(arrow)',
          label: 'data(label)',
          'font-family': FONT,
          'font-size': 11,
          // Zoomed far out, edge labels would be an unreadable smear: hide them below 6 px.
          'min-zoomed-font-size': 6,
          'text-rotation': 'autorotate',
          color: '#344054',
          'text-wrap': 'wrap',
          'text-background-color': '#ffffff',
          'text-background-opacity': 0.9,
          'text-background-padding': 2,
          'text-background-shape': 'roundrectangle',
          'transition-property': 'line-color, target-arrow-color, width, opacity',
          'transition-duration': '250ms',
        },
      },
      {
        // Async hops (publish, deliver, consume): dashed, with an open arrow head.
        selector: 'edge[kind != "sync"]',
        style: { 'line-style': 'dashed', 'line-dash-pattern': [7, 4], 'target-arrow-shape': 'vee' },
      },
      {
        // The congestion callout of an edge: a halo along it, and the ⚠ in its label.
        selector: 'edge[?congested]',
        style: {
          'underlay-color': 'data(color)',
          'underlay-opacity': 0.18,
          'underlay-padding': 5,
          color: '#a0180e',
          'font-weight': 600,
        },
      },
      // A climbing latency alone is a warning: its callout is amber.
      { selector: 'edge[?congested][health = "warn"]', style: { color: '#8a4b00' } },
      {
        selector: ':selected',
        style: { 'overlay-color': COLORS.select, 'overlay-opacity': 0.16, 'overlay-padding': 7 },
      },
      { selector: 'node:selected', style: { 'border-color': COLORS.select } },
      { selector: '.faded', style: { opacity: 0.38 } },
    ];
  }

  let cy = null;

  /** Viewport changes the page makes itself (fitting, revealing), told apart from the user's. */
  const ownViewport = { active: false, until: 0 };

  function initMap() {
    if (typeof window.cytoscape !== 'function') {
      showBanner('vendor', 'The graph library (vendor/cytoscape.min.js) did not load; the tables below still work.');
      return;
    }
    // cytoscape-dagre registers itself with window.cytoscape when it loads after it.
    if (!window.cytoscape('layout', 'dagre') && window.cytoscapeDagre) window.cytoscape.use(window.cytoscapeDagre);

    cy = window.cytoscape({
      container: $('#map'),
      style: cyStyle(),
      minZoom: 0.05,
      maxZoom: 3,
      boxSelectionEnabled: false,
      selectionType: 'single',
      autoungrabify: false,
    });

    cy.on('tap', 'node, edge', (ev) => {
      const ele = ev.target;
      select(ele.isNode() ? 'node' : 'edge', ele.id(), { from: 'map' });
    });
    cy.on('tap', (ev) => {
      if (ev.target === cy) clearSelection();
    });
    // Once the viewport moves by anything but fitView() (a drag, the wheel, a pinch, a
    // script), the page stops fitting the graph on re-layouts: the user's zoom and pan stay.
    cy.on('viewport', () => {
      if (!ownViewport.active && Date.now() > ownViewport.until) state.userMovedViewport = true;
    });
    cy.on('mouseover', 'node, edge', () => { $('#map').style.cursor = 'pointer'; });
    cy.on('mouseout', 'node, edge', () => { $('#map').style.cursor = ''; });
    cy.on('resize', () => { if (!state.userMovedViewport) fitView(false); });
    cy.on('dragfree', 'node', () => fitEdgeLabels());
  }

  function moveViewport(target, animate) {
    if (animate) {
      ownViewport.until = Date.now() + 450;
      cy.animate(target, { duration: 300, easing: 'ease-in-out-cubic' });
    } else {
      ownViewport.active = true;
      try { cy.viewport(target); } finally { ownViewport.active = false; }
    }
  }

  /** Fits the graph between the overlays (summary on top, legend at the bottom), at most 1.2×. */
  function fitView(animate) {
    if (!cy || cy.elements().empty()) return;
    const bb = cy.elements().boundingBox();
    const pad = { top: 46, bottom: 58, side: 28 };
    const w = cy.width() - 2 * pad.side;
    const hgt = cy.height() - pad.top - pad.bottom;
    const zoom = Math.max(cy.minZoom(), Math.min(1.2, w / Math.max(1, bb.w), hgt / Math.max(1, bb.h)));
    const pan = {
      x: cy.width() / 2 - zoom * (bb.x1 + bb.w / 2),
      y: pad.top + hgt / 2 - zoom * (bb.y1 + bb.h / 2),
    };
    moveViewport({ zoom, pan }, animate);
  }

  function runLayout(first) {
    if (!cy || cy.nodes().empty()) return;
    const hasDagre = !!window.cytoscape('layout', 'dagre');
    const animate = !first && cy.nodes().length <= 150;
    const opts = hasDagre
      ? {
        name: 'dagre',
        rankDir: 'LR',
        ranker: 'network-simplex',
        nodeSep: 40,
        rankSep: 64,
        edgeSep: 18,
        nodeDimensionsIncludeLabels: true,
      }
      : { name: 'breadthfirst', directed: true, spacingFactor: 1.2 };
    const layout = cy.layout(Object.assign(opts, {
      fit: false,
      animate,
      animationDuration: 350,
      animationEasing: 'ease-in-out-cubic',
    }));
    layout.one('layoutstop', () => {
      fitEdgeLabels();
      if (first || !state.userMovedViewport) fitView(!first);
    });
    layout.run();
  }

  /** Brings the map in line with the graph: updates, adds and removes elements in place. */
  function updateMap(g) {
    if (!cy) return;
    const nodeIds = new Set(g.nodes.map((n) => n.id));
    // An edge whose end the graph does not list (it should not happen) gets a bare node, as
    // Cytoscape refuses edges to nowhere.
    const extraNodes = [];
    for (const e of g.edges) {
      for (const end of [e.source, e.target]) {
        if (!nodeIds.has(end)) {
          nodeIds.add(end);
          extraNodes.push({ id: end, kind: kindOfId(end) || 'service', name: nameOfId(end), rate_in: 0, rate_out: 0, errors_per_second: 0, virtual_node: true, congested: [] });
        }
      }
    }
    const nodes = g.nodes.concat(extraNodes);
    const wanted = new Set([...nodeIds, ...g.edges.map((e) => e.id)]);
    const key = [...nodeIds].sort().join('\n') + '\n--\n' + g.edges.map((e) => e.id).sort().join('\n');
    const first = state.layoutKey === '';

    cy.batch(() => {
      cy.elements().forEach((ele) => {
        if (!wanted.has(ele.id())) cy.remove(ele);
      });
      const added = [];
      for (const n of nodes) {
        const data = nodeData(n);
        const ele = cy.getElementById(n.id);
        if (ele.nonempty()) ele.data(data);
        else added.push({ group: 'nodes', data, position: spawnPosition(n, g) });
      }
      if (added.length) cy.add(added);
      const addedEdges = [];
      for (const e of g.edges) {
        const data = edgeData(e);
        const ele = cy.getElementById(e.id);
        if (ele.nonempty()) ele.data(data);
        else addedEdges.push({ group: 'edges', data: Object.assign(data, { label: data.full }) });
      }
      if (addedEdges.length) cy.add(addedEdges);
    });

    fitEdgeLabels();
    if (key !== state.layoutKey) {
      state.layoutKey = key;
      runLayout(first);
    }
    applyFocus();
  }

  /**
   * Labels are drawn along their edges; where an edge is shorter than its full label, it gets
   * the short one (the rate) so labels do not run over the nodes. The full figures are in the
   * tables and the detail panel.
   */
  function fitEdgeLabels() {
    if (!cy) return;
    cy.batch(() => {
      cy.edges().forEach((edge) => {
        const full = edge.data('full');
        const src = edge.sourceEndpoint();
        const dst = edge.targetEndpoint();
        const length = Math.hypot(dst.x - src.x, dst.y - src.y);
        const widest = Math.max(...String(full).split('\n').map((l) => textWidth(l, 11, 400)));
        const label = widest + 10 <= length ? full : edge.data('short');
        if (edge.data('label') !== label) edge.data('label', label);
      });
    });
  }

  /** A new node starts next to a neighbour already on the map, so the layout animation is short. */
  function spawnPosition(n, g) {
    for (const e of g.edges) {
      const other = e.source === n.id ? e.target : e.target === n.id ? e.source : null;
      if (!other) continue;
      const o = cy.getElementById(other);
      if (o.nonempty()) {
        const p = o.position();
        return { x: p.x + (e.source === n.id ? -60 : 60), y: p.y + 30 };
      }
    }
    const ext = cy.extent();
    return { x: (ext.x1 + ext.x2) / 2, y: (ext.y1 + ext.y2) / 2 };
  }

  /** Fades what is not next to the selected element, and marks the selection on the map. */
  function applyFocus() {
    if (!cy) return;
    cy.batch(() => {
      cy.elements().removeClass('faded');
      const sel = state.selected ? cy.getElementById(state.selected.id) : null;
      if (!sel || sel.empty()) {
        cy.elements(':selected').unselect();
        return;
      }
      if (!sel.selected()) {
        cy.elements(':selected').unselect();
        sel.select();
      }
      const keep = sel.isNode() ? sel.closedNeighborhood() : sel.union(sel.connectedNodes());
      cy.elements().not(keep).addClass('faded');
    });
  }

  $('#btn-fit').addEventListener('click', () => {
    state.userMovedViewport = false;
    fitView(true);
  });
  $('#btn-layout').addEventListener('click', () => {
    state.userMovedViewport = false;
    runLayout(false);
  });

  // ---------------------------------------------------------------------------------------
  // Congestion panel
  // ---------------------------------------------------------------------------------------

  function renderCongestion(g) {
    const items = [];
    for (const n of g.nodes) {
      if (n.congested && n.congested.length) items.push({ type: 'node', id: n.id, kind: n.kind, title: n.name, findings: n.congested, health: nodeHealth(n) });
    }
    for (const e of g.edges) {
      if (!e.congested || !e.congested.length) continue;
      // A deliver or consume edge shares its subscription's findings: list it, but say so
      // instead of repeating them.
      const sub = e.kind === 'deliver' ? e.target : e.kind === 'consume' ? e.source : null;
      const node = sub && g.nodes.find((n) => n.id === sub);
      const sharedWith = node && sameFindings(node.congested, e.congested) ? node.name : null;
      items.push({ type: 'edge', id: e.id, kind: e.kind, title: edgeTitle(e), findings: e.congested, health: edgeHealth(e), sharedWith });
    }
    items.sort((a, b) => HEALTH_RANK[b.health] - HEALTH_RANK[a.health]
      || (a.type === b.type ? 0 : a.type === 'node' ? -1 : 1)
      || a.id.localeCompare(b.id));

    setText($('#congestion-count'), String(items.length));
    $('#congestion-count').dataset.alert = items.length ? 'true' : 'false';
    const list = $('#congestion-list');
    if (!items.length) {
      fill(list, h('li', { class: 'congestion-none' },
        h('span', { class: 'ok-mark', 'aria-hidden': 'true', text: '✓' }),
        `Nothing congested over the last ${g.window || state.window}.`));
      return;
    }
    const selectedId = state.selected ? state.selected.id : null;
    const focused = list.contains(document.activeElement) ? document.activeElement.getAttribute('data-congested-id') : null;
    fill(list, ...items.map((it) => h('li', {
      class: `congestion-item health-${it.health}${it.id === selectedId ? ' is-selected' : ''}`,
      'data-congested-id': it.id,
      tabindex: 0,
      role: 'button',
      title: it.id,
      onclick: () => select(it.type, it.id, { from: 'list' }),
      onkeydown: (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); select(it.type, it.id, { from: 'list' }); } },
    },
    h('div', { class: 'congestion-head' },
      h('span', { class: `kind-badge kind-${it.kind}`, text: it.kind }),
      h('span', { class: 'congestion-title', text: it.title })),
    it.sharedWith
      ? h('div', { class: 'findings shared', title: it.findings.map((c) => `${congestionLabel(c.kind)}: ${c.detail}`).join('\n') },
        h('span', { class: 'finding-kind', text: `⚠ ${[...new Set(it.findings.map((c) => congestionLabel(c.kind)))].join(' · ')}` }),
        h('span', { class: 'finding-detail', text: ` — as ${it.sharedWith} above` }))
      : h('ul', { class: 'findings' }, it.findings.map((c) => h('li', null,
        h('span', { class: 'finding-kind', 'data-kind': c.kind, text: `⚠ ${congestionLabel(c.kind)}` }),
        h('span', { class: 'finding-detail', text: c.detail || '' })))))));
    // The list is rebuilt every refresh: keep the keyboard focus on the same item.
    if (focused) {
      const again = [...list.children].find((li) => li.getAttribute('data-congested-id') === focused);
      if (again) again.focus();
    }
  }

  // ---------------------------------------------------------------------------------------
  // Tables
  // ---------------------------------------------------------------------------------------

  const pill = (health) => ({ pill: health, text: HEALTH_LABELS[health] || health });

  /**
   * Makes `tbody` show `rows` in order, reusing the row elements by key so refreshes do not
   * flicker or lose the hover. A row: { key, attr, cells, className, hidden }; a cell: a
   * string, or { text, cls, title, pill, badge, mono }.
   */
  function renderRows(tbody, rows) {
    if (!tbody._rows) tbody._rows = new Map();
    const existing = tbody._rows;
    const seen = new Set();
    rows.forEach((r, i) => {
      seen.add(r.key);
      let tr = existing.get(r.key);
      if (!tr) {
        tr = h('tr', { tabindex: 0 });
        tr.setAttribute(r.attr, r.key);
        existing.set(r.key, tr);
      }
      while (tr.cells.length < r.cells.length) tr.appendChild(document.createElement('td'));
      r.cells.forEach((c, j) => setCell(tr.cells[j], c));
      if (tr.className !== (r.className || '')) tr.className = r.className || '';
      tr.setAttribute('aria-selected', String(!!r.selected));
      tr.hidden = !!r.hidden;
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    });
    for (const [key, tr] of existing) {
      if (!seen.has(key)) {
        tr.remove();
        existing.delete(key);
      }
    }
  }

  function setCell(td, c) {
    const spec = typeof c === 'object' && c !== null ? c : { text: c };
    const sig = JSON.stringify(spec);
    if (td._sig === sig) return;
    td._sig = sig;
    td.className = [spec.cls, spec.num ? 'num' : '', spec.mono ? 'mono' : ''].filter(Boolean).join(' ');
    if (spec.title) td.title = spec.title;
    else td.removeAttribute('title');
    if (spec.pill) fill(td, h('span', { class: `pill health-${spec.pill}`, text: spec.text }));
    else if (spec.badge) fill(td, h('span', { class: `kind-badge kind-${spec.badge}`, text: spec.text }));
    else if (spec.parts) {
      fill(td, ...spec.parts.map((p) => (typeof p === 'string' ? p : h('span', { class: p.cls, text: p.text }))));
    } else td.textContent = spec.text === undefined || spec.text === null ? '' : String(spec.text);
  }

  function matchesFilter(...texts) {
    const f = state.filter;
    return !f || texts.some((t) => t && String(t).toLowerCase().includes(f));
  }

  function sortRows(items, sort, valueOf) {
    const { key, dir } = sort;
    return items.slice().sort((a, b) => {
      const va = valueOf(a, key);
      const vb = valueOf(b, key);
      if (va === vb) return a.id.localeCompare(b.id);
      if (va === null || va === undefined) return 1;
      if (vb === null || vb === undefined) return -1;
      return (typeof va === 'string' ? va.localeCompare(vb) : va - vb) * dir;
    });
  }

  function renderEdgesTable(g) {
    const sel = state.selected && state.selected.type === 'edge' ? state.selected.id : null;
    const value = (e, k) => {
      switch (k) {
        case 'id': return e.id;
        case 'kind': return e.kind;
        case 'rate': return e.rate;
        case 'error_rate': return e.error_rate;
        case 'p50': return edgeP(e, 'p50_ms');
        case 'p95': return edgeP(e, 'p95_ms');
        case 'p99': return edgeP(e, 'p99_ms');
        case 'e2e': return edgeE2e(e, 'p99_ms');
        case 'health': return HEALTH_RANK[edgeHealth(e)];
        default: return null;
      }
    };
    const edges = sortRows(g.edges, state.sort.edges, value);
    renderRows($('#edges-table tbody'), edges.map((e) => {
      const health = edgeHealth(e);
      return {
        key: e.id,
        attr: 'data-edge-id',
        selected: e.id === sel,
        className: e.id === sel ? 'is-selected' : '',
        hidden: !matchesFilter(e.id),
        cells: [
          { parts: [{ cls: 'edge-ends', text: edgeTitle(e) }, { cls: 'edge-id', text: e.id }], title: e.id },
          { badge: e.kind, text: e.kind },
          { text: fmtRate(e.rate), num: true },
          { text: fmtPct(e.error_rate), num: true, cls: e.error_rate >= CRIT_ERRORS ? 'txt-crit' : e.error_rate >= WARN_ERRORS ? 'txt-warn' : '' },
          { text: fmtMs(edgeP(e, 'p50_ms')), num: true },
          { text: fmtMs(edgeP(e, 'p95_ms')), num: true },
          { text: fmtMs(edgeP(e, 'p99_ms')), num: true },
          { text: fmtMs(edgeE2e(e, 'p99_ms')), num: true },
          Object.assign(pill(health), e.congested && e.congested.length
            ? { title: e.congested.map((c) => `${congestionLabel(c.kind)}: ${c.detail}`).join('\n') } : {}),
        ],
      };
    }));
    setText($('#count-edges'), String(g.edges.length));
    $('#panel-edges .empty-row').hidden = g.edges.length > 0;
  }

  function renderServicesTable(g) {
    const sel = state.selected && state.selected.type === 'node' ? state.selected.id : null;
    const services = g.nodes.filter((n) => n.kind !== 'topic' && n.kind !== 'subscription');
    const value = (n, k) => {
      switch (k) {
        case 'name': return n.name;
        case 'rate_in': return n.rate_in;
        case 'rate_out': return n.rate_out;
        case 'errors': return n.errors_per_second;
        case 'health': return HEALTH_RANK[nodeHealth(n)];
        default: return null;
      }
    };
    renderRows($('#services-table tbody'), sortRows(services, state.sort.services, value).map((n) => ({
      key: n.id,
      attr: 'data-node-id',
      selected: n.id === sel,
      className: n.id === sel ? 'is-selected' : '',
      hidden: !matchesFilter(n.id),
      cells: [
        { parts: [{ cls: 'strong', text: n.name }, n.virtual_node ? { cls: 'tag', text: 'virtual' } : ''], title: n.id },
        { text: fmtRate(n.rate_in), num: true },
        { text: fmtRate(n.rate_out), num: true },
        { text: fmtNumber(n.errors_per_second), num: true },
        pill(nodeHealth(n)),
        { text: (n.congested || []).map((c) => congestionLabel(c.kind)).join(', '), cls: 'txt-crit' },
      ],
    })));
    setText($('#count-services'), String(services.length));
    $('#panel-services .empty-row').hidden = services.length > 0;
  }

  function renderTopicsTable(g) {
    const sel = state.selected && state.selected.type === 'node' ? state.selected.id : null;
    // Topics and subscriptions from the graph and from /v1/topics, merged: the graph names
    // them at once, the topic listing adds modes, partitions and those without traffic.
    const topics = new Map();
    const topicEntry = (name) => {
      if (!topics.has(name)) topics.set(name, { name, subs: new Set() });
      return topics.get(name);
    };
    for (const n of g.nodes) {
      if (n.kind === 'topic') topicEntry(n.name);
      if (n.kind === 'subscription') {
        const { topic, sub } = splitSubscription(n.name);
        topicEntry(topic).subs.add(sub);
      }
    }
    for (const t of state.topics.values()) {
      const entry = topicEntry(t.name);
      for (const s of t.subscriptions || []) entry.subs.add(s.name);
    }

    const rows = [];
    let subCount = 0;
    for (const t of [...topics.values()].sort((a, b) => a.name.localeCompare(b.name))) {
      const id = `topic:${t.name}`;
      const node = findNode(id);
      const info = state.topics.get(t.name);
      const parts = info && info.partitions ? info.partitions.length : null;
      const subs = [...t.subs].sort();
      const topicVisible = matchesFilter(id, ...subs.map((s) => `${t.name}/${s}`));
      rows.push({
        key: id,
        attr: 'data-node-id',
        selected: id === sel,
        className: `topic-row${id === sel ? ' is-selected' : ''}`,
        hidden: !topicVisible,
        cells: [
          { text: t.name, cls: 'strong' },
          {
            text: `${subs.length} subscription${subs.length === 1 ? '' : 's'}${parts === null ? '' : ` · ${parts} partition${parts === 1 ? '' : 's'}`}`,
            cls: 'muted nowrap',
          },
          '', '', '', '', '', '',
          { text: node ? fmtRate(node.rate_in) : '—', num: true },
          { text: node ? fmtRate(node.rate_out) : '—', num: true },
          node ? pill(nodeHealth(node)) : { text: '' },
        ],
      });
      for (const s of subs) {
        subCount += 1;
        const sid = `subscription:${t.name}/${s}`;
        const sn = findNode(sid);
        const gauges = sn && sn.subscription;
        const mode = subscriptionMode(t.name, s);
        rows.push({
          key: sid,
          attr: 'data-node-id',
          selected: sid === sel,
          className: `sub-row${sid === sel ? ' is-selected' : ''}`,
          hidden: !topicVisible || !matchesFilter(sid, id),
          cells: [
            { text: t.name, cls: 'muted' },
            { text: s, cls: 'strong' },
            mode ? { badge: mode, text: mode } : { text: '—', cls: 'muted' },
            { text: gauges ? fmtCount(gauges.backlog) : '—', num: true },
            { text: gauges ? fmtCount(gauges.lag) : '—', num: true },
            { text: gauges ? fmtCount(gauges.in_flight) : '—', num: true },
            { text: gauges ? fmtCount(gauges.dead_lettered) : '—', num: true, cls: gauges && gauges.dead_lettered > 0 ? 'txt-warn' : '' },
            { text: gauges ? fmtCount(gauges.consumers) : '—', num: true, cls: gauges && gauges.consumers === 0 ? 'txt-crit' : '' },
            { text: sn ? fmtRate(sn.rate_in) : '—', num: true },
            { text: sn ? fmtRate(sn.rate_out) : '—', num: true },
            sn ? Object.assign(pill(nodeHealth(sn)), sn.congested && sn.congested.length
              ? { title: sn.congested.map((c) => `${congestionLabel(c.kind)}: ${c.detail}`).join('\n') } : {}) : { text: '' },
          ],
        });
      }
    }
    renderRows($('#topics-table tbody'), rows);
    setText($('#count-topics'), `${topics.size} · ${subCount}`);
    $('#count-topics').title = `${topics.size} topics · ${subCount} subscriptions`;
    $('#panel-topics .empty-row').hidden = rows.length > 0;
  }

  function renderTables() {
    const g = state.graph;
    if (!g) return;
    renderEdgesTable(g);
    renderServicesTable(g);
    renderTopicsTable(g);
    renderSortMarks();
  }

  function renderSortMarks() {
    for (const [table, sort] of Object.entries(state.sort)) {
      for (const th of document.querySelectorAll(`#${table}-table th[data-sort]`)) {
        const on = th.dataset.sort === sort.key;
        th.setAttribute('aria-sort', on ? (sort.dir > 0 ? 'ascending' : 'descending') : 'none');
      }
    }
  }

  for (const table of ['edges', 'services']) {
    for (const th of document.querySelectorAll(`#${table}-table th[data-sort]`)) {
      th.tabIndex = 0;
      const toggle = () => {
        const s = state.sort[table];
        const numeric = !['id', 'kind', 'name'].includes(th.dataset.sort);
        if (s.key === th.dataset.sort) s.dir = -s.dir;
        else { s.key = th.dataset.sort; s.dir = numeric ? -1 : 1; }
        renderTables();
      };
      th.addEventListener('click', toggle);
      th.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); toggle(); } });
    }
  }

  // Row clicks (delegated): a row with data-edge-id or data-node-id opens the detail panel.
  for (const id of ['edges-table', 'services-table', 'topics-table']) {
    const tbody = document.querySelector(`#${id} tbody`);
    const open = (ev) => {
      const tr = ev.target.closest('tr');
      if (!tr) return;
      if (tr.dataset.edgeId) select('edge', tr.dataset.edgeId, { from: 'table' });
      else if (tr.dataset.nodeId) select('node', tr.dataset.nodeId, { from: 'table' });
    };
    tbody.addEventListener('click', open);
    tbody.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); open(ev); }
    });
  }

  function showTab(tab) {
    state.tab = tab;
    for (const b of document.querySelectorAll('[role="tab"]')) {
      const on = b.dataset.tab === tab;
      b.setAttribute('aria-selected', String(on));
      b.tabIndex = on ? 0 : -1;
    }
    for (const p of document.querySelectorAll('[role="tabpanel"]')) p.hidden = p.id !== `panel-${tab}`;
    if (tab === 'topics') loadTopics();
  }
  for (const b of document.querySelectorAll('[role="tab"]')) b.addEventListener('click', () => showTab(b.dataset.tab));

  $('#table-filter').addEventListener('input', (ev) => {
    state.filter = ev.target.value.trim().toLowerCase();
    renderTables();
  });

  // ---------------------------------------------------------------------------------------
  // Detail panel
  // ---------------------------------------------------------------------------------------

  /**
   * What the open detail panel shows. Its skeleton is built once per selection; refreshes only
   * write new values into `fields`, so buttons in it keep their focus.
   */
  const detail = {
    fields: new Map(),
    congestion: null,
    sparks: null,
    extra: null,
    connections: null,
    missing: null,
    history: null,
    historySeq: 0,
    historyError: null,
    /** The historySeq / extraSeq whose request is under way (0: none). */
    historyBusy: 0,
    extraSeq: 0,
    extraBusy: 0,
  };

  function select(type, id, opts = {}) {
    const changed = !state.selected || state.selected.id !== id || state.selected.type !== type;
    state.selected = { type, id };
    if (changed) buildDetail();
    updateDetail();
    applyFocus();
    renderTables();
    if (state.graph) renderCongestion(state.graph);
    if (opts.from !== 'map') revealOnMap(id);
    loadHistory();
    loadDetailExtra();
    return type === 'edge' ? !!findEdge(id) : !!findNode(id);
  }

  function clearSelection() {
    state.selected = null;
    const panel = $('#detail');
    panel.dataset.selectedId = '';
    setText($('#detail-title'), 'Details');
    $('#detail-close').hidden = true;
    fill($('#detail-body'), h('p', { class: 'muted', text: 'Click a service, topic, subscription or edge on the map or in the tables to see its figures.' }));
    detail.fields.clear();
    applyFocus();
    renderTables();
    if (state.graph) renderCongestion(state.graph);
  }

  $('#detail-close').addEventListener('click', clearSelection);

  /** Pans (never zooms) the map so the element is in view. */
  function revealOnMap(id) {
    if (!cy) return;
    const ele = cy.getElementById(id);
    if (ele.empty()) return;
    const bb = ele.boundingBox();
    const ext = cy.extent();
    if (bb.x1 >= ext.x1 && bb.x2 <= ext.x2 && bb.y1 >= ext.y1 && bb.y2 <= ext.y2) return;
    const c = { x: (bb.x1 + bb.x2) / 2, y: (bb.y1 + bb.y2) / 2 };
    const zoom = cy.zoom();
    moveViewport({ pan: { x: cy.width() / 2 - zoom * c.x, y: cy.height() / 2 - zoom * c.y } }, true);
  }

  /** One figure: a label and a value element carrying data-field (read by browser tests). */
  function figure(label, field, hint) {
    const value = h('span', { class: 'fig-value', 'data-field': field, text: '—' });
    detail.fields.set(field, value);
    return h('div', { class: 'fig', title: hint || null }, h('span', { class: 'fig-label', text: label }), value);
  }

  function setField(field, text, raw) {
    const el = detail.fields.get(field);
    if (!el) return;
    setText(el, text);
    if (raw === null || raw === undefined) el.removeAttribute('data-value');
    else el.setAttribute('data-value', String(raw));
  }

  function section(title, ...children) {
    return h('section', { class: 'detail-section' }, h('h3', { text: title }), ...children);
  }

  function buildDetail() {
    const { type, id } = state.selected;
    detail.fields.clear();
    detail.history = null;
    detail.historyError = null;
    detail.historySeq += 1;
    detail.extraSeq += 1;
    const panel = $('#detail');
    panel.dataset.selectedId = id;
    panel.dataset.selectedType = type;
    $('#detail-close').hidden = false;

    const body = [];
    const kind = type === 'edge' ? (findEdge(id) || {}).kind || id.split(' ')[0] : kindOfId(id);
    setText($('#detail-title'), type === 'edge' ? 'Edge' : kind ? kind[0].toUpperCase() + kind.slice(1) : 'Node');

    detail.missing = h('p', { class: 'notice', hidden: true, text: `Not in the graph over the last ${state.window}: no traffic was seen in this window.` });

    if (type === 'edge') {
      const e = findEdge(id);
      const source = e ? e.source : id.replace(/^\S+ /, '').split(' -> ')[0];
      const target = e ? e.target : id.split(' -> ')[1] || '';
      body.push(h('div', { class: 'detail-title' },
        h('span', { class: `kind-badge kind-${kind}`, text: kind }),
        h('span', { class: 'detail-name', text: `${nameOfId(source)} → ${nameOfId(target)}` }),
        healthPill()));
      body.push(h('div', { class: 'detail-id mono', text: id }));
      body.push(h('div', { class: 'endpoints' },
        nodeLink('From', source), nodeLink('To', target)));
      body.push(detail.missing);
      body.push(h('div', { class: 'figs' },
        figure('Rate', 'rate', 'Calls, messages or deliveries per second over the window'),
        figure('Errors', 'error_rate', 'The share that failed'),
        figure('Redeliveries', 'redelivery_rate', 'Redeliveries per second (deliver edges)'),
        figure('p50', 'p50_ms'), figure('p95', 'p95_ms'), figure('p99', 'p99_ms')));
      if (kind === 'consume') {
        body.push(h('div', { class: 'figs' },
          figure('E2E p50', 'e2e_p50_ms', 'From publish to handled'),
          figure('E2E p95', 'e2e_p95_ms', 'From publish to handled'),
          figure('E2E p99', 'e2e_p99_ms', 'From publish to handled')));
      }
      body.push(h('div', { class: 'meta-line' }, 'Connection type: ', figureInline('connection_type')));
    } else {
      const n = findNode(id);
      const name = n ? n.name : nameOfId(id);
      body.push(h('div', { class: 'detail-title' },
        h('span', { class: `kind-badge kind-${kind}`, text: kind || 'node' }),
        h('span', { class: 'detail-name', text: name }),
        healthPill()));
      body.push(h('div', { class: 'detail-id mono', text: id }));
      body.push(detail.missing);
      body.push(h('div', { class: 'figs four' },
        figure('Rate in', 'rate', 'Per second, over the edges into it'),
        figure('Rate out', 'rate_out', 'Per second, over the edges out of it'),
        figure('Errors', 'error_rate', 'Failures per second over the rate in'),
        figure('Errors/s', 'errors_per_second')));
      if (kind === 'subscription') {
        body.push(h('div', { class: 'figs' },
          figure('Backlog', 'backlog', 'Messages not yet acked or committed'),
          figure('Lag', 'lag', 'From the oldest unfinished message to the newest'),
          figure('In flight', 'in_flight', 'Deliveries whose lease is running'),
          figure('Dead letters', 'dead_lettered', 'Moved to the dead-letter topic so far'),
          figure('Consumers', 'consumers'),
          figure('Credits', 'credits', 'Deliveries the attached consumers accept at once (— when they poll)')));
      }
    }

    detail.congestion = h('div', { class: 'detail-congestion' });
    body.push(detail.congestion);

    const actions = detailActions(type, id, kind);
    if (actions) body.push(actions);

    detail.sparks = h('div', { class: 'sparks' }, h('p', { class: 'muted small', text: 'Loading history…' }));
    body.push(section(`Over the last ${state.window}`, detail.sparks));

    if (type === 'node') {
      detail.extra = h('div', { class: 'extra' });
      if (kind === 'subscription' || kind === 'topic') body.push(section(kind === 'topic' ? 'Partitions' : 'Broker stats', detail.extra));
      detail.connections = h('div', { class: 'connections' });
      body.push(section('Connections', detail.connections));
    } else {
      detail.extra = null;
      detail.connections = null;
    }

    fill($('#detail-body'), ...body);
    $('#detail-body').scrollTop = 0;
  }

  function figureInline(field) {
    const el = h('span', { 'data-field': field, text: '—' });
    detail.fields.set(field, el);
    return el;
  }

  function healthPill() {
    const el = h('span', { class: 'pill', 'data-field': 'health', text: '' });
    detail.fields.set('health', el);
    return el;
  }

  function nodeLink(label, id) {
    return h('button', {
      type: 'button',
      class: 'link-btn',
      title: id,
      onclick: () => select('node', id, { from: 'detail' }),
    }, h('span', { class: 'muted', text: `${label} ` }), h('span', { class: `kind-dot kind-${kindOfId(id)}` }), nameOfId(id));
  }

  function detailActions(type, id, kind) {
    if (type !== 'node') return null;
    const buttons = [];
    if (kind === 'topic') {
      const topic = nameOfId(id);
      buttons.push(h('button', { type: 'button', class: 'btn btn-primary', 'data-action': 'tail', onclick: () => openTail(topic) }, '▶ Tail'));
    }
    if (kind === 'subscription') {
      const { topic, sub } = splitSubscription(id);
      const dl = h('button', { type: 'button', class: 'btn', 'data-action': 'deadletters', onclick: () => openDeadLetters(topic, sub) }, 'Dead letters');
      // Only queue subscriptions have dead letters; hidden until the mode is known.
      dl.hidden = subscriptionMode(topic, sub) !== 'queue';
      detail.fields.set('_deadletters_button', dl);
      buttons.push(dl);
      buttons.push(h('button', { type: 'button', class: 'btn', 'data-action': 'tail', onclick: () => openTail(topic) }, `▶ Tail ${topic}`));
    }
    return buttons.length ? h('div', { class: 'actions' }, buttons) : null;
  }

  /** Writes the graph's current figures into the open detail panel. */
  function updateDetail() {
    if (!state.selected) return;
    const { type, id } = state.selected;
    const item = type === 'edge' ? findEdge(id) : findNode(id);
    if (detail.missing) detail.missing.hidden = !!item || !state.graph;

    const hp = detail.fields.get('health');
    if (type === 'edge') {
      const e = item;
      const health = e ? edgeHealth(e) : 'idle';
      if (hp) { hp.className = `pill health-${health}`; setText(hp, HEALTH_LABELS[health]); }
      setField('rate', fmtRate(e && e.rate), e ? e.rate : null);
      setField('error_rate', fmtPct(e && e.error_rate), e ? e.error_rate : null);
      setField('redelivery_rate', fmtRate(e && e.redelivery_rate), e ? e.redelivery_rate : null);
      for (const q of ['p50_ms', 'p95_ms', 'p99_ms']) {
        const v = e ? edgeP(e, q) : null;
        setField(q, fmtMs(v), v);
        const e2e = e ? edgeE2e(e, q) : null;
        setField(`e2e_${q}`, fmtMs(e2e), e2e);
      }
      setField('connection_type', e ? e.connection_type || 'direct' : '—');
      renderDetailCongestion(e ? e.congested : []);
    } else {
      const n = item;
      const health = n ? nodeHealth(n) : 'idle';
      if (hp) { hp.className = `pill health-${health}`; setText(hp, HEALTH_LABELS[health]); }
      setField('rate', fmtRate(n && n.rate_in), n ? n.rate_in : null);
      setField('rate_out', fmtRate(n && n.rate_out), n ? n.rate_out : null);
      setField('error_rate', fmtPct(n ? nodeErrorShare(n) : null), n ? nodeErrorShare(n) : null);
      setField('errors_per_second', n ? `${fmtNumber(n.errors_per_second)}/s` : '—', n ? n.errors_per_second : null);
      const gauges = n && n.subscription;
      for (const k of ['backlog', 'lag', 'in_flight', 'dead_lettered', 'consumers', 'credits']) {
        const v = gauges ? gauges[k] : null;
        setField(k, fmtCount(v), v);
      }
      if (kindOfId(id) === 'subscription') {
        const { topic, sub } = splitSubscription(id);
        const dl = detail.fields.get('_deadletters_button');
        if (dl && subscriptionMode(topic, sub)) dl.hidden = subscriptionMode(topic, sub) !== 'queue';
      }
      renderDetailCongestion(n ? n.congested : []);
      renderConnections(id);
    }
    renderSparks();
  }

  function renderDetailCongestion(list) {
    if (!detail.congestion) return;
    if (!list || !list.length) {
      detail.congestion.replaceChildren();
      return;
    }
    fill(detail.congestion, h('div', { class: 'callout' },
      h('div', { class: 'callout-title', text: '⚠ Congested' }),
      h('ul', null, list.map((c) => h('li', null,
        h('strong', { text: congestionLabel(c.kind) }), ' — ', c.detail || '')))));
  }

  function renderConnections(id) {
    if (!detail.connections || !state.graph) return;
    const inbound = state.graph.edges.filter((e) => e.target === id);
    const outbound = state.graph.edges.filter((e) => e.source === id);
    const row = (e, other) => h('li', null, h('button', {
      type: 'button',
      class: 'conn',
      title: e.id,
      'data-conn-id': e.id,
      onclick: () => select('edge', e.id, { from: 'detail' }),
    },
    h('span', { class: `health-dot health-${edgeHealth(e)}` }),
    h('span', { class: `kind-badge kind-${e.kind}`, text: e.kind }),
    h('span', { class: 'conn-name', text: nameOfId(other) }),
    h('span', { class: 'conn-rate', text: fmtRate(e.rate) })));
    const sig = JSON.stringify([inbound, outbound].map((l) => l.map((e) => [e.id, e.rate, edgeHealth(e)])));
    if (detail.connections._sig === sig) return;
    detail.connections._sig = sig;
    const active = document.activeElement;
    const focused = detail.connections.contains(active) ? active.getAttribute('data-conn-id') : null;
    fill(detail.connections,
      h('div', { class: 'conn-group' }, h('div', { class: 'conn-head', text: `In (${inbound.length})` }),
        inbound.length ? h('ul', null, inbound.map((e) => row(e, e.source))) : h('p', { class: 'muted small', text: 'Nothing flows in.' })),
      h('div', { class: 'conn-group' }, h('div', { class: 'conn-head', text: `Out (${outbound.length})` }),
        outbound.length ? h('ul', null, outbound.map((e) => row(e, e.target))) : h('p', { class: 'muted small', text: 'Nothing flows out.' })),
    );
    if (focused) {
      const again = [...detail.connections.querySelectorAll('[data-conn-id]')].find((b) => b.getAttribute('data-conn-id') === focused);
      if (again) again.focus();
    }
  }

  async function loadHistory() {
    const seq = detail.historySeq;
    // One request at a time per selection; a new selection does not wait for the old one.
    if (!state.selected || detail.historyBusy === seq) return;
    const { id } = state.selected;
    const window = state.window;
    detail.historyBusy = seq;
    try {
      const hist = await api(`/v1/graph/history?id=${enc(id)}&window=${enc(window)}`);
      if (seq !== detail.historySeq || !state.selected || state.selected.id !== id || window !== state.window) return;
      detail.history = hist;
      detail.historyError = null;
    } catch (err) {
      if (seq !== detail.historySeq) return;
      detail.history = null;
      detail.historyError = err instanceof ApiError && err.status === 404
        ? 'The broker keeps no history for it in this window.'
        : `History unavailable: ${errorText(err)}`;
    } finally {
      if (detail.historyBusy === seq) detail.historyBusy = 0;
    }
    renderSparks();
  }

  function renderSparks() {
    if (!detail.sparks || !state.selected) return;
    const hist = detail.history;
    if (!hist) {
      if (detail.historyError) fill(detail.sparks, h('p', { class: 'muted small', text: detail.historyError }));
      return;
    }
    const charts = [];
    const end = (state.graph && state.graph.at_s) || Math.floor(Date.now() / 1000);
    const span = WINDOW_SECONDS[hist.window] || WINDOW_SECONDS[state.window];
    const range = { t0: end - span, t1: end, label: `−${hist.window || state.window}` };
    const pts = hist.points || [];
    if (pts.length) {
      const series = (f) => pts.map((p) => ({ t: p.at_s, v: f(p) }));
      charts.push(sparkline('Rate', series((p) => p.rate), fmtRate, range, 'rate'));
      charts.push(sparkline('Errors', series((p) => p.error_rate), fmtPct, range, 'errors', { min: 0, color: COLORS.crit }));
      charts.push(sparkline('p99 latency', series((p) => (p.latency ? p.latency.p99_ms : null)), fmtMs, range, 'p99',
        { color: '#7a5af8', second: series((p) => (p.latency ? p.latency.p50_ms : null)), secondLabel: 'p50' }));
      if (pts.some((p) => p.end_to_end)) {
        charts.push(sparkline('E2E p99', series((p) => (p.end_to_end ? p.end_to_end.p99_ms : null)), fmtMs, range, 'e2e_p99', { color: '#0e9384' }));
      }
    }
    const rd = hist.readings || [];
    if (rd.length) {
      const series = (k) => rd.map((r) => ({ t: r.at_s, v: r[k] }));
      charts.push(sparkline('Backlog', series('backlog'), fmtCount, range, 'backlog', { min: 0, color: '#c77700' }));
      charts.push(sparkline('Lag', series('lag'), fmtCount, range, 'lag', { min: 0, color: '#dd2590' }));
      charts.push(sparkline('In flight', series('in_flight'), fmtCount, range, 'in_flight', { min: 0, color: '#1570ef' }));
      if (rd.some((r) => r.dead_lettered > 0)) charts.push(sparkline('Dead-lettered', series('dead_lettered'), fmtCount, range, 'dead_lettered', { min: 0, color: COLORS.crit }));
    }
    if (!charts.length) {
      charts.push(h('p', { class: 'muted small', text: state.selected.type === 'node' && kindOfId(state.selected.id) !== 'subscription'
        ? 'The broker keeps history for edges and subscriptions; pick one of the connections below.'
        : 'No figures in this window yet.' }));
    }
    fill(detail.sparks, ...charts);
  }

  /**
   * A small line chart drawn as SVG: `values` is [{t, v}] (v null for a gap), drawn over the
   * window `range`. The SVG stretches to the panel's width (non-scaling strokes keep lines
   * crisp).
   */
  function sparkline(title, values, fmt, range, key, opts = {}) {
    const W = 300;
    const H = 44;
    const PAD = 3;
    const color = opts.color || COLORS.select;
    const nums = values.map((p) => p.v).concat(opts.second ? opts.second.map((p) => p.v) : []).filter(isNum);
    const lastPoint = [...values].reverse().find((p) => isNum(p.v));
    let lo = opts.min !== undefined ? Math.min(opts.min, ...nums) : Math.min(...nums);
    let hi = Math.max(...nums);
    if (!nums.length) { lo = 0; hi = 1; }
    if (hi === lo) { hi = lo + (lo === 0 ? 1 : Math.abs(lo) * 0.1); }
    const t0 = Math.min(range.t0, ...values.map((p) => p.t));
    const t1 = Math.max(range.t1, ...values.map((p) => p.t));
    const x = (t) => ((t - t0) / Math.max(1, t1 - t0)) * W;
    const y = (v) => H - PAD - ((v - lo) / (hi - lo)) * (H - 2 * PAD);

    const chart = svg('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', class: 'spark-svg', role: 'img', 'aria-label': `${title} over the window` });
    chart.appendChild(svg('line', { x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5, class: 'spark-base' }));

    const segments = (vals) => {
      const out = [];
      let cur = [];
      for (const p of vals) {
        if (isNum(p.v)) cur.push(p);
        else if (cur.length) { out.push(cur); cur = []; }
      }
      if (cur.length) out.push(cur);
      return out;
    };
    const draw = (vals, stroke, cls, area) => {
      for (const seg of segments(vals)) {
        const coords = seg.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`);
        if (seg.length === 1) {
          // A lone point: a short tick so it is visible.
          const px = x(seg[0].t);
          coords.splice(0, 1, `${Math.max(0, px - 3).toFixed(1)},${y(seg[0].v).toFixed(1)}`, `${Math.min(W, px + 3).toFixed(1)},${y(seg[0].v).toFixed(1)}`);
        }
        if (area) {
          const first = coords[0].split(',')[0];
          const last = coords[coords.length - 1].split(',')[0];
          chart.appendChild(svg('polygon', { points: `${first},${H} ${coords.join(' ')} ${last},${H}`, fill: stroke, 'fill-opacity': 0.1, stroke: 'none' }));
        }
        chart.appendChild(svg('polyline', { points: coords.join(' '), fill: 'none', stroke, 'stroke-width': 1.75, 'vector-effect': 'non-scaling-stroke', 'stroke-linejoin': 'round', class: cls }));
      }
    };
    if (opts.second) draw(opts.second, color, 'spark-second', false);
    draw(values, color, 'spark-line', true);

    const tooltip = svg('title');
    tooltip.textContent = `${title}: min ${fmt(nums.length ? Math.min(...nums) : null)}, max ${fmt(nums.length ? Math.max(...nums) : null)}`;
    chart.appendChild(tooltip);

    return h('div', { class: 'spark', 'data-spark': key },
      h('div', { class: 'spark-head' },
        h('span', { class: 'spark-title', text: title }),
        opts.second ? h('span', { class: 'spark-legend', text: `— p99  ┄ ${opts.secondLabel}` }) : null,
        h('span', { class: 'spark-last', text: lastPoint ? fmt(lastPoint.v) : '—' })),
      chart,
      h('div', { class: 'spark-foot' },
        h('span', { text: range.label }),
        h('span', { text: nums.length ? `max ${fmt(Math.max(...nums))}` : 'no data' }),
        h('span', { text: 'now' })));
  }

  /** Subscription stats or topic partitions, straight from the broker, for the open node. */
  async function loadDetailExtra() {
    const seq = detail.extraSeq;
    if (!state.selected || state.selected.type !== 'node' || !detail.extra || detail.extraBusy === seq) return;
    const { id } = state.selected;
    const kind = kindOfId(id);
    if (kind !== 'subscription' && kind !== 'topic') return;
    const target = detail.extra;
    detail.extraBusy = seq;
    try {
      if (kind === 'subscription') {
        const { topic, sub } = splitSubscription(id);
        const stats = await api(`${subPath(topic, sub)}/stats`);
        if (seq !== detail.extraSeq) return;
        renderStats(target, stats, topic, sub);
      } else {
        const topic = await api(`/v1/topics/${enc(nameOfId(id))}`);
        if (seq !== detail.extraSeq) return;
        if (topic && topic.name) state.topics.set(topic.name, topic);
        renderPartitions(target, topic);
      }
    } catch (err) {
      if (seq !== detail.extraSeq) return;
      fill(target, h('p', { class: 'muted small', text: errorText(err) }));
    } finally {
      if (detail.extraBusy === seq) detail.extraBusy = 0;
    }
  }

  function miniTable(head, rows) {
    return h('table', { class: 'mini' },
      h('thead', null, h('tr', null, head.map((c, i) => h('th', { class: i ? 'num' : null, text: c })))),
      h('tbody', null, rows.map((r) => h('tr', null, r.map((c, i) => h('td', { class: i ? 'num' : null, text: c }))))));
  }

  function renderStats(target, s, topic, sub) {
    if (s && s.mode) {
      // The stats know the mode even before /v1/topics has been read.
      const t = state.topics.get(topic);
      if (!t || !(t.subscriptions || []).some((x) => x.name === sub)) {
        const entry = t || { name: topic, partitions: [], subscriptions: [] };
        entry.subscriptions = (entry.subscriptions || []).concat([{ name: sub, config: { mode: s.mode } }]);
        state.topics.set(topic, entry);
      }
      const dl = detail.fields.get('_deadletters_button');
      if (dl) dl.hidden = s.mode !== 'queue';
    }
    const kv = [
      ['Mode', s.mode || '—'], ['Backlog', fmtCount(s.backlog)], ['In flight', fmtCount(s.in_flight)],
      ['Lag', fmtCount(s.lag)], ['Scheduled', fmtCount(s.scheduled)], ['Dead-lettered', fmtCount(s.dead_lettered)],
      ['Consumers', fmtCount(s.consumers)],
    ];
    const parts = s.partitions || [];
    fill(target,
      h('dl', { class: 'kv' }, kv.map(([k, v]) => [h('dt', { text: k }), h('dd', { text: v })])),
      parts.length ? miniTable(['Partition', 'Start', 'End', 'Floor', 'Backlog'],
        parts.map((p) => [String(p.partition), fmtCount(p.start_offset), fmtCount(p.end_offset), fmtCount(p.floor), fmtCount(p.backlog)])) : null,
    );
  }

  function renderPartitions(target, t) {
    const parts = (t && t.partitions) || [];
    const subs = (t && t.subscriptions) || [];
    fill(target,
      parts.length ? miniTable(['Partition', 'Start', 'End', 'Size'],
        parts.map((p) => [String(p.partition), fmtCount(p.start_offset), fmtCount(p.end_offset), fmtBytes(p.size_bytes)]))
        : h('p', { class: 'muted small', text: 'No partitions.' }),
      subs.length ? h('div', { class: 'sub-links' }, h('span', { class: 'muted small', text: 'Subscriptions: ' }),
        subs.map((s) => h('button', {
          type: 'button',
          class: 'chip',
          onclick: () => select('node', `subscription:${t.name}/${s.name}`, { from: 'detail' }),
        }, s.name, s.config && s.config.mode ? h('span', { class: 'chip-sub', text: s.config.mode }) : null))) : null,
    );
  }

  function fmtBytes(n) {
    if (!isNum(n)) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let v = n;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return `${i ? v.toFixed(1) : v} ${units[i]}`;
  }

  // ---------------------------------------------------------------------------------------
  // The sheet: dead letters and live tail
  // ---------------------------------------------------------------------------------------

  const sheet = {
    el: $('#sheet'),
    /** Called when the sheet closes or shows something else (stops a running tail). */
    onClose: null,
  };

  function openSheet(title, sub, kind) {
    closeSheet();
    sheet.el.dataset.kind = kind;
    setText($('#sheet-title'), title);
    setText($('#sheet-sub'), sub);
    $('#sheet-body').replaceChildren();
    sheet.el.hidden = false;
    document.body.classList.add('sheet-open');
    return $('#sheet-body');
  }

  function closeSheet() {
    if (sheet.onClose) {
      const f = sheet.onClose;
      sheet.onClose = null;
      f();
    }
    sheet.el.hidden = true;
    document.body.classList.remove('sheet-open');
  }

  $('#sheet-close').addEventListener('click', closeSheet);
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && !sheet.el.hidden) closeSheet();
  });

  function eventText(ev, key) {
    const v = ev && ev[key];
    return v === undefined || v === null ? '' : String(v);
  }

  function dataPreview(ev) {
    if (!ev) return '';
    if (ev.data_base64 !== undefined) return `base64: ${String(ev.data_base64)}`;
    if (ev.data === undefined) return '';
    return typeof ev.data === 'string' ? ev.data : JSON.stringify(ev.data);
  }

  // --- Dead letters ---

  function openDeadLetters(topic, sub) {
    const body = openSheet('Dead letters', `${topic}/${sub}`, 'deadletters');
    const status = h('div', { class: 'sheet-status', role: 'status', 'aria-live': 'polite' });
    const maxInput = h('input', { type: 'number', min: 1, max: 100000, value: 1000, class: 'num-input', 'aria-label': 'Most dead letters to redrive' });
    const confirmBox = h('div', { class: 'confirm', hidden: true });
    const redriveBtn = h('button', { type: 'button', class: 'btn btn-danger', 'data-action': 'redrive' }, 'Redrive…');
    const refreshBtn = h('button', { type: 'button', class: 'btn' }, 'Refresh');
    const tbody = h('tbody');
    const table = h('table', { class: 'grid compact', 'data-table': 'deadletters' },
      h('thead', null, h('tr', null, ['Offset', 'Event id', 'Type', 'Source', 'Attempts', 'Reason', 'Dead-lettered at', 'Data']
        .map((c) => h('th', { scope: 'col', text: c })))),
      tbody);
    const empty = h('p', { class: 'muted empty-row', hidden: true, text: 'No dead letters: nothing to redrive.' });
    let count = 0;

    body.append(
      h('div', { class: 'sheet-toolbar' },
        refreshBtn,
        h('div', { class: 'toolbar-spacer' }),
        h('label', { class: 'small muted' }, 'Redrive at most ', maxInput),
        redriveBtn),
      confirmBox, status, table, empty);

    async function load() {
      setText(status, 'Loading…');
      status.className = 'sheet-status';
      try {
        const res = await api(`${subPath(topic, sub)}/deadletters?max=100`);
        const letters = (res && res.messages) || [];
        count = letters.length;
        setText($('#sheet-sub'), `${topic}/${sub}${res && res.dead_letter_topic ? ` · held in ${res.dead_letter_topic}` : ''}`);
        fill(tbody, ...letters.map((d) => {
          const ev = d.event || {};
          const preview = dataPreview(ev);
          return h('tr', { 'data-deadletter-offset': d.offset },
            h('td', { class: 'num mono', text: String(d.offset) }),
            h('td', { class: 'mono', text: eventText(ev, 'id'), title: eventText(ev, 'id') }),
            h('td', { text: eventText(ev, 'type') }),
            h('td', { class: 'mono', text: eventText(ev, 'source') }),
            h('td', { class: 'num', text: d.attempts === null || d.attempts === undefined ? '—' : String(d.attempts) }),
            h('td', { text: [d.reason, d.error].filter(Boolean).join(': ') || '—', title: d.error || null }),
            h('td', { class: 'nowrap', text: fmtTime(d.dead_lettered_at), title: d.dead_lettered_at || null }),
            h('td', { class: 'mono preview', text: truncate(preview, 120), title: truncate(preview, 2000) }));
        }));
        table.hidden = letters.length === 0;
        empty.hidden = letters.length > 0;
        redriveBtn.disabled = letters.length === 0;
        setText(status, letters.length >= 100 ? 'Showing the first 100 dead letters.' : `${letters.length} dead letter${letters.length === 1 ? '' : 's'}.`);
      } catch (err) {
        status.className = 'sheet-status error';
        setText(status, errorText(err));
        if (isAuthError(err)) showBanner('auth', authMessage(err));
      }
    }

    // Redrive asks first, in the page (a window.confirm would block the refresh loop).
    redriveBtn.addEventListener('click', () => {
      const max = Math.max(1, Math.floor(Number(maxInput.value) || 1000));
      fill(confirmBox,
        h('span', { text: `Publish up to ${max} dead letter${max === 1 ? '' : 's'} of ${topic}/${sub} again? ${count ? `(${count}${count >= 100 ? '+' : ''} waiting)` : ''}` }),
        h('button', { type: 'button', class: 'btn btn-danger', 'data-action': 'confirm-redrive', onclick: () => doRedrive(max) }, 'Redrive'),
        h('button', { type: 'button', class: 'btn', onclick: () => { confirmBox.hidden = true; } }, 'Cancel'));
      confirmBox.hidden = false;
      confirmBox.querySelector('[data-action="confirm-redrive"]').focus();
    });

    async function doRedrive(max) {
      confirmBox.hidden = true;
      redriveBtn.disabled = true;
      setText(status, 'Redriving…');
      try {
        const res = await api(`${subPath(topic, sub)}/redrive`, { method: 'POST', body: { max } });
        const moved = res && isNum(res.moved) ? res.moved : 0;
        await load();
        status.className = 'sheet-status success';
        setText(status, `Moved ${moved} dead letter${moved === 1 ? '' : 's'} back to ${topic}/${sub}.`);
        status.dataset.moved = String(moved);
      } catch (err) {
        status.className = 'sheet-status error';
        setText(status, `Redrive failed: ${errorText(err)}`);
      } finally {
        redriveBtn.disabled = count === 0;
      }
    }

    refreshBtn.addEventListener('click', load);
    load();
  }

  // --- Live tail ---

  function openTail(topic) {
    const body = openSheet(`Live tail · ${topic}`, 'New events as they are published, newest first.', 'tail');
    const tail = { topic, running: false, offsets: new Map(), controllers: new Set(), count: 0, gen: 0 };
    const status = h('div', { class: 'sheet-status', role: 'status', 'aria-live': 'polite' });
    const stopBtn = h('button', { type: 'button', class: 'btn btn-danger', 'data-action': 'stop-tail' }, '■ Stop');
    const clearBtn = h('button', { type: 'button', class: 'btn' }, 'Clear');
    const indicator = h('span', { class: 'tail-indicator', 'data-state': 'starting' });
    const tbody = h('tbody');
    const table = h('table', { class: 'grid compact', 'data-table': 'tail' },
      h('thead', null, h('tr', null, ['Time', 'P:offset', 'Event id', 'Type', 'Source', 'Subject', 'Data']
        .map((c) => h('th', { scope: 'col', text: c })))),
      tbody);
    body.append(h('div', { class: 'sheet-toolbar' }, indicator, status, h('div', { class: 'toolbar-spacer' }), clearBtn, stopBtn), table);

    const setStatus = (kind, text) => {
      indicator.dataset.state = kind;
      setText(status, text);
    };

    function addRecords(records) {
      for (const r of records) {
        const ev = r.event || {};
        const preview = dataPreview(ev);
        const when = ev.time || r.published_at;
        const tr = h('tr', { class: 'fresh', 'data-offset': `${r.partition}:${r.offset}` },
          h('td', { class: 'nowrap mono', text: fmtTime(when), title: when || null }),
          h('td', { class: 'num mono', text: `${r.partition}:${r.offset}` }),
          h('td', { class: 'mono', text: truncate(eventText(ev, 'id'), 40), title: eventText(ev, 'id') }),
          h('td', { text: eventText(ev, 'type') }),
          h('td', { class: 'mono', text: truncate(eventText(ev, 'source'), 40), title: eventText(ev, 'source') }),
          h('td', { text: truncate(eventText(ev, 'subject'), 40) }),
          h('td', { class: 'mono preview', text: truncate(preview, 120), title: truncate(preview, 2000) }));
        tbody.insertBefore(tr, tbody.firstChild);
        tail.count += 1;
      }
      while (tbody.rows.length > TAIL_MAX_ROWS) tbody.deleteRow(-1);
      setTimeout(() => { for (const tr of tbody.querySelectorAll('tr.fresh')) tr.classList.remove('fresh'); }, 50);
    }

    const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

    /** One poller: long-polls its single partition, or sweeps several without waiting. */
    async function poller(parts, gen) {
      const single = parts.length === 1;
      while (tail.running && gen === tail.gen) {
        let got = 0;
        for (const p of parts) {
          if (!tail.running || gen !== tail.gen) return;
          const ctl = new AbortController();
          tail.controllers.add(ctl);
          try {
            const wait = single ? TAIL_WAIT_MS : 0;
            const res = await api(`/v1/topics/${enc(topic)}/partitions/${p}/messages?offset=${tail.offsets.get(p)}&max=100&wait_ms=${wait}`,
              { signal: ctl.signal, timeoutMs: wait + REQUEST_TIMEOUT_MS });
            if (!tail.running || gen !== tail.gen) return;
            const msgs = (res && res.messages) || [];
            if (res && isNum(res.next_offset)) tail.offsets.set(p, res.next_offset);
            else if (msgs.length) tail.offsets.set(p, msgs[msgs.length - 1].offset + 1);
            got += msgs.length;
            if (msgs.length) addRecords(msgs);
            setStatus('live', `Following ${tail.offsets.size} partition${tail.offsets.size === 1 ? '' : 's'} · ${tail.count} event${tail.count === 1 ? '' : 's'}`);
          } catch (err) {
            if (err && err.name === 'AbortError') return;
            setStatus('error', `${errorText(err)} — retrying…`);
            if (isAuthError(err)) showBanner('auth', authMessage(err));
            await sleep(2000);
          } finally {
            tail.controllers.delete(ctl);
          }
        }
        if (!single && got === 0) await sleep(1000);
      }
    }

    async function start() {
      tail.running = true;
      tail.gen += 1;
      const gen = tail.gen;
      stopBtn.textContent = '■ Stop';
      stopBtn.className = 'btn btn-danger';
      if (!tail.offsets.size) {
        setStatus('starting', 'Finding the end of each partition…');
        try {
          const t = await api(`/v1/topics/${enc(topic)}`);
          if (gen !== tail.gen) return;
          for (const p of (t && t.partitions) || []) tail.offsets.set(p.partition, p.end_offset);
        } catch (err) {
          setStatus('error', errorText(err));
          if (isAuthError(err)) showBanner('auth', authMessage(err));
          tail.running = false;
          stopBtn.textContent = '▶ Retry';
          stopBtn.className = 'btn btn-primary';
          return;
        }
      }
      const parts = [...tail.offsets.keys()].sort((a, b) => a - b);
      if (!parts.length) {
        setStatus('error', 'The topic has no partitions.');
        return;
      }
      setStatus('live', `Following ${parts.length} partition${parts.length === 1 ? '' : 's'} · waiting for new events…`);
      const n = Math.min(TAIL_MAX_POLLS, parts.length);
      for (let i = 0; i < n; i += 1) poller(parts.filter((_, j) => j % n === i), gen);
    }

    function stop() {
      tail.running = false;
      tail.gen += 1;
      for (const c of tail.controllers) c.abort();
      tail.controllers.clear();
    }

    stopBtn.addEventListener('click', () => {
      if (tail.running) {
        stop();
        setStatus('stopped', `Stopped · ${tail.count} event${tail.count === 1 ? '' : 's'}`);
        stopBtn.textContent = '▶ Resume';
        stopBtn.className = 'btn btn-primary';
      } else {
        start();
      }
    });
    clearBtn.addEventListener('click', () => { tbody.replaceChildren(); });

    sheet.onClose = stop;
    start();
  }

  // ---------------------------------------------------------------------------------------
  // Refresh loop
  // ---------------------------------------------------------------------------------------

  async function loadTopics() {
    try {
      const res = await api('/v1/topics');
      const map = new Map();
      for (const t of (res && res.topics) || []) map.set(t.name, t);
      state.topics = map;
      renderTables();
      if (state.selected) updateDetail();
    } catch (err) {
      // The graph refresh reports auth and network trouble; the tables fall back to the graph.
      if (!isAuthError(err)) console.info('switchboard: /v1/topics:', errorText(err));
    }
  }

  function refreshNow() {
    clearTimeout(state.refreshTimer);
    refresh();
  }

  async function refresh() {
    state.refreshSeq += 1;
    const seq = state.refreshSeq;
    try {
      const g = await api(`/v1/graph?window=${enc(state.window)}`);
      if (seq !== state.refreshSeq) return; // a newer request (window change) took over
      if (!g || !Array.isArray(g.nodes) || !Array.isArray(g.edges)) throw new ApiError(0, 'The broker answered something that is not a service graph.');
      state.graph = g;
      state.updates += 1;
      state.lastOkAt = Date.now();
      document.body.dataset.updates = String(state.updates);

      renderDropped(g);
      renderSummary(g);
      updateMap(g);
      renderCongestion(g);
      renderTables();
      if (state.selected) {
        updateDetail();
        loadHistory();
        loadDetailExtra();
      }
      if (state.updates % TOPICS_EVERY === 1) loadTopics();

      if (banner.kind === 'auth' || banner.kind === 'refresh') clearBanner();
      tokenInput.classList.remove('needs-token');
      setLive('live', `Live · ${fmtClock(new Date(state.lastOkAt))}`,
        `Last update ${new Date(state.lastOkAt).toLocaleString()} (broker time ${new Date(g.at_s * 1000).toLocaleString()}), every ${REFRESH_MS / 1000} s, window ${g.window || state.window}`);
    } catch (err) {
      if (seq !== state.refreshSeq) return;
      const last = state.lastOkAt ? ` · last ${fmtClock(new Date(state.lastOkAt))}` : '';
      if (isAuthError(err)) {
        setLive('auth', `Token needed${last}`, err.detail);
        showBanner('auth', authMessage(err));
        tokenInput.classList.add('needs-token');
        if (!state.graph) setMapMessage('The broker wants a token.', 'Enter a token with admin on * in the Token field to see the map.');
      } else {
        setLive('error', `Offline${last}`, errorText(err));
        showBanner('refresh', `Refreshing the service map failed: ${errorText(err)}`);
        if (!state.graph) setMapMessage('The service graph could not be read.', errorText(err));
      }
    } finally {
      if (seq === state.refreshSeq) {
        clearTimeout(state.refreshTimer);
        state.refreshTimer = setTimeout(refresh, REFRESH_MS);
      }
    }
  }

  // A hidden tab stops polling; it catches up at once when shown again.
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) {
      clearTimeout(state.refreshTimer);
      state.refreshSeq += 1;
    } else {
      refreshNow();
    }
  });

  // ---------------------------------------------------------------------------------------
  // Start, and the hooks for browser tests
  // ---------------------------------------------------------------------------------------

  renderWindowButtons();
  renderTokenState();
  initMap();

  window.switchboard = {
    get cy() { return cy; },
    /** The latest GET /v1/graph answer. */
    get lastGraph() { return state.graph; },
    get updates() { return state.updates; },
    get selected() { return state.selected ? { ...state.selected } : null; },
    /** Opens the detail panel of an edge; true when the current graph has it. */
    selectEdge: (id) => select('edge', String(id), { from: 'api' }),
    /** Opens the detail panel of a node; true when the current graph has it. */
    selectNode: (id) => select('node', String(id), { from: 'api' }),
    clearSelection: () => clearSelection(),
    setWindow: (w) => { const b = document.querySelector(`[data-window="${w}"]`); if (b) b.click(); },
    refresh: () => refreshNow(),
    openTail: (topic) => openTail(String(topic)),
    openDeadLetters: (topic, sub) => openDeadLetters(String(topic), String(sub)),
    closeSheet: () => closeSheet(),
  };

  if (document.hidden) state.refreshSeq += 1;
  else refresh();
  loadTopics();
})();
