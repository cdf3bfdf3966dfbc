// Chat: OpenAI chat completions, streamed. Stop aborts the request, and the server cancels a
// sequence whose client went away. Time to first token and tokens/s are measured here, in the
// browser, as a user sees them.

import { call, events, fillSelect, showError } from './api.js';

const $ = (id) => document.getElementById(id);
let history = [];
let running = null; // the AbortController of the answer being streamed

export function models(kinds) {
  fillSelect($('chat-model'), kinds.chat, 'no text generation model loaded');
}

function bubble(role, text) {
  const li = document.createElement('li');
  li.className = `msg ${role}`;
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = role === 'user' ? 'You' : 'Model';
  const body = document.createElement('div');
  body.className = 'text';
  body.textContent = text;
  li.append(who, body);
  $('chat-log').append(li);
  li.scrollIntoView({ block: 'end' });
  return body;
}

function busy(on) {
  $('chat-send').disabled = on;
  $('chat-stop').disabled = !on;
}

async function send(text) {
  const model = $('chat-model').value;
  if (!model || !text.trim()) return;
  showError($('chat-error'), '');
  history.push({ role: 'user', content: text });
  bubble('user', text);
  const out = bubble('assistant', '');
  out.parentElement.classList.add('streaming');
  const messages = [];
  const system = $('chat-system').value.trim();
  if (system) messages.push({ role: 'system', content: system });
  messages.push(...history);
  const body = {
    model,
    messages,
    stream: true,
    stream_options: { include_usage: true },
    temperature: Number($('chat-temperature').value),
    max_tokens: Number($('chat-max-tokens').value) || 256,
  };
  const ctl = new AbortController();
  running = ctl;
  busy(true);
  const started = performance.now();
  let first = 0;
  let last = 0;
  let chunks = 0;
  let tokens = 0;
  let answer = '';
  let finish = '';
  const stats = () => {
    const ttft = first ? `${Math.round(first - started)} ms to first token` : 'waiting for the first token';
    const n = tokens || chunks;
    const rate = n > 1 && last > first ? ` · ${((n - 1) / ((last - first) / 1000)).toFixed(1)} tokens/s` : '';
    $('chat-stats').textContent = `${ttft}${rate} · ${n} tokens${finish ? ` · ${finish}` : ''}`;
  };
  stats();
  try {
    const resp = await call('POST', '/v1/chat/completions', body, { signal: ctl.signal, raw: true });
    for await (const data of events(resp)) {
      if (data === '[DONE]') break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message || String(chunk.error));
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
      for (const choice of chunk.choices || []) {
        const piece = choice.delta && choice.delta.content;
        if (piece) {
          const now = performance.now();
          if (!first) first = now;
          last = now;
          chunks += 1;
          answer += piece;
          out.textContent = answer;
        }
        if (choice.finish_reason) finish = `finished: ${choice.finish_reason}`;
      }
      stats();
    }
  } catch (e) {
    if (e.name === 'AbortError') finish = 'stopped';
    else showError($('chat-error'), e.message);
  } finally {
    running = null;
    busy(false);
    out.parentElement.classList.remove('streaming');
    out.parentElement.dataset.done = finish || 'ended';
    stats();
    if (answer) history.push({ role: 'assistant', content: answer });
    else history.pop();
  }
}

export function init() {
  const temp = $('chat-temperature');
  temp.addEventListener('input', () => { $('chat-temperature-value').textContent = temp.value; });
  $('chat-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    if (running) return;
    const input = $('chat-input');
    const text = input.value;
    input.value = '';
    send(text);
  });
  $('chat-input').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $('chat-form').requestSubmit();
    }
  });
  $('chat-stop').addEventListener('click', () => running && running.abort());
  $('chat-clear').addEventListener('click', () => {
    if (running) running.abort();
    history = [];
    $('chat-log').replaceChildren();
    $('chat-stats').textContent = '';
    showError($('chat-error'), '');
  });
  $('chat-settings').addEventListener('submit', (ev) => ev.preventDefault());
}
