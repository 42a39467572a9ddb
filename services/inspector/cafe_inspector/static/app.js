// The shard browser page. Plain JS, no build step. Every text from the data (prompts, subjects,
// reasons, errors) goes in through textContent, never innerHTML: shard contents are not trusted.
"use strict";

const PAGE = 24;
const state = {
  set: null,
  summary: null,
  offset: 0,
  inputOffset: 0,
  filters: new URLSearchParams(),
  current: null, // the key open in the detail dialog
};

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = body.detail || response.statusText;
    showError(`${response.status}: ${message}`);
    throw new Error(message);
  }
  showError("");
  return body;
}

function query(params) {
  return new URLSearchParams({ set: state.set, ...params }).toString();
}

function imageUrl(key, kind, size) {
  return `/api/image?${query({ key, kind, size })}`;
}

function fmt(n) {
  return Number(n).toLocaleString("en-US");
}

function score(v) {
  return Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(3);
}

// -- sets and summary ------------------------------------------------------------------------

async function loadSets() {
  const { sets } = await api("/api/sets");
  const select = $("set-select");
  select.replaceChildren(
    ...sets.map((s) =>
      el("option", { value: s.path, text: `${s.path} (${s.problem ? "unreadable" : fmt(s.num_samples) + " samples"})` })
    )
  );
  if (!sets.length) {
    $("set-summary").textContent = "no shard sets under this folder";
    return;
  }
  const wanted = new URLSearchParams(location.search).get("set");
  select.value = sets.some((s) => s.path === wanted) ? wanted : sets[0].path;
  await selectSet(select.value);
}

async function selectSet(set) {
  state.set = set;
  state.offset = 0;
  state.inputOffset = 0;
  history.replaceState(null, "", `/?set=${encodeURIComponent(set)}`);
  const summary = await api(`/api/summary?${query({})}`);
  state.summary = summary;
  renderSummary(summary);
  $("filters").reset(); // another set: its rounds, reasons and scores differ, start unfiltered
  $("input-filters").reset();
  buildFilters(summary);
  readFilters();
  await Promise.all([loadPage(), loadInputs()]);
  if (!$("stats").hidden) await loadStats();
}

function renderSummary(s) {
  const parts = [
    ["samples", fmt(s.num_samples)],
    ["shards", fmt(s.num_shards)],
    ["inputs", fmt(s.num_inputs)],
    ["ok", fmt(s.status.ok)],
    ["skipped", fmt(s.status.skipped)],
    ["failed", fmt(s.status.failed)],
    ["flagged", fmt(s.num_flagged)],
  ];
  const box = $("set-summary");
  box.replaceChildren();
  for (const [name, value] of parts) box.append(el("b", { text: value }), ` ${name}  `);
  if (s.index !== "ok") box.append(el("span", { class: "chip problem", text: `index ${s.index}` }));
}

function buildFilters(s) {
  $("f-rounds").replaceChildren(
    ...Object.keys(s.rounds).map((r) =>
      el("label", {}, el("input", { type: "checkbox", id: `f-round-${r}`, value: r }), ` ${r}`)
    )
  );
  const okReasons = Object.keys((s.reasons && s.reasons.ok) || {});
  $("f-reason").replaceChildren(el("option", { value: "", text: "any" }), ...okReasons.map((r) => el("option", { text: r })));
  const allReasons = [...new Set(Object.values(s.reasons || {}).flatMap((c) => Object.keys(c)))].sort();
  $("i-reason").replaceChildren(el("option", { value: "", text: "any" }), ...allReasons.map((r) => el("option", { text: r })));
  const names = [...s.score_names, ...s.quality_names.map((n) => `quality.${n}`)];
  const box = $("f-scores");
  box.replaceChildren();
  for (const name of names) {
    const safe = name.replace(/[^A-Za-z0-9_-]/g, "_");
    box.append(
      el("span", { text: name }),
      el("input", { id: `f-score-${safe}-min`, "data-score": name, "data-bound": "min", type: "number", step: "any", placeholder: "min" }),
      el("input", { id: `f-score-${safe}-max`, "data-score": name, "data-bound": "max", type: "number", step: "any", placeholder: "max" })
    );
  }
  if (!names.length) box.append(el("span", { text: "no scores in this set" }));
}

function readFilters() {
  const params = new URLSearchParams();
  for (const box of $("f-rounds").querySelectorAll("input:checked")) params.append("round", box.value);
  const subject = $("f-subject").value.trim();
  if (subject) params.set("subject", subject);
  if ($("f-reason").value) params.set("reason", $("f-reason").value);
  if ($("f-flagged").value !== "any") params.set("flagged", $("f-flagged").value);
  const bounds = {};
  for (const input of $("f-scores").querySelectorAll("input")) {
    if (input.value === "") continue;
    bounds[input.dataset.score] = bounds[input.dataset.score] || { min: "", max: "" };
    bounds[input.dataset.score][input.dataset.bound] = input.value;
  }
  for (const [name, b] of Object.entries(bounds)) params.append("score", `${name}:${b.min}:${b.max}`);
  state.filters = params;
}

// -- triples ---------------------------------------------------------------------------------

// A page answers as soon as it is full; the total of a filter comes from a second request, so
// cards never wait for a count. `seq` drops answers to requests the user has since replaced.
let pageSeq = 0;

async function loadPage() {
  const seq = ++pageSeq;
  const params = new URLSearchParams(state.filters);
  params.set("set", state.set);
  const filterQuery = params.toString();
  params.set("offset", state.offset);
  params.set("limit", PAGE);
  const page = await api(`/api/samples?${params}`);
  if (seq !== pageSeq) return;
  renderCards(page);
  if (page.total === null) {
    const count = await api(`/api/samples/count?${filterQuery}`);
    if (seq === pageSeq) showRange($("page-info"), page, count);
  }
}

function showRange(box, page, count) {
  const first = page.items.length ? page.offset + 1 : 0;
  const last = page.offset + page.items.length;
  const known = count || page;
  const total = known.total === null ? `${fmt(known.counted)}+` : fmt(known.total);
  box.textContent = `${fmt(first)}–${fmt(last)} of ${total}`;
}

function renderCards(page) {
  const cards = $("cards");
  cards.replaceChildren(...page.items.map(card));
  if (!page.items.length) cards.append(el("div", { class: "empty", text: "no triples match these filters" }));
  showRange($("page-info"), page, null);
  $("prev").disabled = page.offset === 0;
  $("next").disabled = page.next_offset === null;
}

function card(item) {
  const scores = Object.entries(item.scores).map(([n, v]) => el("span", { class: "chip", text: `${n} ${score(v)}` }));
  const quality = Object.entries(item.quality).map(([n, v]) => el("span", { class: "chip", text: `${n} ${score(v)}` }));
  const node = el(
    "article",
    { class: "card" + (item.flag ? " flagged" : ""), "data-key": item.key, tabindex: "0", onclick: () => openDetail(item.key) },
    el(
      "div",
      { class: "pair" },
      el("img", { class: "checker", loading: "lazy", alt: "reference", src: imageUrl(item.key, "reference", 256) }),
      el("img", { loading: "lazy", alt: "target with mask outline", src: imageUrl(item.key, "overlay", 256) })
    ),
    el(
      "div",
      { class: "body" },
      el("p", { class: "prompt", text: item.prompt ?? "(prompt unreadable)", title: item.prompt ?? "" }),
      el(
        "div",
        { class: "meta" },
        el("span", { class: "chip round", text: `round ${item.round}` }),
        el("span", { text: item.subject }),
        item.flag ? el("span", { class: "chip bad", text: "flagged", title: item.flag.reason }) : null,
        item.problem ? el("span", { class: "chip problem", text: "unreadable", title: item.problem }) : null
      ),
      el("div", { class: "meta" }, ...scores, ...quality),
      el("div", { class: "key", text: `${item.key} · ${item.shard}` })
    )
  );
  node.addEventListener("keydown", (e) => e.key === "Enter" && openDetail(item.key));
  return node;
}

// -- one triple ------------------------------------------------------------------------------

async function openDetail(key) {
  const d = await api(`/api/sample?${query({ key })}`);
  state.current = key;
  $("d-title").textContent = `${d.key} · ${d.shard} · round ${d.round}`;
  $("d-reference").src = imageUrl(key, "reference", 512);
  $("d-overlay").src = imageUrl(key, "overlay", 512);
  $("d-mask").src = imageUrl(key, "mask", 512);
  $("d-prompt").textContent = d.prompt;
  const facts = [
    ["subject", d.subject],
    ["caption", d.metadata.caption],
    ["box", JSON.stringify(d.metadata.box_xyxy)],
    ["scores", Object.entries(d.scores).map(([n, v]) => `${n} ${score(v)}`).join(", ") || "none"],
    ["quality", Object.entries(d.quality).map(([n, v]) => `${n} ${score(v)}`).join(", ") || "none"],
    ["gates", (d.metadata.gates || []).join(", ")],
    ["source", (d.metadata.source && d.metadata.source.uri) || ""],
    ["input", d.input ? `${d.input.input_key}: ${d.input.status}${d.input.reason ? " (" + d.input.reason + ")" : ""}` : "no status row"],
  ];
  $("d-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v ?? "" })]));
  $("d-metadata").textContent = JSON.stringify(d.metadata, null, 2);
  renderFlag(d.flag);
  if (!$("detail").open) $("detail").showModal();
}

function renderFlag(flag) {
  const box = $("d-flag-state");
  box.className = flag ? "bad" : "";
  box.textContent = flag ? `Flagged as bad: “${flag.reason}” (${flag.flagged_at})` : "Not flagged.";
  $("unflag-button").disabled = !flag;
}

async function flagCurrent() {
  const preset = $("flag-preset").value;
  const details = $("flag-reason").value.trim();
  const reason = [preset, details].filter(Boolean).join(": ");
  if (!reason) {
    showError("say why the sample is bad: pick a reason or write one");
    return;
  }
  const body = JSON.stringify({ set: state.set, key: state.current, reason });
  const { flag } = await api("/api/flags", { method: "POST", headers: { "content-type": "application/json" }, body });
  renderFlag(flag);
  await refreshAfterFlag();
}

async function unflagCurrent() {
  await api(`/api/flags?${query({ key: state.current })}`, { method: "DELETE" });
  renderFlag(null);
  await refreshAfterFlag();
}

async function refreshAfterFlag() {
  state.summary = await api(`/api/summary?${query({})}`);
  renderSummary(state.summary);
  await loadPage();
}

// -- inputs ----------------------------------------------------------------------------------

let inputSeq = 0;

async function loadInputs() {
  const seq = ++inputSeq;
  const filters = {};
  if ($("i-status").value) filters.status = $("i-status").value;
  if ($("i-reason").value) filters.reason = $("i-reason").value;
  const page = await api(`/api/inputs?${query({ ...filters, offset: state.inputOffset, limit: 50 })}`);
  if (seq !== inputSeq) return;
  const body = $("input-table").querySelector("tbody");
  body.replaceChildren(
    ...page.items.map((r) =>
      el(
        "tr",
        {},
        el("td", { text: r.shard }),
        el("td", { text: r.input_key, title: r.source_uri }),
        el("td", { class: `status-${r.status}`, text: r.status }),
        el("td", { text: r.reason }),
        el("td", { class: "err", text: r.error }),
        el("td", { text: String(r.sample_keys.length) })
      )
    )
  );
  if (!page.items.length) body.append(el("tr", {}, el("td", { colspan: "6", class: "empty", text: "no inputs match" })));
  showRange($("i-page-info"), page, null);
  $("i-prev").disabled = page.offset === 0;
  $("i-next").disabled = page.next_offset === null;
  if (page.total === null) {
    const count = await api(`/api/inputs/count?${query(filters)}`);
    if (seq === inputSeq) showRange($("i-page-info"), page, count);
  }
}

// -- stats -----------------------------------------------------------------------------------

async function loadStats() {
  const s = await api(`/api/stats?${query({})}`);
  const blocks = [];
  const rounds = el("div", {}, el("h3", { text: `usable samples per round (${fmt(s.num_flagged)} flagged left out)` }));
  for (const [r, n] of Object.entries(s.rounds)) rounds.append(el("div", { text: `round ${r}: ${fmt(n)}` }));
  blocks.push(rounds);
  for (const [group, dists] of [["scores", s.scores], ["quality", s.quality]]) {
    for (const [name, d] of Object.entries(dists)) {
      const block = el("div", {}, el("h3", { text: `${group}.${name}` }));
      if (!d.count) {
        block.append(el("div", { text: "no values" }));
      } else {
        const top = Math.max(...d.histogram.counts, 1);
        block.append(
          el("div", { class: "bars" }, ...d.histogram.counts.map((c) => el("div", { style: `height:${(100 * c) / top}%`, title: String(c) }))),
          el("div", { class: "meta", text: `n ${fmt(d.count)} · min ${score(d.min)} · p50 ${score(d.p50)} · max ${score(d.max)}` })
        );
      }
      blocks.push(block);
    }
  }
  $("stats-body").replaceChildren(el("div", { class: "stats-grid" }, ...blocks));
}

// -- wiring ----------------------------------------------------------------------------------

function showTab(name) {
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.tab === name);
  for (const panel of ["triples", "inputs", "stats"]) $(panel).hidden = panel !== name;
  if (name === "stats") loadStats();
}

document.addEventListener("DOMContentLoaded", () => {
  $("set-select").addEventListener("change", (e) => selectSet(e.target.value));
  $("filters").addEventListener("submit", (e) => {
    e.preventDefault();
    readFilters();
    state.offset = 0;
    loadPage();
  });
  $("reset-filters").addEventListener("click", () => {
    $("filters").reset();
    readFilters();
    state.offset = 0;
    loadPage();
  });
  $("prev").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - PAGE);
    loadPage();
  });
  $("next").addEventListener("click", () => {
    state.offset += PAGE;
    loadPage();
  });
  $("input-filters").addEventListener("submit", (e) => {
    e.preventDefault();
    state.inputOffset = 0;
    loadInputs();
  });
  $("i-prev").addEventListener("click", () => {
    state.inputOffset = Math.max(0, state.inputOffset - 50);
    loadInputs();
  });
  $("i-next").addEventListener("click", () => {
    state.inputOffset += 50;
    loadInputs();
  });
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showTab(tab.dataset.tab));
  $("flag-button").addEventListener("click", flagCurrent);
  $("unflag-button").addEventListener("click", unflagCurrent);
  // api() already shows its errors; anything else (a bug) shows too instead of failing silently
  window.addEventListener("unhandledrejection", (e) => {
    if (!$("error").textContent) showError(`error: ${e.reason}`);
  });
  loadSets();
});
