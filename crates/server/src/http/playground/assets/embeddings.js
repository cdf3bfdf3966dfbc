// Embeddings: several texts through OpenAI's /v1/embeddings in one request, and the cosine
// similarity of every pair as a heatmap table.

import { call, fillSelect, showError } from './api.js';

const $ = (id) => document.getElementById(id);

export function models(kinds) {
  fillSelect($('embed-model'), kinds.embeddings, 'no embedding model loaded');
}

function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return na && nb ? dot / Math.sqrt(na * nb) : 0;
}

function short(text) {
  return text.length > 28 ? `${text.slice(0, 27)}…` : text;
}

function heatmap(texts, vectors) {
  const table = $('embed-heatmap');
  table.replaceChildren();
  const head = table.createTHead().insertRow();
  head.append(document.createElement('th'));
  texts.forEach((t, j) => {
    const th = document.createElement('th');
    th.scope = 'col';
    th.textContent = `${j + 1}`;
    th.title = t;
    head.append(th);
  });
  const body = table.createTBody();
  texts.forEach((t, i) => {
    const row = body.insertRow();
    const th = document.createElement('th');
    th.scope = 'row';
    th.textContent = `${i + 1}. ${short(t)}`;
    th.title = t;
    row.append(th);
    texts.forEach((_, j) => {
      const s = cosine(vectors[i], vectors[j]);
      const cell = row.insertCell();
      cell.className = 'cell';
      cell.textContent = s.toFixed(2);
      cell.dataset.value = String(s);
      // White (0 or below) to blue (1): a light background keeps the number readable.
      const v = Math.max(0, Math.min(1, s));
      cell.style.backgroundColor = `hsl(215 85% ${Math.round(96 - v * 46)}%)`;
      cell.style.color = v > 0.6 ? '#fff' : '#111';
    });
  });
}

async function compare() {
  const model = $('embed-model').value;
  const texts = $('embed-texts').value.split('\n').map((t) => t.trim()).filter(Boolean);
  if (!model || !texts.length) return;
  showError($('embed-error'), '');
  const started = performance.now();
  try {
    const answer = await call('POST', '/v1/embeddings', { model, input: texts });
    const ms = performance.now() - started;
    const vectors = answer.data.sort((a, b) => a.index - b.index).map((d) => d.embedding);
    heatmap(texts, vectors);
    const tokens = answer.usage ? ` · ${answer.usage.prompt_tokens} tokens` : '';
    $('embed-stats').textContent = `${texts.length} texts · ${vectors[0].length} dimensions${tokens} · ${Math.round(ms)} ms`;
  } catch (e) {
    showError($('embed-error'), e.message);
  }
}

export function init() {
  $('embed-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    compare();
  });
}
