"use strict";
// tgrs report: the trajectory browser. Data is embedded as gzipped JSON (base64) and inflated with
// DecompressionStream; only one page of rows is ever in the DOM. State lives in the URL hash.
(async () => {
  const $ = (s) => document.querySelector(s);
  const PAGE = 50;
  const viewMode = new URLSearchParams(location.hash.slice(1)).get("view");
  const el = (tag, props, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
      else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  };

  const scopeSel = $("#teacher-scope");
  if (scopeSel) scopeSel.addEventListener("change", () => {
    for (const d of document.querySelectorAll("#teachers .scope")) d.hidden = d.dataset.scope !== scopeSel.value;
  });

  async function unpack(id) {
    return inflate(document.getElementById(id).textContent.trim());
  }

  async function inflate(b64) {
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return JSON.parse(await new Response(stream).text());
  }

  // a large run's index is not in the page either: its shared tables are, and its columns are in files
  // of META.index.rows candidates (report-data/index-K.js, each calling tgrsIndex(K, blob)), loaded
  // for the rows shown, and all of them (once) when a filter needs every candidate
  const META = JSON.parse($("#meta").textContent);
  const IDX = META.index || null;
  let D;
  try {
    if (typeof DecompressionStream === "undefined") throw new Error("this browser has no DecompressionStream");
    D = await unpack("data-index");
  } catch (e) {
    $("#count").textContent = "cannot read the embedded data: " + e.message;
    return;
  }
  const N = IDX ? META.n : D.id.length, T = D.teachers.length;
  const COLS = ["task", "st", "by", "score", "rnd", "reason", "line"];
  if (IDX) {
    D.id = new Array(N);
    D.marks = new Array(N);
    for (const c of COLS) D[c] = c === "score" ? new Float64Array(N) : new Int32Array(N);
    document.body.dataset.index = "paged";
  }
  const ipages = new Map(), iwaiting = new Map();
  let iloaded = 0;
  window.tgrsIndex = (k, b64) => { const w = iwaiting.get(k); if (w) w(b64); };
  function loadIndexPage(k) {
    if (!ipages.has(k)) ipages.set(k, new Promise((resolve, reject) => {
      iwaiting.set(k, (b64) => inflate(b64).then((p) => {
        const o = k * IDX.rows;
        for (let j = 0; j < p.id.length; j++) { D.id[o + j] = p.id[j]; D.marks[o + j] = p.marks[j]; }
        for (const c of COLS) D[c].set(p[c], o);
        iloaded++;
        resolve();
      }, reject));
      document.head.append(el("script", { src: `${IDX.dir}/index-${k}.js`, onerror: () =>
        reject(new Error(`cannot load ${IDX.dir}/index-${k}.js (keep it beside report.html)`)) }));
    }));
    return ipages.get(k);
  }
  function ensureRows(lo, hi) {  // the index of rows lo..hi-1
    const ps = [];
    if (IDX && hi > lo) for (let k = Math.floor(lo / IDX.rows); k <= Math.floor((hi - 1) / IDX.rows); k++) ps.push(loadIndexPage(k));
    return Promise.all(ps);
  }
  async function ensureAll() {
    if (!IDX) return;
    for (let k = 0; k < IDX.pages && iloaded < IDX.pages; k++) {
      $("#count").textContent = `loading the index: page ${k + 1} of ${IDX.pages}…`;
      await loadIndexPage(k);
    }
  }
  const taskIndex = new Map(D.tasks.map((t, i) => [t, i]));
  if (!D.rounds.length) document.body.classList.add("no-rounds");
  for (const s of D.status) $("#f-status").append(el("option", { value: s, text: s }));
  for (const n of D.names) $("#f-by").append(el("option", { value: n, text: n }));
  if (D.rounds.length) {
    $("#f-round-wrap").hidden = false;
    for (const r of D.rounds) $("#f-round").append(el("option", { value: String(r), text: "round " + r }));
  }

  // a large run's details are not in the page: files of META.paged.rows candidates beside it
  // (report-data/details-K.js, each calling tgrsDetails(K, blob)), loaded when a row is opened
  const PAGED = META.paged || null;
  const pages = new Map(), waiting = new Map();
  window.tgrsDetails = (k, b64) => { const w = waiting.get(k); if (w) w(b64); };
  function loadPage(k) {
    if (!pages.has(k)) pages.set(k, new Promise((resolve, reject) => {
      waiting.set(k, (b64) => inflate(b64).then(resolve, reject));
      document.head.append(el("script", { src: `${PAGED.dir}/details-${k}.js`, onerror: () =>
        reject(new Error(`cannot load ${PAGED.dir}/details-${k}.js (keep it beside report.html)`)) }));
    }));
    return pages.get(k);
  }
  async function rowDetails(i) {  // {msgs, tools, tl, saved, v} of row i
    if (!PAGED) { await detailsP; return { msgs: details.msgs[i], tools: details.tools, tl: details.tl[i], saved: details.saved[i], v: details.v[i] }; }
    const k = Math.floor(i / PAGED.rows), j = i % PAGED.rows, p = await loadPage(k);
    return { msgs: p.msgs[j], tools: p.tools, tl: p.tl[j], saved: p.saved[j], v: p.v[j] };
  }

  let details = null, lowMsgs = null, lowIds = null;
  const detailsP = PAGED ? Promise.resolve(null) : new Promise((r) => setTimeout(r, 50)).then(() => unpack("data-details")).then((d) => {
    details = d;
    document.body.dataset.details = "1";
    window.tgrsDetailsMs = performance.now();
    if (state.q) apply(false);
    return d;
  });
  if (PAGED) document.body.dataset.details = "paged";

  const state = { status: "all", by: "any", round: "all", task: "", q: "", page: 0 };
  let matches = new Int32Array(0), everyRow = null, applying = 0;

  async function apply(resetPage = true) {
    const t0 = performance.now(), gen = ++applying;
    if (IDX && state.status === "all" && state.by === "any" && state.round === "all" && !state.task && !state.q) {
      everyRow = everyRow || Int32Array.from({ length: N }, (_, i) => i);  // nothing to read to list them all
      matches = everyRow;
      if (resetPage) state.page = 0;
      await render();
      saveHash();
      window.tgrsLastApplyMs = performance.now() - t0;
      return;
    }
    try { await ensureAll(); } catch (e) { $("#count").textContent = e.message; return; }
    if (gen !== applying) return;
    const st = D.status.indexOf(state.status), by = D.names.indexOf(state.by);
    const rnd = state.round === "all" ? null : Number(state.round);
    const task = state.task ? (taskIndex.has(state.task) ? taskIndex.get(state.task) : -2) : -1;
    const q = state.q.toLowerCase();
    let taskHit = null, reasonHit = null;
    if (q) {
      lowIds = lowIds || D.id.map((s) => s.toLowerCase());
      taskHit = D.tasks.map((s) => s.toLowerCase().includes(q));
      reasonHit = D.reasons.map((s) => s.toLowerCase().includes(q));
      if (details && !lowMsgs) lowMsgs = details.msgs.map((s) => s.toLowerCase());
    }
    const out = new Int32Array(N);
    let k = 0;
    for (let i = 0; i < N; i++) {
      if (st >= 0 && D.st[i] !== st) continue;
      if (state.by !== "any" && (D.st[i] !== 1 || D.by[i] !== by)) continue;
      if (rnd !== null && D.rnd[i] !== rnd) continue;
      if (task !== -1 && D.task[i] !== task) continue;
      if (q && !(lowIds[i].includes(q) || taskHit[D.task[i]] || reasonHit[D.reason[i]]
                 || (lowMsgs && lowMsgs[i].includes(q)))) continue;
      out[k++] = i;
    }
    matches = out.subarray(0, k);
    if (resetPage) state.page = 0;
    await render();
    saveHash();
    window.tgrsLastApplyMs = performance.now() - t0;
  }

  function marks(i) {
    const span = el("span", { class: "marks" });
    const m = D.marks[i];
    for (let t = 0; t < T; t++) {
      const c = m[t] === "." ? "N" : m[t];
      span.append(el("b", { class: "m " + c, text: c === "N" ? "·" : c, title: D.teachers[t] }));
    }
    return span;
  }

  let rendering = 0;
  async function render() {
    const gen = ++rendering;
    const pages = Math.max(1, Math.ceil(matches.length / PAGE));
    state.page = Math.min(Math.max(state.page, 0), pages - 1);
    const frag = document.createDocumentFragment();
    const start = state.page * PAGE, stop = Math.min(start + PAGE, matches.length);
    if (IDX && stop > start) {
      try { await ensureRows(matches[start], matches[stop - 1] + 1); } catch (e) { $("#count").textContent = e.message; return; }
      if (gen !== rendering) return;
    }
    for (let j = start; j < Math.min(start + PAGE, matches.length); j++) {
      const i = matches[j], status = D.status[D.st[i]];
      const tr = el("tr", { "data-row": String(i), "data-id": D.id[i], "data-status": status,
                            "data-task": D.tasks[D.task[i]] },
        el("td", { class: "num", text: String(j + 1) }), el("td", { text: D.id[i] }),
        el("td", { text: D.tasks[D.task[i]] }), el("td", { class: "rcol", text: D.rnd[i] < 0 ? "" : String(D.rnd[i]) }),
        el("td", {}, el("span", { class: "badge " + status, text: status })),
        el("td", { text: D.by[i] >= 0 ? D.names[D.by[i]] : "" }), el("td", { class: "num", text: D.score[i].toFixed(3) }),
        el("td", {}, marks(i)), el("td", { class: "reason", text: D.reasons[D.reason[i]], title: D.reasons[D.reason[i]] }));
      tr.addEventListener("click", () => openRow(i));
      frag.append(tr);
    }
    $("#rows tbody").replaceChildren(frag);
    $("#count").textContent = `${matches.length.toLocaleString()} of ${N.toLocaleString()} trajectories match`
      + (state.q && PAGED ? " (ids, tasks and reasons only: a run this large keeps its messages in report-data/)"
         : state.q && !details ? " (message text still loading)" : "");
    $("#page-info").textContent = `page ${state.page + 1} of ${pages}`;
    $("#prev").disabled = state.page === 0;
    $("#next").disabled = state.page >= pages - 1;
  }

  function contentNode(c) {
    if (c === null || c === undefined || c === "") return null;
    if (typeof c === "string") return el("pre", { text: c });
    if (Array.isArray(c)) return el("div", {}, ...c.map((p) => el("pre", { text: p && p.type === "text" ? p.text : JSON.stringify(p, null, 2) })));
    return el("pre", { text: JSON.stringify(c, null, 2) });
  }

  function fmtS(x) {
    if (!x) return "";
    return x < 1e-3 ? (x * 1e6).toFixed(0) + " µs" : x < 1 ? (x * 1e3).toFixed(1) + " ms" : x.toFixed(2) + " s";
  }

  function pretty(args) {
    if (typeof args !== "string") return JSON.stringify(args, null, 2);
    try { return JSON.stringify(JSON.parse(args), null, 2); } catch (e) { return args; }
  }

  function messageNode(m) {
    const role = m.role || "?";
    const head = role + (m.name ? ` (${m.name})` : "") + (m.tool_call_id ? ` · result of ${m.tool_call_id}` : "");
    const box = el("div", { class: "msg " + role }, el("div", { class: "role", text: head }), contentNode(m.content));
    for (const tc of m.tool_calls || []) {
      const fn = tc.function || tc;
      box.append(el("div", { class: "tool-call" }, el("div", { class: "fn", text: `tool call ${fn.name || "?"}  ${tc.id || ""}` }),
                    el("pre", { text: pretty(fn.arguments !== undefined ? fn.arguments : fn.input) })));
    }
    return box;
  }

  function verdictTable(d) {
    const byT = new Map(d.v.map((v) => [v[0], v]));
    const saved = new Set(d.saved);
    const body = el("tbody");
    for (let t = 0; t < T; t++) {
      const v = byT.get(t), name = D.teachers[t];
      if (!v) {
        const why = saved.has(name) ? "saved by short-circuit (not called)" : "not asked";
        body.append(el("tr", { class: "verdict-row missing", "data-teacher": name },
          el("th", { text: name }), el("td", { class: "o", text: "–" }), el("td", { text: "" }), el("td", { text: why }),
          el("td", { text: "" }), el("td", { text: "" }), el("td", { text: "" }), el("td", { text: "" })));
        continue;
      }
      const [, passed, score, rationale, cached, cost, lat, err, service, wait] = v;
      const cls = err ? "error" : passed ? "pass" : "fail";
      body.append(el("tr", { class: "verdict-row " + cls, "data-teacher": name },
        el("th", { text: name }), el("td", { class: "o", text: err ? "error" : passed ? "passed" : "failed" }),
        el("td", { text: score === null ? "" : Number(score).toFixed(3) }), el("td", { class: "rationale", text: rationale }),
        el("td", { text: cached ? "cached" : "" }), el("td", { text: cost ? "$" + cost.toFixed(5) : "" }),
        el("td", { text: fmtS(lat) + (service !== undefined && service !== null ? ` (service ${fmtS(service)}, limiter wait ${fmtS(wait || 0)})` : "") }),
        el("td", { text: err || "" })));
    }
    const head = el("tr", {}, ...["teacher", "verdict", "score", "rationale", "cache", "cost", "latency", "error"].map((h) => el("th", { text: h })));
    return el("table", { class: "verdicts" }, el("thead", {}, head), body);
  }

  async function openRow(i) {
    const aside = $("#detail");
    aside.hidden = false;
    aside.dataset.openId = D.id[i];
    aside.dataset.row = String(i);
    $("#d-title").textContent = D.id[i];
    const status = D.status[D.st[i]];
    const kv = el("div", { class: "kv" });
    const pairs = [["decision", el("span", { class: "badge " + status, text: status })], ["task", D.tasks[D.task[i]]],
      ["decided by", D.by[i] >= 0 ? D.names[D.by[i]] : "–"], ["panel score", D.score[i].toFixed(4)],
      ["reason", D.reasons[D.reason[i]]], ["input line", String(D.line[i])]];
    if (D.rnd[i] >= 0) pairs.splice(2, 0, ["round", String(D.rnd[i])]);
    for (const [k, v] of pairs) kv.append(el("div", { text: k }), el("div", {}, v));
    const body = $("#d-body");
    body.replaceChildren(kv, el("p", { class: "note", text: "loading messages and verdicts…" }));
    state.open = D.id[i];
    saveHash();
    let d;
    try { d = await rowDetails(i); } catch (e) { body.replaceChildren(kv, el("p", { class: "note", text: e.message })); return; }
    if (aside.dataset.row !== String(i)) return;
    const msgs = d.msgs ? JSON.parse(d.msgs) : null;
    const parts = [kv, el("h3", { text: "Verdicts" }), verdictTable(d), el("h3", { text: "Messages" })];
    if (msgs) parts.push(el("div", { class: "messages" }, ...msgs.map(messageNode)));
    else parts.push(el("p", { class: "note", text: `messages are not stored for ${status} candidates; see input line ${D.line[i]}` }));
    const tools = JSON.parse(d.tools[d.tl] || "[]");
    if (tools.length) parts.push(el("details", {}, el("summary", { text: `tools offered (${tools.length})` }),
                                    el("pre", { text: JSON.stringify(tools, null, 2) })));
    body.replaceChildren(...parts);
    aside.dataset.loaded = "1";
  }

  function closeDetail() {
    $("#detail").hidden = true;
    $("#detail").dataset.loaded = "0";
    delete state.open;
    saveHash();
  }

  function saveHash() {
    const p = new URLSearchParams();
    for (const [k, d] of [["status", "all"], ["by", "any"], ["round", "all"], ["task", ""], ["q", ""]]) {
      if (state[k] !== d) p.set(k, state[k]);
    }
    if (state.page) p.set("page", String(state.page + 1));
    if (state.open) p.set("open", state.open);
    if (viewMode) p.set("view", viewMode);
    const h = p.toString();
    if (location.hash.slice(1) !== h) history.replaceState(null, "", h ? "#" + h : location.pathname + location.search);
  }

  const inputs = { status: "#f-status", by: "#f-by", round: "#f-round", task: "#f-task", q: "#f-q" };
  let timer = 0;
  for (const [k, sel] of Object.entries(inputs)) {
    const node = $(sel);
    node.addEventListener(node.tagName === "SELECT" ? "change" : "input", () => {
      state[k] = node.value.trim();
      clearTimeout(timer);
      timer = setTimeout(apply, node.tagName === "SELECT" ? 0 : 150);
    });
  }
  $("#f-clear").addEventListener("click", () => {
    Object.assign(state, { status: "all", by: "any", round: "all", task: "", q: "" });
    for (const [k, sel] of Object.entries(inputs)) $(sel).value = state[k];
    apply();
  });
  $("#prev").addEventListener("click", () => { state.page--; render(); saveHash(); });
  $("#next").addEventListener("click", () => { state.page++; render(); saveHash(); });
  $("#d-close").addEventListener("click", closeDetail);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && !$("#detail").hidden) closeDetail(); });

  // initial state from the URL hash: #status=rejected&q=task-3&page=2&open=cand-7&section=browser
  // (view=browser shows the browser alone: for screenshots)
  const h = new URLSearchParams(location.hash.slice(1));
  for (const [k, sel] of Object.entries(inputs)) {
    if (h.has(k)) { state[k] = h.get(k); $(sel).value = state[k]; }
  }
  if (h.has("q")) await detailsP;
  await apply();
  state.page = Math.max(0, Number(h.get("page") || 1) - 1);
  await render();
  document.body.dataset.ready = "1";
  window.tgrsFirstPageMs = performance.now();
  if (viewMode === "browser") document.body.classList.add("only-browser");
  if (h.get("section")) document.getElementById(h.get("section"))?.scrollIntoView();
  const open = h.get("open");
  if (open) {
    if (open !== "first") await ensureAll();
    const i = open === "first" ? matches[0] : D.id.indexOf(open);
    if (i !== undefined && i >= 0) await openRow(i);
  }
})();
