// Rerank: a query and documents through /v1/rerank (a cross-encoder reads each pair together);
// the documents best first with their relevance scores as bars.

import { call, fillSelect, showError } from './api.js';

const $ = (id) => document.getElementById(id);

export function models(kinds) {
  fillSelect($('rerank-model'), kinds.rerank, 'no reranker loaded');
}

function show(results) {
  const list = $('rerank-results');
  list.replaceChildren();
  // Sigmoid scores lie in 0..1; a model with raw scores is drawn against the largest one.
  const top = Math.max(1, ...results.map((r) => Math.abs(r.relevance_score)));
  for (const r of results) {
    const li = document.createElement('li');
    li.dataset.index = String(r.index);
    const name = document.createElement('span');
    name.className = 'bar-label';
    name.textContent = r.document.text;
    name.title = r.document.text;
    const meter = document.createElement('span');
    meter.className = 'bar';
    const fill = document.createElement('span');
    fill.className = 'fill';
    fill.style.width = `${((Math.max(0, r.relevance_score) / top) * 100).toFixed(1)}%`;
    meter.append(fill);
    const value = document.createElement('span');
    value.className = 'bar-value';
    value.textContent = r.relevance_score.toFixed(3);
    li.append(name, meter, value);
    li.setAttribute('aria-label', `${r.document.text}: ${r.relevance_score.toFixed(3)}`);
    list.append(li);
  }
}

async function rerank() {
  const model = $('rerank-model').value;
  const query = $('rerank-query').value.trim();
  const documents = $('rerank-documents').value.split('\n').map((t) => t.trim()).filter(Boolean);
  if (!model || !query || !documents.length) return;
  showError($('rerank-error'), '');
  const started = performance.now();
  try {
    const answer = await call('POST', '/v1/rerank', { model, query, documents, return_documents: true });
    const ms = performance.now() - started;
    show(answer.results);
    $('rerank-stats').textContent = `${documents.length} documents · ${answer.usage.total_tokens} tokens · ${Math.round(ms)} ms`;
  } catch (e) {
    showError($('rerank-error'), e.message);
  }
}

export function init() {
  $('rerank-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    rerank();
  });
}
