// The page's frame: tabs (keyboard: arrows, Home, End; the address's #fragment names the tab),
// the API key form, and the model list each tab draws its pickers from.

import { apiKey, setApiKey, keysRequired, call, discover } from './api.js';
import * as chat from './chat.js';
import * as images from './images.js';
import * as embeddings from './embeddings.js';
import * as rerank from './rerank.js';
import * as ocr from './ocr.js';
import * as models from './models.js';

const TABS = { chat, digits: images, embeddings, rerank, ocr, models };
const $ = (id) => document.getElementById(id);
let current = null;

function select(name, focus = false) {
  if (!(name in TABS)) name = 'chat';
  for (const t of Object.keys(TABS)) {
    const tab = $(`tab-${t}`);
    const on = t === name;
    tab.setAttribute('aria-selected', String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`panel-${t}`).hidden = !on;
  }
  if (focus) $(`tab-${name}`).focus();
  if (current !== name) {
    if (current) TABS[current].hide?.();
    current = name;
    TABS[name].show?.();
  }
  if (location.hash !== `#${name}`) history.replaceState(null, '', `#${name}`);
}

function banner(message) {
  const b = $('banner');
  b.textContent = message || '';
  b.hidden = !message;
}

/** Reads the model list and hands it to every tab. */
export async function refresh() {
  if (keysRequired() && !apiKey()) {
    banner('This server checks API keys: type one above to use its models.');
    $('api-key').focus();
    return;
  }
  try {
    const kinds = await discover();
    banner('');
    for (const t of Object.values(TABS)) t.models?.(kinds);
    call('GET', '/v2').then((v) => { $('server-version').textContent = v.version; }).catch(() => {});
  } catch (e) {
    banner(e.message);
  }
}

function init() {
  const names = Object.keys(TABS);
  for (const t of names) {
    const tab = $(`tab-${t}`);
    tab.addEventListener('click', () => select(t));
    tab.addEventListener('keydown', (ev) => {
      const i = names.indexOf(t);
      const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: names.length - 1 }[ev.key];
      if (to === undefined) return;
      ev.preventDefault();
      select(names[(to + names.length) % names.length], true);
    });
  }
  window.addEventListener('hashchange', () => select(location.hash.slice(1)));

  const key = $('api-key');
  if (apiKey()) key.placeholder = 'key set for this tab';
  else if (keysRequired()) key.placeholder = 'required';
  $('key-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    setApiKey(key.value.trim());
    key.value = '';
    key.placeholder = apiKey() ? 'key set for this tab' : (keysRequired() ? 'required' : 'not needed');
    refresh();
  });
  $('key-forget').addEventListener('click', () => {
    setApiKey('');
    key.placeholder = keysRequired() ? 'required' : 'not needed';
    refresh();
  });

  for (const t of Object.values(TABS)) t.init?.(refresh);
  select(location.hash.slice(1));
  refresh();
}

init();
