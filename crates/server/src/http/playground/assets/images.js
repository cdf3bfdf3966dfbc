// Digits (any image classifier): a drawing pad (pointer events: mouse, pen, touch) whose ink is
// fitted to the model's input as MNIST was made (the digit scaled into a 20/28 box and centred
// by its centre of mass) for one-channel models, or scaled whole for colour ones; or an
// uploaded picture. Pictures go to `/classify`, which applies the model's own preprocessing,
// and the answer's `top` labels become the bar chart. A model that reads text (the digit-strings
// reader: a BYTES `text` output) answers a string; its characters' probabilities are the bars.

import { call, fillSelect, showError } from './api.js';

const $ = (id) => document.getElementById(id);
const INK = 20; // stroke width on the 280-pixel pad: MNIST's strokes, scaled
let meta = {};
let drawn = false;
let pending = 0;

/** The model's input as [height, width, channels] (KServe metadata of NHWC or NCHW inputs). */
function inputSize(name) {
  const m = meta[name];
  const shape = (m && m.inputs && m.inputs[0] && m.inputs[0].shape) || [];
  const dims = shape.slice(-3);
  if (dims.length === 3) {
    if (dims[0] === 1 || dims[0] === 3) return [dims[1], dims[2], dims[0]]; // NCHW
    return dims;
  }
  return [224, 224, 3];
}

/** Whether the model reads text (a BYTES `text` output) rather than classifying. */
function reads(name) {
  const m = meta[name];
  return Boolean(m && (m.outputs || []).some((o) => o.name === 'text' && o.datatype === 'BYTES'));
}

export function models(kinds) {
  meta = kinds.meta;
  fillSelect($('digits-model'), kinds.images, 'no image classifier loaded');
  sizeChanged();
}

function sizeChanged() {
  const [h, w, c] = inputSize($('digits-model').value).map((d) => (d > 0 ? d : 224));
  const p = $('digits-preview');
  p.width = w;
  p.height = h;
  $('digits-size').textContent = `${w}×${h}, ${c === 1 ? 'grey' : 'colour'}`;
  clearPad();
}

function clearPad() {
  const pad = $('digits-pad');
  const g = pad.getContext('2d');
  g.fillStyle = '#000';
  g.fillRect(0, 0, pad.width, pad.height);
  const p = $('digits-preview');
  p.getContext('2d').clearRect(0, 0, p.width, p.height);
  drawn = false;
  $('digits-label').textContent = '–';
  $('digits-bars').replaceChildren();
  showError($('digits-error'), '');
}

/** The pad's ink fitted into the preview canvas (the model's input size); false when empty. */
function fitInk() {
  const pad = $('digits-pad');
  const out = $('digits-preview');
  const o = out.getContext('2d');
  o.fillStyle = '#000';
  o.fillRect(0, 0, out.width, out.height);
  const [, , channels] = inputSize($('digits-model').value);
  if (channels !== 1) {
    o.drawImage(pad, 0, 0, out.width, out.height);
    return drawn;
  }
  const { width, height } = pad;
  const px = pad.getContext('2d').getImageData(0, 0, width, height).data;
  let x0 = width, y0 = height, x1 = -1, y1 = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (px[(y * width + x) * 4] > 32) {
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
  }
  if (x1 < 0) return false;
  const bw = x1 - x0 + 1, bh = y1 - y0 + 1;
  const box = Math.min(out.width, out.height) * 20 / 28;
  const scale = box / Math.max(bw, bh);
  const dw = Math.max(1, Math.round(bw * scale)), dh = Math.max(1, Math.round(bh * scale));
  const tmp = document.createElement('canvas');
  tmp.width = dw;
  tmp.height = dh;
  const t = tmp.getContext('2d');
  t.imageSmoothingQuality = 'high';
  t.drawImage(pad, x0, y0, bw, bh, 0, 0, dw, dh);
  const tp = t.getImageData(0, 0, dw, dh).data;
  let mass = 0, cx = 0, cy = 0;
  for (let y = 0; y < dh; y++) {
    for (let x = 0; x < dw; x++) {
      const v = tp[(y * dw + x) * 4];
      mass += v;
      cx += v * (x + 0.5);
      cy += v * (y + 0.5);
    }
  }
  cx = mass ? cx / mass : dw / 2;
  cy = mass ? cy / mass : dh / 2;
  const clamp = (v, hi) => Math.min(Math.max(v, 0), Math.max(hi, 0));
  const ox = clamp(Math.round(out.width / 2 - cx), out.width - dw);
  const oy = clamp(Math.round(out.height / 2 - cy), out.height - dh);
  o.drawImage(tmp, ox, oy);
  return true;
}

function showAnswer(answer) {
  const read = typeof answer.text === 'string';
  $('digits-label').textContent = read ? answer.text || '(nothing read)' : String(answer.label);
  const bars = $('digits-bars');
  bars.replaceChildren();
  const rows = read
    ? [...answer.text].map((label, i) => ({ label, probability: answer.probabilities[i] }))
    : answer.top || [];
  for (const { label, probability } of rows) {
    const li = document.createElement('li');
    const name = document.createElement('span');
    name.className = 'bar-label';
    name.textContent = String(label);
    const meter = document.createElement('span');
    meter.className = 'bar';
    const fill = document.createElement('span');
    fill.className = 'fill';
    fill.style.width = `${(Math.max(0, Math.min(1, probability)) * 100).toFixed(1)}%`;
    meter.append(fill);
    const value = document.createElement('span');
    value.className = 'bar-value';
    value.textContent = `${(probability * 100).toFixed(1)}%`;
    li.append(name, meter, value);
    li.setAttribute('aria-label', `${label}: ${(probability * 100).toFixed(1)}%`);
    bars.append(li);
  }
}

async function classify(picture) {
  const model = $('digits-model').value;
  if (!model) return;
  const ticket = ++pending;
  try {
    const q = new URLSearchParams(reads(model) ? { model } : { model, top: '10' });
    const answer = await call('POST', `/classify?${q}`, picture);
    if (ticket !== pending) return; // a newer drawing is on its way
    showError($('digits-error'), '');
    showAnswer(answer);
  } catch (e) {
    if (ticket === pending) showError($('digits-error'), e.message);
  }
}

function classifyPad() {
  if (!fitInk()) return;
  $('digits-preview').toBlob((blob) => blob && classify(blob), 'image/png');
}

function draw() {
  const pad = $('digits-pad');
  const g = pad.getContext('2d');
  let last = null;
  const at = (ev) => {
    const r = pad.getBoundingClientRect();
    return [(ev.clientX - r.left) * (pad.width / r.width), (ev.clientY - r.top) * (pad.height / r.height)];
  };
  const line = (from, to) => {
    g.strokeStyle = '#fff';
    g.fillStyle = '#fff';
    g.lineWidth = INK;
    g.lineCap = 'round';
    g.lineJoin = 'round';
    g.beginPath();
    g.moveTo(...from);
    g.lineTo(...to);
    g.stroke();
    drawn = true;
  };
  pad.addEventListener('pointerdown', (ev) => {
    ev.preventDefault();
    pad.setPointerCapture(ev.pointerId);
    last = at(ev);
    line(last, last);
  });
  pad.addEventListener('pointermove', (ev) => {
    if (!last) return;
    const p = at(ev);
    line(last, p);
    last = p;
  });
  const end = () => {
    if (!last) return;
    last = null;
    classifyPad();
  };
  pad.addEventListener('pointerup', end);
  pad.addEventListener('pointercancel', end);
}

export function init() {
  draw();
  $('digits-clear').addEventListener('click', clearPad);
  $('digits-model').addEventListener('change', sizeChanged);
  $('digits-file').addEventListener('change', async (ev) => {
    const file = ev.target.files[0];
    if (!file) return;
    clearPad();
    try {
      const bitmap = await createImageBitmap(file);
      const p = $('digits-preview');
      p.getContext('2d').drawImage(bitmap, 0, 0, p.width, p.height);
    } catch (_) { /* the server says what is wrong with it */ }
    classify(file);
    ev.target.value = '';
  });
  clearPad();
}
