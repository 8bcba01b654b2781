// siamkit's web page: verify, identify and enroll through the /v1 HTTP API. No build step, no
// dependencies; every request goes to the server that served this page.
"use strict";

const KEY_STORAGE = "siamkit.apiKey";
let defaultMode = "images"; // "texts" once /ready says the model reads text
const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

// ---------------------------------------------------------------- API calls and their errors

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function apiKey() {
  return $("#api-key").value.trim();
}

/** One line from an error body: {"detail": str} or FastAPI's list of validation errors. */
function describeError(status, body, text) {
  let detail = body && body.detail !== undefined ? body.detail : null;
  if (Array.isArray(detail)) {
    detail = detail
      .map((d) => (d && d.msg ? `${(d.loc || []).slice(1).join(".") || "input"}: ${d.msg}` : String(d)))
      .join("; ");
  } else if (detail !== null && typeof detail !== "string") {
    detail = JSON.stringify(detail);
  }
  if (!detail) detail = (text || "").trim().split("\n")[0].slice(0, 200) || `HTTP ${status}`;
  const hints = {
    401: apiKey() ? "Check the API key above." : "Enter an API key above.",
    403: "This key may not do that (read-only key?).",
    413: "The upload is too large for this server.",
    503: "The server is busy or not ready yet; try again in a moment.",
  };
  return hints[status] ? `${detail} ${hints[status]}` : detail;
}

async function api(path, { method = "POST", form = null, json = null } = {}) {
  const headers = { Accept: "application/json" };
  if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
  let body = null;
  if (json !== null) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== null) {
    body = form;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body });
  } catch (error) {
    throw new ApiError(0, `Cannot reach the server (${error.message}).`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = null;
  }
  if (!response.ok) throw new ApiError(response.status, describeError(response.status, data, text));
  if (data === null) throw new ApiError(response.status, "The server answered with no JSON body.");
  return data;
}

// ---------------------------------------------------------------- small DOM helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const fmt = (x, digits = 3) => (typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : String(x));
const percent = (x) => `${(100 * x).toFixed(x > 0.995 || x < 0.005 ? 1 : 0)}%`;
const words = (key) => key.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());

function showError(target, error) {
  target.replaceChildren(
    el("div", { class: "error", role: "alert" }, el("strong", { text: "Error: " }), error.message)
  );
}

function showBusy(target, text) {
  target.replaceChildren(el("p", { class: "muted busy", text }));
}

/** Run ``task`` with the form's submit button disabled; errors end up in ``target``. */
async function submitting(form, target, busyText, task) {
  const button = $("button[type=submit]", form);
  button.disabled = true;
  form.setAttribute("aria-busy", "true");
  showBusy(target, busyText);
  try {
    await task();
  } catch (error) {
    showError(target, error);
  } finally {
    button.disabled = false;
    form.removeAttribute("aria-busy");
  }
}

// ---------------------------------------------------------------- image previews

/** Binary (P5/P6) or plain (P2/P3) PGM/PPM -> ImageData; browsers do not draw these formats. */
function decodePNM(buffer) {
  const bytes = new Uint8Array(buffer);
  const magic = String.fromCharCode(bytes[0], bytes[1]);
  if (!["P2", "P3", "P5", "P6"].includes(magic)) return null;
  let pos = 2;
  const tokens = [];
  const readToken = () => {
    for (;;) {
      while (pos < bytes.length && /\s/.test(String.fromCharCode(bytes[pos]))) pos += 1;
      if (bytes[pos] !== 35) break; // '#': a comment to the end of the line
      while (pos < bytes.length && bytes[pos] !== 10) pos += 1;
    }
    let token = "";
    while (pos < bytes.length && !/\s/.test(String.fromCharCode(bytes[pos]))) {
      token += String.fromCharCode(bytes[pos]);
      pos += 1;
    }
    return token;
  };
  while (tokens.length < 3) tokens.push(parseInt(readToken(), 10));
  const [width, height, maxval] = tokens;
  if (!(width > 0 && height > 0 && maxval > 0 && width * height <= 4e6)) return null;
  const channels = magic === "P3" || magic === "P6" ? 3 : 1;
  const wide = maxval > 255;
  pos += 1; // the single whitespace byte before binary data
  const image = new ImageData(width, height);
  const sample = (i) => {
    if (magic === "P2" || magic === "P3") return parseInt(readToken(), 10);
    return wide ? (bytes[pos + 2 * i] << 8) | bytes[pos + 2 * i + 1] : bytes[pos + i];
  };
  for (let p = 0; p < width * height; p += 1) {
    const rgb = [];
    for (let c = 0; c < channels; c += 1) rgb.push((255 * (sample(p * channels + c) || 0)) / maxval);
    const [r, g, b] = channels === 3 ? rgb : [rgb[0], rgb[0], rgb[0]];
    image.data.set([r, g, b, 255], 4 * p);
  }
  return image;
}

/** A URL the browser can draw for ``file`` (PGM/PPM converted through a canvas), or null. */
async function previewURL(file) {
  const head = new Uint8Array(await file.slice(0, 2).arrayBuffer());
  if (head[0] === 80 && [50, 51, 53, 54].includes(head[1])) {
    const image = decodePNM(await file.arrayBuffer());
    if (!image) return null;
    const canvas = el("canvas", { width: image.width, height: image.height });
    canvas.getContext("2d").putImageData(image, 0, 0);
    return canvas.toDataURL("image/png");
  }
  return URL.createObjectURL(file);
}

async function renderPreview(zone) {
  const input = $("input[type=file]", zone);
  const preview = $(".preview", zone);
  const files = Array.from(input.files || []);
  const names = files.map((f) => f.name);
  const hint = $(".drop-hint", zone);
  zone.classList.toggle("filled", files.length > 0);
  $("label", zone).title = names.join("\n");
  if (files.length) {
    hint.textContent = names.length > 2
      ? `${names.length} files: ${names.slice(0, 2).join(", ")}…`
      : names.join(", ");
  } else {
    hint.innerHTML = hint.dataset.emptyHtml;
  }
  for (const img of $$("img", preview)) if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  const thumbnails = await Promise.all(
    files.slice(0, 12).map(async (file) => {
      const url = await previewURL(file).catch(() => null);
      const figure = el("span", { class: "thumb" });
      figure.append(url ? el("img", { src: url, alt: "" }) : el("span", { class: "nothumb", text: "?" }));
      return figure;
    })
  );
  const more = files.length > 12 ? [el("span", { class: "more", text: `+${files.length - 12}` })] : [];
  preview.replaceChildren(...thumbnails, ...more);
}

function setupDropZone(zone) {
  const input = $("input[type=file]", zone);
  const hint = $(".drop-hint", zone);
  hint.dataset.emptyHtml = hint.innerHTML;
  input.addEventListener("change", () => renderPreview(zone));
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
  }
  for (const type of ["dragleave", "dragend"]) {
    zone.addEventListener(type, () => zone.classList.remove("over"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const dropped = Array.from(event.dataTransfer.files || []);
    if (!dropped.length) return;
    const transfer = new DataTransfer();
    for (const file of input.multiple ? dropped : dropped.slice(0, 1)) transfer.items.add(file);
    input.files = transfer.files;
    input.dispatchEvent(new Event("change", { bubbles: true }));
  });
}

function resetDropZones(form) {
  for (const zone of $$("[data-drop]", form)) {
    zone.classList.remove("filled");
    $(".preview", zone).replaceChildren();
    const hint = $(".drop-hint", zone);
    hint.innerHTML = hint.dataset.emptyHtml;
  }
}

// ---------------------------------------------------------------- results

const KNOWN_VERIFY = new Set(["score", "threshold", "decision"]);

/** The bar scale for ``values``: cosine-like scores may be negative, so -1..1 then, else 0..1. */
function scaleOf(values) {
  const numbers = values.filter((x) => typeof x === "number" && Number.isFinite(x));
  return [Math.min(0, ...numbers) < 0 ? -1 : 0, Math.max(1, ...numbers)];
}

/** A bar showing where ``score`` sits on the scale, with a tick at the threshold. */
function scoreBar(score, threshold, [low, high] = scaleOf([score, threshold])) {
  const at = (x) => `${Math.max(0, Math.min(100, (100 * (x - low)) / (high - low))).toFixed(1)}%`;
  const bar = el("div", { class: "bar", role: "img",
    "aria-label": `score ${fmt(score)} on a scale from ${low} to ${fmt(high, 0)}` });
  bar.append(el("span", { class: "fill", style: `width:${at(score)}` }));
  if (typeof threshold === "number") {
    bar.append(el("span", { class: "tick", style: `left:${at(threshold)}`, title: "threshold" }));
  }
  return bar;
}

/** A value the model may add later (probability, interval, explanation...), shown readably. */
function renderValue(key, value) {
  if (typeof value === "number") {
    if (Number.isInteger(value)) return String(value);
    if (/prob|confidence|p_same/i.test(key) && value >= 0 && value <= 1) return percent(value);
    return fmt(value);
  }
  if (typeof value === "string") {
    if (/^data:image\//.test(value)) return el("img", { class: "figure", src: value, alt: words(key) });
    if (/^iVBORw0KGgo/.test(value) && value.length > 100) {
      return el("img", { class: "figure", src: `data:image/png;base64,${value}`, alt: words(key) });
    }
    return value;
  }
  if (Array.isArray(value) && value.length === 2 && value.every((x) => typeof x === "number")) {
    const probability = /prob|interval/i.test(key) && value.every((x) => x >= 0 && x <= 1);
    return probability ? `${percent(value[0])} – ${percent(value[1])}` : `${fmt(value[0])} – ${fmt(value[1])}`;
  }
  if (value && typeof value === "object" && !Array.isArray(value)) {
    const list = el("dl", { class: "details nested" });
    for (const [k, v] of Object.entries(value)) list.append(el("dt", { text: words(k) }), el("dd", {}, renderValue(k, v)));
    return list;
  }
  return el("code", { text: JSON.stringify(value) });
}

function detailsList(data, skip) {
  const list = el("dl", { class: "details" });
  for (const [key, value] of Object.entries(data)) {
    if (skip.has(key) || value === null || value === undefined) continue;
    list.append(el("dt", { text: words(key) }), el("dd", { "data-field": key }, renderValue(key, value)));
  }
  return list.children.length ? list : null;
}

/** " (88%–96%)": a calibrated probability's bootstrap interval, or "" without one. */
function intervalText(interval) {
  return Array.isArray(interval) && interval.length === 2
    ? ` (${percent(interval[0])}–${percent(interval[1])})` : "";
}

function renderVerify(target, data) {
  const same = data.decision === "same";
  const probability = typeof data.probability === "number" ? data.probability : null;
  const verdict = el(
    "div", { class: `verdict ${same ? "same" : "different"}`, "data-decision": data.decision },
    el("span", { class: "verdict-word", text: same ? "Same" : "Different" }),
    el("span", { class: "verdict-sub",
      text: probability === null ? `score ${fmt(data.score)} ${same ? "≥" : "<"} threshold ${fmt(data.threshold)}`
        : `P(same) ${percent(probability)}${intervalText(data.probability_interval)}` })
  );
  const figures = el("dl", { class: "figures" },
    el("div", {}, el("dt", { text: "Score" }), el("dd", { "data-field": "score", text: fmt(data.score) })),
    el("div", {}, el("dt", { text: "Threshold" }), el("dd", { "data-field": "threshold", text: fmt(data.threshold) })));
  const skip = new Set([...KNOWN_VERIFY]);
  target.replaceChildren(el("div", { class: "card" }, verdict, scoreBar(data.score, data.threshold),
    figures, detailsList(data, skip)));
}

function renderIdentify(target, data) {
  const known = data.identity !== null && data.identity !== undefined;
  const verdict = el(
    "div", { class: `verdict ${known ? "same" : "unknown"}`, "data-identity": known ? data.identity : "" },
    el("span", { class: "verdict-word", text: known ? data.identity : "Unknown" }),
    el("span", { class: "verdict-sub", text: known
      ? `best match, score ${fmt(data.score)} ≥ threshold ${fmt(data.threshold)}`
      : `no enrolled person reaches the threshold ${fmt(data.threshold)}` })
  );
  const candidates = el("ol", { class: "candidates" });
  const scale = scaleOf([data.threshold, ...(data.candidates || []).map((c) => c.score)]);
  for (const c of data.candidates || []) {
    candidates.append(el("li", {}, el("span", { class: "cand-name", text: c.name }),
      scoreBar(c.score, data.threshold, scale), el("span", { class: "cand-score", text: fmt(c.score) }),
      typeof c.probability === "number"
        ? el("span", { class: "cand-probability", "data-field": "probability", text: `P ${percent(c.probability)}` })
        : null));
  }
  const skip = new Set(["identity", "score", "threshold", "candidates"]);
  target.replaceChildren(el("div", { class: "card" }, verdict,
    (data.candidates || []).length ? el("h2", { text: "Closest people" }) : null,
    (data.candidates || []).length ? candidates : el("p", { class: "muted", text: "The gallery is empty." }),
    detailsList(data, skip)));
}

/** One enrolled person, with a two-step delete button (read-write key). */
function personItem(person) {
  const count = `${person.templates} image${person.templates === 1 ? "" : "s"}`;
  const button = el("button", { type: "button", class: "quiet small danger",
    "aria-label": `Delete ${person.name}`, text: "Delete" });
  button.addEventListener("click", async () => {
    if (button.dataset.armed !== "true") {
      button.dataset.armed = "true";
      button.textContent = "Sure?";
      button.setAttribute("aria-label", `Confirm: delete ${person.name} from the gallery`);
      return;
    }
    button.disabled = true;
    try {
      await api(`v1/people/${encodeURIComponent(person.name)}`, { method: "DELETE" });
      $("#enroll-result").replaceChildren(el("div", { class: "card ok", "data-deleted": person.name },
        el("strong", { text: person.name }), " was removed from the gallery."));
    } catch (error) {
      showError($("#enroll-result"), error);
    }
    loadPeople();
  });
  return el("li", {}, el("span", { class: "person-name", text: person.name }),
    el("span", { class: "muted", text: count }), button);
}

async function loadPeople() {
  const target = $("#people-list");
  try {
    const data = await api("v1/people", { method: "GET" });
    const people = data.people || [];
    if (!people.length) {
      target.replaceChildren(el("p", { class: "muted", text: "Nobody is enrolled yet." }));
      return;
    }
    target.replaceChildren(el("ul", { class: "people-list" }, people.map(personItem)));
  } catch (error) {
    target.replaceChildren(el("p", { class: "muted", text: `Could not list people: ${error.message}` }));
  }
}

// ---------------------------------------------------------------- forms

function verifyMode() {
  return $("input[name=verify-mode]:checked").value;
}

function setVerifyMode(mode) {
  $(`input[name=verify-mode][value=${mode}]`).checked = true;
  for (const pair of $$("#verify-form .pair")) pair.hidden = pair.dataset.mode !== mode;
  $("#explain-submit").hidden = mode !== "images";
}

function need(condition, message) {
  if (!condition) throw new ApiError(0, message);
}

async function onVerify(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const target = $("#verify-result");
  await submitting(form, target, "Comparing…", async () => {
    let data;
    if (verifyMode() === "texts") {
      const a = $("#text-a").value.trim();
      const b = $("#text-b").value.trim();
      need(a && b, "Write both texts first.");
      data = await api("v1/similarity", { json: { a, b } });
    } else if (verifyMode() === "references") {
      const questioned = $("#verify-questioned").files[0];
      const references = Array.from($("#verify-references").files);
      need(questioned, "Choose the questioned image first.");
      need(references.length >= 2, "Choose at least two reference images.");
      const body = new FormData();
      body.append("questioned", questioned, questioned.name);
      for (const file of references) body.append("references", file, file.name);
      data = await api("v1/verify", { form: body });
    } else {
      const a = $("#verify-a").files[0];
      const b = $("#verify-b").files[0];
      need(a && b, "Choose two images first.");
      const body = new FormData();
      body.append("a", a, a.name);
      body.append("b", b, b.name);
      data = await api("v1/verify", { form: body });
    }
    renderVerify(target, data);
  });
}

/** Why? The two images with their attribution maps (POST /v1/explain, docs/explain.md). */
async function onExplain() {
  const form = $("#verify-form");
  const target = $("#verify-result");
  await submitting(form, target, "Explaining…", async () => {
    const a = $("#verify-a").files[0];
    const b = $("#verify-b").files[0];
    need(a && b, "Choose two images first.");
    const body = new FormData();
    body.append("a", a, a.name);
    body.append("b", b, b.name);
    const data = await api("v1/explain", { form: body });
    renderVerify(target, data);
    const overlay = (png, alt) => el("img", { src: `data:image/png;base64,${png}`, alt, width: 200 });
    target.append(
      el("figure", { class: "explanation", id: "explanation" },
        overlay(data.a_png, "first image with its attribution map"),
        overlay(data.b_png, "second image with its attribution map"),
        el("figcaption", { text: `Red: what makes the two look alike; blue: what tells them apart (${words(data.method)}).` }))
    );
  });
}

async function onIdentify(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const target = $("#identify-result");
  await submitting(form, target, "Searching the gallery…", async () => {
    const file = $("#identify-file").files[0];
    need(file, "Choose an image first.");
    const k = Math.max(1, parseInt($("#identify-k").value, 10) || 3);
    const body = new FormData();
    body.append("file", file, file.name);
    renderIdentify(target, await api(`v1/identify?k=${k}`, { form: body }));
  });
}

async function onEnroll(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const target = $("#enroll-result");
  await submitting(form, target, "Enrolling…", async () => {
    const name = $("#enroll-name").value.trim();
    const files = Array.from($("#enroll-files").files);
    need(name, "Give the person a name first.");
    need(files.length, "Choose at least one image of them.");
    const body = new FormData();
    body.append("name", name);
    for (const file of files) body.append("files", file, file.name);
    const data = await api("v1/enroll", { form: body });
    target.replaceChildren(el("div", { class: "card ok", "data-enrolled": data.name },
      el("strong", { text: data.name }),
      ` is enrolled with ${data.templates} image${data.templates === 1 ? "" : "s"}.`));
    loadPeople();
  });
}

// ---------------------------------------------------------------- tabs, key, server status

function selectTab(tab, focus = false) {
  for (const other of $$("[role=tab]")) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(`#${other.getAttribute("aria-controls")}`).hidden = !selected;
  }
  if (focus) tab.focus();
  if (tab.id === "tab-enroll") loadPeople();
  history.replaceState(null, "", `#${tab.id.slice(4)}`);
}

function setupTabs() {
  const allTabs = $$("[role=tab]");
  for (const tab of allTabs) {
    tab.addEventListener("click", () => selectTab(tab));
    tab.addEventListener("keydown", (event) => {
      const tabs = allTabs.filter((t) => !t.hidden);
      const i = tabs.indexOf(tab);
      const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[event.key];
      if (next === undefined) return;
      event.preventDefault();
      selectTab(tabs[(next + tabs.length) % tabs.length], true);
    });
  }
  const start = allTabs.find((t) => t.id === `tab-${location.hash.slice(1)}`);
  if (start) selectTab(start);
}

/** Is the served model a text model? /ready may say so under one of a few names. */
function isTextModel(info) {
  const fields = [info.modality, info.input, info.inputs, info.task, info.kind, info.model && info.model.task];
  return fields.some((v) => typeof v === "string" && /text/i.test(v));
}

/** Fit the page to the served model: text boxes for a text model (whose gallery endpoints
 * take no images), a note where a gallery is needed and the server has none. */
function adaptTo(info) {
  const kind = isTextModel(info) ? "text" : info.kind === "image" ? "image" : null;
  if (kind) for (const label of $$("fieldset.mode label[data-kind]")) label.hidden = label.dataset.kind !== kind;
  if (kind === "text") {
    defaultMode = "texts";
    setVerifyMode(defaultMode);
    for (const id of ["tab-identify", "tab-enroll"]) $(`#${id}`).hidden = true;
    if ($("[role=tab][aria-selected=true]").hidden) selectTab($("#tab-verify"));
  }
  if (info.gallery === null) {
    for (const panel of ["#panel-identify", "#panel-enroll"]) {
      $(".lead", $(panel)).after(el("p", { class: "notice", role: "note" },
        "This server has no gallery: start it with ", el("code", { text: "siamkit serve MODEL --gallery PATH" }),
        " to enroll and identify people."));
    }
  }
}

async function watchServer() {
  const status = $("#status");
  for (let delay = 1000; ; delay = Math.min(delay * 2, 10000)) {
    try {
      const response = await fetch("ready", { headers: { Accept: "application/json" } });
      const info = await response.json().catch(() => ({}));
      if (response.ok) {
        status.dataset.state = "ready";
        const kind = info.kind ? `${info.kind} model` : "";
        const name = typeof info.model === "string" ? info.model : "";
        status.textContent = `ready${name || kind ? ": " : ""}${[name, kind && (name ? `(${kind})` : kind)].filter(Boolean).join(" ")}`;
        status.title = Object.entries(info).map(([k, v]) => `${k}: ${v}`).join("\n");
        adaptTo(info);
        return;
      }
      status.dataset.state = "loading";
      status.textContent = "model loading…";
    } catch (_) {
      status.dataset.state = "down";
      status.textContent = "server unreachable";
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

function setupKey() {
  const input = $("#api-key");
  $("#api-key-form").addEventListener("submit", (event) => event.preventDefault());
  try {
    input.value = sessionStorage.getItem(KEY_STORAGE) || "";
  } catch (_) {
    /* storage disabled: the key lives in the field only */
  }
  input.addEventListener("input", () => {
    try {
      sessionStorage.setItem(KEY_STORAGE, input.value.trim());
    } catch (_) {
      /* ignore */
    }
  });
}

function main() {
  setupKey();
  setupTabs();
  $$("[data-drop]").forEach(setupDropZone);
  for (const radio of $$("input[name=verify-mode]")) {
    radio.addEventListener("change", () => setVerifyMode(verifyMode()));
  }
  $("#verify-form").addEventListener("submit", onVerify);
  $("#explain-submit").addEventListener("click", onExplain);
  $("#identify-form").addEventListener("submit", onIdentify);
  $("#enroll-form").addEventListener("submit", onEnroll);
  for (const form of $$("form")) {
    form.addEventListener("reset", () => {
      resetDropZones(form);
      $(`#${form.id.replace("-form", "-result")}`).replaceChildren();
      if (form.id === "verify-form") setTimeout(() => setVerifyMode(defaultMode), 0);
    });
  }
  $("#people-refresh").addEventListener("click", loadPeople);
  watchServer();
}

main();
