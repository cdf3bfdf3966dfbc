// OCR: an uploaded picture through `/ocr` (a pipeline with one picture in and boxes, texts and
// scores out), drawn with each line's polygon and number over it, and the lines listed.

import { call, fillSelect, showError } from './api.js';

const $ = (id) => document.getElementById(id);

export function models(kinds) {
  fillSelect($('ocr-model'), kinds.ocr, 'no OCR pipeline loaded');
}

function drawResult(bitmap, lines) {
  const c = $('ocr-canvas');
  c.width = bitmap.width;
  c.height = bitmap.height;
  const g = c.getContext('2d');
  g.drawImage(bitmap, 0, 0);
  const scale = Math.max(1, Math.max(bitmap.width, bitmap.height) / 800);
  g.lineWidth = 2 * scale;
  g.font = `${Math.round(14 * scale)}px sans-serif`;
  g.textBaseline = 'bottom';
  lines.forEach((line, i) => {
    const poly = line.polygon;
    g.strokeStyle = '#e5484d';
    g.beginPath();
    poly.forEach(([x, y], k) => (k ? g.lineTo(x, y) : g.moveTo(x, y)));
    g.closePath();
    g.stroke();
    const label = `${i + 1}`;
    const [x, y] = poly[0];
    const w = g.measureText(label).width + 6 * scale;
    const h = 16 * scale;
    g.fillStyle = '#e5484d';
    g.fillRect(x, Math.max(0, y - h), w, h);
    g.fillStyle = '#fff';
    g.fillText(label, x + 3 * scale, Math.max(h, y));
  });
  const list = $('ocr-lines');
  list.replaceChildren();
  for (const line of lines) {
    const li = document.createElement('li');
    const text = document.createElement('span');
    text.textContent = line.text;
    const conf = document.createElement('span');
    conf.className = 'muted';
    conf.textContent = ` ${(line.confidence * 100).toFixed(0)}%`;
    li.append(text, conf);
    list.append(li);
  }
}

async function read(file) {
  const model = $('ocr-model').value;
  if (!model) return;
  showError($('ocr-error'), '');
  $('ocr-stats').textContent = 'reading…';
  const started = performance.now();
  try {
    const answer = await call('POST', `/ocr?${new URLSearchParams({ model })}`, file);
    const bitmap = await createImageBitmap(file);
    drawResult(bitmap, answer.lines);
    $('ocr-stats').textContent = `${answer.lines.length} lines · ${Math.round(performance.now() - started)} ms`;
  } catch (e) {
    $('ocr-stats').textContent = '';
    showError($('ocr-error'), e.message);
  }
}

export function init() {
  $('ocr-file').addEventListener('change', (ev) => {
    const file = ev.target.files[0];
    if (file) read(file);
    ev.target.value = '';
  });
}
