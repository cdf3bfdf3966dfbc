// Calls to the server's public APIs with the key the person typed (kept in sessionStorage for
// this tab only), error answers turned into readable messages, and the server's model list
// sorted by what each model can do.

const KEY = 'aiserve-api-key';

export function apiKey() {
  return sessionStorage.getItem(KEY) || '';
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

/** Whether the server checks keys (the page is told when it is served). */
export function keysRequired() {
  return document.body.dataset.auth === 'keys';
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The message in an error answer of any of the protocols (OpenAI, Anthropic, KServe, TF Serving). */
function errorText(status, text) {
  try {
    const v = JSON.parse(text);
    const e = v.error;
    if (typeof e === 'string') return e;
    if (e && typeof e.message === 'string') return e.message;
    if (typeof v.message === 'string') return v.message;
  } catch (_) { /* not JSON */ }
  return text.trim() || `HTTP ${status}`;
}

/**
 * fetch() with the key; throws ApiError for an error answer. `body`: an object (sent as JSON), or
 * a Blob/File (sent as is, with its type).
 */
export async function call(method, path, body, { signal, raw = false } = {}) {
  const headers = {};
  const key = apiKey();
  if (keysRequired() && !key) throw new ApiError(401, 'This server needs an API key: type one above.');
  if (key) headers.Authorization = `Bearer ${key}`;
  let payload;
  if (body instanceof Blob) {
    payload = body;
    headers['Content-Type'] = body.type || 'application/octet-stream';
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers['Content-Type'] = 'application/json';
  }
  const resp = await fetch(path, { method, headers, body: payload, signal });
  if (!resp.ok) {
    let message = errorText(resp.status, await resp.text());
    if (resp.status === 401) message = `This server needs an API key (${message})`;
    if (resp.status === 403) message = `The key may not do this (${message})`;
    throw new ApiError(resp.status, message);
  }
  if (raw) return resp;
  const type = resp.headers.get('Content-Type') || '';
  return type.includes('json') ? resp.json() : resp.text();
}

/** The `data:` payloads of a server-sent event stream, as they arrive. */
export async function* events(resp) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value.replace(/\r\n?/g, '\n');
      let end;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, ''));
        if (data.length) yield data.join('\n');
      }
    }
  } finally {
    reader.releaseLock();
  }
}

/**
 * Every model the server serves with its KServe metadata, sorted into what the tabs use:
 * `{chat, images, embeddings, ocr}`, lists of names.
 */
export async function discover() {
  const list = await call('GET', '/v1/models');
  const names = list.data.map((m) => m.id).sort();
  const metas = await Promise.all(names.map((n) => call('GET', `/v2/models/${encodeURIComponent(n)}`).catch(() => null)));
  const kinds = { chat: [], images: [], embeddings: [], rerank: [], ocr: [], meta: {} };
  metas.forEach((m, i) => {
    if (!m) return;
    const name = names[i];
    kinds.meta[name] = m;
    const endpoints = (m.parameters && m.parameters.endpoints) || [];
    const outs = (m.outputs || []).map((o) => o.name);
    const ins = m.inputs || [];
    if (endpoints.includes('generate')) kinds.chat.push(name);
    else if (endpoints.includes('classify')) kinds.images.push(name);
    else if (endpoints.includes('rerank')) kinds.rerank.push(name);
    else if (outs.length === 1 && outs[0] === 'embedding' && ins.length === 1 && ins[0].datatype === 'BYTES') kinds.embeddings.push(name);
    else if (ins.length === 1 && ins[0].datatype === 'BYTES' && ['boxes', 'texts', 'scores'].every((o) => outs.includes(o))) kinds.ocr.push(name);
  });
  return kinds;
}

/** Fills a <select> with names, keeping the current choice where it still exists. */
export function fillSelect(select, names, empty) {
  const keep = select.value;
  select.replaceChildren();
  for (const n of names) select.append(new Option(n, n));
  if (!names.length) select.append(new Option(empty, ''));
  select.disabled = !names.length;
  if (names.includes(keep)) select.value = keep;
}

/** Shows `message` in an error element (or hides it when empty). */
export function showError(el, message) {
  el.textContent = message || '';
  el.hidden = !message;
}
