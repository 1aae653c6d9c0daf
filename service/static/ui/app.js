// The page's client: the drawing pad, and three calls to the public API per change, each with the
// JSON body {"images": [28 rows of 28 intensities in [0,1]]}: POST reconstruct (the reconstruction
// and its scores), POST reconstruct?error_map=true&format=png (the service's error heatmap) and
// POST encode (the latent code). The latent walk: one POST encode of two images, and one POST
// decode of the steps between their codes.
"use strict";

const SIDE = 28;
const KEY_STORE = "mnist-ae-api-key";
const $ = (id) => document.getElementById(id);
const pad = $("pad");
const ink = pad.getContext("2d");
const small = document.createElement("canvas");
small.width = small.height = SIDE;
const smallCtx = small.getContext("2d", { willReadFrequently: true });

// --- the latents' colour map: dark blue -> green -> yellow
const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function colour(stops, t) {
  const x = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  return stops[i].map((c, k) => Math.round(c + (stops[i + 1][k] - c) * f));
}

// --- the pad --------------------------------------------------------------------------------
function clearPad() {
  ink.fillStyle = "#000";
  ink.fillRect(0, 0, pad.width, pad.height);
}

function pixelsOf(source) {
  // a picture (the 280x280 drawing, a 28x28 digit), averaged down to 28x28 intensities, as MNIST digits are
  smallCtx.imageSmoothingEnabled = true;
  smallCtx.imageSmoothingQuality = "high";
  smallCtx.clearRect(0, 0, SIDE, SIDE);
  smallCtx.drawImage(source, 0, 0, SIDE, SIDE);
  const rgba = smallCtx.getImageData(0, 0, SIDE, SIDE).data;
  const rows = [];
  for (let y = 0; y < SIDE; y++) {
    const row = [];
    for (let x = 0; x < SIDE; x++) {
      const i = 4 * (y * SIDE + x);
      row.push(Math.round((1000 * (rgba[i] + rgba[i + 1] + rgba[i + 2])) / 765) / 1000);
    }
    rows.push(row);
  }
  return rows;
}

let drawing = false;
let last = null;
function point(event) {
  const box = pad.getBoundingClientRect();
  return [((event.clientX - box.left) * pad.width) / box.width, ((event.clientY - box.top) * pad.height) / box.height];
}
pad.addEventListener("pointerdown", (event) => {
  drawing = true;
  last = point(event);
  pad.setPointerCapture(event.pointerId);
  stroke(last, last);
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const next = point(event);
  stroke(last, next);
  last = next;
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => {
    drawing = false;
    schedule();
  });
}
function stroke(from, to) {
  ink.strokeStyle = "#fff";
  ink.lineWidth = 22;
  ink.lineCap = "round";
  ink.lineJoin = "round";
  ink.beginPath();
  ink.moveTo(from[0], from[1]);
  ink.lineTo(to[0], to[1]);
  ink.stroke();
  schedule();
}

function showImage(source) {
  clearPad();
  ink.imageSmoothingEnabled = false; // MNIST digits stay crisp when scaled up
  ink.drawImage(source, 0, 0, pad.width, pad.height);
  schedule();
}

function loadFile(file) {
  if (!file || !file.type.startsWith("image/")) {
    setStatus("That file is not an image.", true);
    return;
  }
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.onload = () => {
    showImage(img);
    URL.revokeObjectURL(url);
  };
  img.onerror = () => setStatus("The browser cannot read that image.", true);
  img.src = url;
}

$("clear").addEventListener("click", () => {
  clearPad();
  schedule();
});
$("file").addEventListener("change", (event) => loadFile(event.target.files[0]));
pad.addEventListener("dragover", (event) => {
  event.preventDefault();
  pad.classList.add("dragging");
});
pad.addEventListener("dragleave", () => pad.classList.remove("dragging"));
pad.addEventListener("drop", (event) => {
  event.preventDefault();
  pad.classList.remove("dragging");
  loadFile(event.dataTransfer.files[0]);
});

for (let digit = 0; digit < 10; digit++) {
  const button = document.createElement("button");
  button.type = "button";
  const img = document.createElement("img");
  img.src = `ui/digits/${digit}.png`;
  img.alt = `MNIST test digit ${digit}`;
  button.append(img);
  button.addEventListener("click", () => showImage(img));
  $("examples").append(button);
}

// --- the API ------------------------------------------------------------------------------------
let apiKey = sessionStorage.getItem(KEY_STORE) || "";
$("key").value = apiKey;
$("save-key").addEventListener("click", () => {
  apiKey = $("key").value.trim();
  sessionStorage.setItem(KEY_STORE, apiKey);
  schedule();
});

async function post(path, body, accept = "application/json") {
  const headers = { "Content-Type": "application/json", Accept: accept };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  const response = await fetch(path, { method: "POST", headers, body });
  if (!response.ok) {
    const answer = await response.json().catch(() => ({}));
    const error = new Error(answer.error ? answer.error.message : `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return accept === "application/json" ? response.json() : response.blob();
}

// one request pair in flight at a time; changes made meanwhile are sent once it returns
let busy = false;
let again = false;
let frame = 0;
function schedule() {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    analyse();
  });
}

async function analyse() {
  if (busy) {
    again = true;
    return;
  }
  busy = true;
  const pixels = pixelsOf(pad);
  const body = JSON.stringify({ images: [pixels] });
  try {
    const [scored, heatmap, encoded] = await Promise.all([
      post("reconstruct", body),
      post("reconstruct?error_map=true&format=png", body, "image/png"),
      post("encode", body),
    ]);
    await render(scored, heatmap, encoded);
    setStatus("");
  } catch (error) {
    if (error.status === 401) {
      $("access").open = true;
      setStatus("This service needs an API key: enter it under “API key”.", true);
    } else {
      setStatus(`The service answered: ${error.message}`, true);
    }
  } finally {
    busy = false;
    if (again) {
      again = false;
      schedule();
    }
  }
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

// --- drawing the answers ---------------------------------------------------------------------------
function paint(canvas, width, height, rgbAt) {
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  for (let i = 0; i < width * height; i++) {
    const [r, g, b] = rgbAt(i);
    image.data.set([r, g, b, 255], 4 * i);
  }
  context.putImageData(image, 0, 0);
}

async function render(scored, heatmap, encoded) {
  const flat = scored.data[0][0].flat(); // (28,28)
  paint($("reconstruction"), SIDE, SIDE, (i) => {
    const v = Math.round(255 * flat[i]);
    return [v, v, v];
  });
  // the service's heatmap of the absolute error, on a fixed 0..1 scale
  const picture = await createImageBitmap(heatmap);
  const errorMap = $("error-map");
  errorMap.getContext("2d").drawImage(picture, 0, 0, errorMap.width, errorMap.height);

  $("mse").textContent = scored.mse[0].toFixed(5);
  $("novelty").textContent = scored.novelty === null ? "no novelty head" : scored.novelty[0].toFixed(2);
  const verdict = $("verdict");
  if (scored.percentile === null) {
    $("percentile").textContent = "no calibration";
    verdict.textContent = "The served checkpoint has no anomaly calibration";
    verdict.className = "";
  } else {
    $("percentile").textContent = `${scored.percentile[0].toFixed(1)}`;
    const flagged = scored.anomaly[0];
    verdict.textContent = flagged
      ? `Anomaly: unlike the training digits (threshold ${scored.anomaly_quantile})`
      : "Normal: like the training digits";
    verdict.className = flagged ? "anomaly" : "normal";
  }
  renderLatents(encoded);
}

function renderLatents(encoded) {
  const [, channels, height, width] = encoded.shape;
  const code = encoded.data[0]; // (C,H,W)
  const values = code.flat(2);
  const low = Math.min(0, ...values);
  const high = Math.max(...values);
  const span = high - low || 1;
  const holder = $("latents");
  if (holder.children.length !== channels) {
    holder.replaceChildren();
    for (let c = 0; c < channels; c++) {
      const figure = document.createElement("figure");
      const canvas = document.createElement("canvas");
      canvas.setAttribute("role", "img");
      canvas.setAttribute("aria-label", `Latent channel ${c}`);
      const caption = document.createElement("figcaption");
      caption.textContent = `channel ${c}`;
      figure.append(canvas, caption);
      holder.append(figure);
    }
    $("latent-note").textContent =
      `The code the encoder makes: ${channels} channels of ${height}x${width}, one heatmap each, on one scale.`;
  }
  for (let c = 0; c < channels; c++) {
    const channel = code[c].flat();
    paint(holder.children[c].querySelector("canvas"), width, height, (i) => colour(VIRIDIS, (channel[i] - low) / span));
  }
}

// --- the latent walk: two codes, STEPS points on the line between them, decoded in one call -----
const STEPS = 8;
function walkSource(value) {
  return pixelsOf(value === "pad" ? pad : $("examples").querySelectorAll("img")[Number(value)]);
}
for (const [id, chosen] of [["walk-from", "1"], ["walk-to", "7"]]) {
  const select = $(id);
  select.add(new Option("the drawing", "pad"));
  for (let digit = 0; digit < 10; digit++) select.add(new Option(`test digit ${digit}`, String(digit)));
  select.value = chosen;
}
function lerp(a, b, t) {
  return Array.isArray(a) ? a.map((v, i) => lerp(v, b[i], t)) : a + (b - a) * t;
}
let walked = [];
async function walk() {
  try {
    const body = JSON.stringify({ images: [walkSource($("walk-from").value), walkSource($("walk-to").value)] });
    const [from, to] = (await post("encode", body)).data; // two (16,7,7) codes
    const latents = Array.from({ length: STEPS }, (_, k) => lerp(from, to, k / (STEPS - 1)));
    const decoded = await post("decode", JSON.stringify({ latents }));
    walked = decoded.data.map((image) => image[0].flat()); // STEPS x 784 intensities
    const strip = $("strip");
    strip.replaceChildren();
    walked.forEach((pixels, k) => {
      const canvas = document.createElement("canvas");
      canvas.setAttribute("role", "listitem");
      canvas.setAttribute("aria-label", `Step ${k + 1} of ${STEPS}`);
      paint(canvas, SIDE, SIDE, (i) => Array(3).fill(Math.round(255 * pixels[i])));
      canvas.addEventListener("click", () => showStep(k));
      strip.append(canvas);
    });
    $("walk-step").disabled = false;
    showStep(Number($("walk-step").value));
    setStatus("");
  } catch (error) {
    setStatus(`The service answered: ${error.message}`, true);
  }
}
function showStep(k) {
  $("walk-step").value = String(k);
  $("walk-at").textContent = `${k + 1} of ${STEPS}`;
  paint($("walk-view"), SIDE, SIDE, (i) => Array(3).fill(Math.round(255 * walked[k][i])));
  [...$("strip").children].forEach((canvas, i) => canvas.classList.toggle("current", i === k));
}
$("walk").addEventListener("click", walk);
$("walk-step").addEventListener("input", (event) => showStep(Number(event.target.value)));

clearPad();
