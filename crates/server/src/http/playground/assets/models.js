// Models: the repository index (KServe's repository extension: every version, its state and
// why it failed to load), load and unload (an admin key), and a few live numbers read from
// /metrics every two seconds while the tab is open.

import { call, showError, ApiError } from './api.js';

const $ = (id) => document.getElementById(id);
let refreshAll = () => {};
let timer = null;
let before = null; // the previous metrics sample: {t, requests, tokens}

function cell(row, text) {
  const td = row.insertCell();
  td.textContent = text;
  return td;
}

function actions(td, model) {
  for (const [verb, label] of [['load', 'Load'], ['unload', 'Unload']]) {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = label;
    b.setAttribute('aria-label', `${label} ${model}`);
    b.addEventListener('click', async () => {
      b.disabled = true;
      showError($('models-error'), '');
      let done = '';
      try {
        await call('POST', `/v2/repository/models/${encodeURIComponent(model)}/${verb}`, {});
        done = `${model}: ${verb === 'load' ? 'loaded' : 'unloaded'}`;
      } catch (e) {
        showError($('models-error'), e.message);
      }
      b.disabled = false;
      await index();
      if (done) $('models-note').textContent = done;
      refreshAll();
    });
    td.append(b);
  }
}

async function index() {
  const body = $('models-table').tBodies[0];
  try {
    const rows = await call('POST', '/v2/repository/index', {});
    body.replaceChildren();
    let previous = null;
    for (const r of rows) {
      const row = body.insertRow();
      row.dataset.model = r.name;
      cell(row, r.name);
      cell(row, r.version || '');
      const state = cell(row, r.state);
      state.className = `state ${String(r.state).toLowerCase()}`;
      cell(row, r.reason || '');
      const td = row.insertCell();
      if (r.name !== previous) actions(td, r.name);
      previous = r.name;
    }
    $('models-table').classList.toggle('no-reasons', !rows.some((r) => r.reason));
    $('models-count').textContent = `${rows.length} version${rows.length === 1 ? '' : 's'}`;
  } catch (e) {
    if (!(e instanceof ApiError) || (e.status !== 401 && e.status !== 403)) {
      showError($('models-error'), e.message);
      return;
    }
    // Without an admin key: what /v1/models lists (the models that answer now).
    $('models-count').textContent = 'The repository index, load and unload need a key with the admin scope; ready models:';
    try {
      const list = await call('GET', '/v1/models');
      $('models-table').classList.add('no-reasons');
      body.replaceChildren();
      for (const m of list.data) {
        const row = body.insertRow();
        row.dataset.model = m.id;
        cell(row, m.id);
        cell(row, '');
        cell(row, 'READY').className = 'state ready';
        cell(row, '');
        row.insertCell();
      }
    } catch (e2) {
      showError($('models-error'), e2.message);
    }
  }
}

/** Sums of the samples of `name` (optionally only those whose labels contain `match`). */
function sum(text, name, match) {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || (line[name.length] !== '{' && line[name.length] !== ' ')) continue;
    if (match && !line.includes(match)) continue;
    const v = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (Number.isFinite(v)) total += v;
  }
  return total;
}

async function sample() {
  try {
    const text = await call('GET', '/metrics');
    const now = { t: performance.now(), requests: sum(text, 'aiserve_requests_total'), tokens: sum(text, 'aiserve_tokens_total', 'kind="generated"') };
    $('metric-queue').textContent = String(sum(text, 'aiserve_queue_depth'));
    if (before) {
      const s = (now.t - before.t) / 1000;
      $('metric-rps').textContent = ((now.requests - before.requests) / s).toFixed(1);
      $('metric-tps').textContent = ((now.tokens - before.tokens) / s).toFixed(1);
    }
    before = now;
    $('metrics-note').textContent = '';
  } catch (e) {
    $('metrics-note').textContent = e instanceof ApiError && (e.status === 401 || e.status === 403)
      ? 'Live numbers need a key with the metrics scope.'
      : e.message;
    stopPolling();
  }
}

function stopPolling() {
  clearInterval(timer);
  timer = null;
  before = null;
}

export function init(refresh) {
  refreshAll = refresh;
  $('models-refresh').addEventListener('click', index);
}

export function models() {
  if (!$('panel-models').hidden) index();
}

export function show() {
  index();
  sample();
  if (!timer) timer = setInterval(sample, 2000);
}

export function hide() {
  stopPolling();
}
