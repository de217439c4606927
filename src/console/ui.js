// cutover console: polls the admin API and draws routes, pools, charts and
// history; writes through the same API, asking before each one and asking
// for the admin token when the proxy answers 401. No framework, no build,
// nothing fetched from anywhere but this origin.
"use strict";
(function () {
  const POLL_MS = 1500;
  const WINDOW_S = 900;
  const TOKEN_KEY = "cutover-admin-token";
  const state = { status: null, history: [], rollouts: null, series: {}, seriesNow: 0, pools: {} };
  const $ = (id) => document.getElementById(id);
  // The SVG namespace, taken from an <svg> the HTML parser made, so the
  // page's text holds no URL at all.
  const SVG_NS = $("svg-ns").namespaceURI;

  // Build an element; strings become text nodes, never markup.
  function h(tag, attrs, ...children) {
    const el = tag.startsWith("svg:")
      ? document.createElementNS(SVG_NS, tag.slice(4))
      : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "onclick") el.addEventListener("click", v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  // One colour per pool name, stable across polls and cards.
  // The usual names keep their colour; others take the next free one.
  const NAMED = { blue: 0, stable: 0, primary: 0, green: 1, canary: 2, baseline: 5 };
  function poolClass(name) {
    if (!(name in state.pools)) {
      const used = new Set(Object.values(state.pools));
      let c = NAMED[name];
      if (c === undefined || used.has(c)) {
        c = [3, 4, 5, 6, 7, 0, 1, 2].find((i) => !used.has(i));
        if (c === undefined) c = Object.keys(state.pools).length % 8;
      }
      state.pools[name] = c;
    }
    return "p" + state.pools[name];
  }

  function pct(x, digits) { return (x * 100).toFixed(digits === undefined ? 1 : digits) + "%"; }
  function ms(x) { return x === null || x === undefined ? "–" : (x >= 1000 ? (x / 1000).toFixed(2) + " s" : x.toFixed(x < 10 ? 1 : 0) + " ms"); }
  function num(x) { return typeof x === "number" ? x.toLocaleString("en") : String(x); }
  function dur(v) {
    if (typeof v === "string") return v;
    if (typeof v !== "number") return "–";
    const s = Math.max(0, Math.round(v / 1000));
    return s >= 60 ? Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s" : s + "s";
  }
  function text(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "object") {
      return Object.entries(v).map(([k, x]) => (x && typeof x === "object" ? k + " (" + text(x) + ")" : k + " " + text(x))).join(", ");
    }
    return typeof v === "number" ? num(Math.round(v * 10000) / 10000) : String(v);
  }

  // ---- reading ----
  // A proxy that accepts and never answers is as gone as one that refuses.
  const TIMEOUT_MS = 5000;
  async function getJSON(path) {
    const r = await fetch(path, { cache: "no-store", headers: { Accept: "application/json" }, signal: AbortSignal.timeout(TIMEOUT_MS) });
    if (r.status === 404) return { missing: true };
    if (!r.ok) throw new Error(path + ": " + r.status);
    return { body: await r.json() };
  }

  let polling = false;
  async function poll() {
    if (polling) return;
    polling = true;
    try {
      const [status, history, series, rollouts] = await Promise.all([
        getJSON("/status"), getJSON("/history"),
        getJSON("/series?since=" + state.seriesNow).catch(() => ({ missing: true })),
        getJSON("/rollouts").catch(() => ({ missing: true })),
      ]);
      if (status.missing || history.missing) throw new Error("no /status");
      state.status = status.body;
      state.history = history.body;
      state.rollouts = rollouts.missing ? null : rollouts.body;
      if (!series.missing) mergeSeries(series.body);
      connected(true);
      render();
    } catch (e) {
      connected(false);
    } finally {
      polling = false;
    }
  }

  function connected(ok) {
    $("banner").hidden = ok;
    document.body.classList.toggle("offline", !ok);
    if (ok) $("updated").textContent = new Date().toLocaleTimeString("en-GB");
  }

  function mergeSeries(body) {
    if (!body || !body.pools) return;
    const now = body.now || state.seriesNow;
    for (const [pool, points] of Object.entries(body.pools)) {
      const list = state.series[pool] || (state.series[pool] = []);
      for (const p of points) if (!list.length || p.t > list[list.length - 1].t) list.push(p);
    }
    for (const [pool, list] of Object.entries(state.series)) {
      while (list.length && list[0].t <= now - WINDOW_S) list.shift();
      if (!list.length && !(pool in body.pools)) delete state.series[pool];
    }
    state.seriesNow = now;
  }

  // ---- drawing ----
  // Re-render a container only when its data changed, keeping focus on the
  // control that had it, so polling never steals the keyboard.
  const drawn = {};
  function replace(id, key, build) {
    if (drawn[id] === key) return;
    drawn[id] = key;
    const focused = document.activeElement && document.activeElement.id;
    $(id).replaceChildren(...build());
    if (focused && $(focused) && document.activeElement !== $(focused)) $(focused).focus();
  }

  function render() {
    const s = state.status;
    $("revision").textContent = s.revision === undefined ? "–" : String(s.revision);
    const lr = s.last_reload;
    $("reload").textContent = !lr ? "none yet" : lr.ok ? "ok " + (lr.time || "") : "FAILED: " + (lr.error || "");
    $("reload").className = lr && !lr.ok ? "badge bad" : "";
    for (const p of s.pools || []) poolClass(p.name);
    const routesKey = JSON.stringify([s.routes, s.pools && s.pools.map((p) => [p.name, p.tripped]), state.rollouts]);
    replace("routes", routesKey, () => (s.routes || []).map(routeCard));
    const poolsKey = JSON.stringify([s.pools, state.seriesNow, Object.keys(state.series)]);
    replace("pools", poolsKey, () => (s.pools || []).map(poolCard));
    replace("history", JSON.stringify(state.history.slice(0, 50)), () => historyItems(state.history.slice(0, 50)));
  }

  function tripOf(pool) {
    const p = (state.status.pools || []).find((x) => x.name === pool);
    return p && p.tripped;
  }

  function splitBar(label, split, id) {
    const entries = Object.entries(split || {});
    const total = entries.reduce((a, [, w]) => a + w, 0);
    const words = entries.map(([p, w]) => p + " " + (total ? pct(w / total, 0) : "0%")).join(", ");
    return [
      h("div", { class: "bar-label", id: id + "-label" }, label + ": ", words || "none"),
      h("div", { class: "bar", role: "img", "aria-labelledby": id + "-label", "data-split": JSON.stringify(split || {}) },
        entries.map(([p, w]) => h("span", {
          class: poolClass(p) + (w ? "" : " zero"), style: null, title: p + " " + w,
          "data-grow": w,
        }, w && total ? p + " " + pct(w / total, 0) : ""))),
    ];
  }

  function routeCard(r) {
    const pools = Object.keys(r.effective || r.configured || {});
    const tripped = pools.filter((p) => tripOf(p));
    const id = "route-" + r.name;
    const card = h("article", { class: "card" + (tripped.length ? " tripped" : ""), "aria-labelledby": id + "-h", "data-route": r.name },
      h("h3", { id: id + "-h" }, r.name,
        r.override ? h("span", { class: "badge warn" }, "override") : null,
        tripped.map((p) => h("span", { class: "badge bad", "data-trip": p }, p + " tripped"))),
      splitBar("Configured", r.configured, id + "-configured"),
      splitBar("Effective", r.effective, id + "-effective"),
      h("ul", { class: "legend", "aria-hidden": "true" }, pools.map((p) => h("li", {}, h("i", { class: poolClass(p) }), p))),
      rolloutPanel(r.name),
      h("div", { class: "actions" },
        h("button", { type: "button", id: "switchback-" + r.name, class: "danger", onclick: () => askSwitchback(r) }, "Switch back"),
        h("button", { type: "button", id: "set-" + r.name, onclick: () => askSplit(r) }, "Set split…"),
        r.override ? h("button", { type: "button", id: "clear-" + r.name, onclick: () => askClear(r) }, "Clear override") : null));
    // Widths through the CSSOM: the policy forbids inline style attributes.
    for (const span of card.querySelectorAll(".bar span")) span.style.flexGrow = span.getAttribute("data-grow");
    return card;
  }

  function rolloutsList() {
    const r = state.rollouts;
    if (!r) return [];
    if (Array.isArray(r)) return r;
    if (Array.isArray(r.rollouts)) return r.rollouts;
    return Object.entries(r).map(([route, v]) => Object.assign({ route }, v));
  }

  function verdictBadge(v) {
    if (!v) return null;
    const kind = typeof v === "string" ? v : v.kind || v.verdict || "unknown";
    const cls = kind === "healthy" ? "good" : kind === "failing" ? "bad" : "warn";
    return h("span", { class: "badge " + cls, "data-verdict": kind }, kind);
  }

  function rolloutPanel(route) {
    if (!state.rollouts) return null;
    const ro = rolloutsList().find((x) => (x.route || x.name) === route);
    if (!ro) return null;
    const st = typeof ro.state === "object" && ro.state ? ro.state.name || text(ro.state) : ro.state;
    const steps = ro.steps && (Array.isArray(ro.steps) ? ro.steps.length : ro.steps);
    const step = ro.step === undefined || ro.step === null ? "–" : (Number(ro.step) + 1) + (steps ? " of " + steps : "");
    const share = ro.weight !== undefined ? ro.weight : ro.canary_share;
    const hold = ro.hold_left_ms !== undefined ? ro.hold_left_ms : ro.hold_left;
    const cmd = (c, label, cls) => h("button", { type: "button", id: "rollout-" + c + "-" + route, class: cls,
      onclick: () => askRollout(route, c) }, label);
    return h("div", { class: "rollout", "aria-label": "Rollout of " + route },
      h("h4", {}, "Rollout ", h("span", { class: "badge info" }, st || "unknown"), " ", verdictBadge(ro.verdict)),
      h("dl", { class: "kv" },
        h("dt", {}, "Step"), h("dd", {}, step),
        share !== undefined ? [h("dt", {}, "Canary share"), h("dd", {}, share + "%")] : null,
        h("dt", {}, "Hold left"), h("dd", {}, dur(hold)),
        ro.reason ? [h("dt", {}, "Why"), h("dd", {}, text(ro.reason))] : null,
        ro.verdict && ro.verdict.reason ? [h("dt", {}, "Verdict"), h("dd", {}, ro.verdict.reason)] : null),
      h("div", { class: "actions" }, cmd("pause", "Pause"), cmd("resume", "Resume"), cmd("promote", "Promote"),
        cmd("abort", "Abort", "danger")));
  }

  // A small time-series chart: the pool's own line, the baseline dashed,
  // the limit as a red line; the y axis starts at 0.
  function chart(title, unit, own, base, limit, fmt) {
    // The x axis covers the history held, from one minute up to fifteen.
    const W = 300, H = 64, now = state.seriesNow;
    const first = Math.min(...own.concat(base).map((p) => p[0]), now);
    const span = Math.min(WINDOW_S, Math.max(60, now - first)), t0 = now - span;
    const vals = own.concat(base).map((p) => p[1]).filter((v) => v !== null && isFinite(v));
    let max = Math.max(1e-9, ...vals, limit ? limit * 1.25 : 0);
    if (unit === "rate") max = Math.min(1, Math.max(max, 0.02));
    const x = (t) => ((t - t0) / span) * W;
    const y = (v) => H - 2 - (v / max) * (H - 4);
    const line = (pts, cls) => {
      const d = pts.filter((p) => p[1] !== null && isFinite(p[1])).map((p) => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" ");
      return d ? h("svg:polyline", { class: cls, points: d }) : null;
    };
    const last = own.length ? own[own.length - 1][1] : null;
    const label = title + ", last " + Math.round(span / 60) + " min: now " + (last === null ? "no data" : fmt(last)) +
      (limit ? ", limit " + fmt(limit) : "") + (base.length ? ", baseline dashed" : "");
    return h("figure", {},
      h("figcaption", {}, h("span", {}, title), h("b", {}, last === null ? "–" : fmt(last))),
      h("svg:svg", { class: "chart", viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none", role: "img", "aria-label": label },
        limit ? h("svg:line", { class: "limit", x1: 0, x2: W, y1: y(limit), y2: y(limit) }) : null,
        line(base, "base"), line(own, "own")));
  }

  function figures(pool) {
    const pts = state.series[pool] || [];
    return {
      rps: pts.map((p) => [p.t, p.requests / (p.span || 1)]),
      err: pts.map((p) => [p.t, p.requests ? p.failures / p.requests : null]),
      p99: pts.map((p) => [p.t, p.p99_ms === undefined ? null : p.p99_ms]),
    };
  }

  function guardLimit(g, keys) {
    if (!g) return null;
    for (const k of keys) {
      const v = g[k] !== undefined ? g[k] : g.limits && g.limits[k];
      if (typeof v === "number") return v;
    }
    return null;
  }

  function poolCard(p) {
    const g = p.guard;
    const id = "pool-" + p.name;
    const baseName = g && (typeof g.baseline === "string" ? g.baseline : g.baseline && g.baseline.pool);
    const own = figures(p.name), base = baseName ? figures(baseName) : { rps: [], err: [], p99: [] };
    const backends = p.backends || [];
    const healthy = backends.filter((b) => b.healthy && !b.draining).length;
    const evidence = g && g.evidence;
    return h("article", { class: "card" + (p.tripped ? " tripped" : ""), "aria-labelledby": id + "-h", "data-pool": p.name },
      h("h3", { id: id + "-h" }, h("i", { class: "swatch " + poolClass(p.name), "aria-hidden": "true" }), p.name,
        p.tripped ? h("span", { class: "badge bad", "data-tripped": p.name }, "tripped: " + (p.tripped.reason || "")) : null,
        g ? verdictBadge(g.verdict) : null,
        baseName ? h("span", { class: "badge info" }, "baseline " + baseName) : null),
      p.tripped && p.tripped.detail ? h("p", { class: "reason" }, p.tripped.detail) : null,
      g && g.verdict && g.verdict.reason ? h("p", { class: "reason" }, g.verdict.reason) : null,
      g ? h("dl", { class: "kv" },
        h("dt", {}, "Guard window"), h("dd", {}, num(g.requests) + " requests, " + num(g.failures) + " failed"),
        h("dt", {}, "Error rate"), h("dd", {}, typeof g.error_rate === "number" ? pct(g.error_rate, 2) : "–"),
        h("dt", {}, "p99"), h("dd", {}, ms(g.p99_ms)),
        evidence ? [h("dt", {}, "Evidence"), h("dd", {}, text(evidence))] : null) : null,
      h("div", { class: "charts" },
        chart("Requests/s", "rps", own.rps, base.rps, null, (v) => v.toFixed(1)),
        chart("Error rate", "rate", own.err, base.err, guardLimit(g, ["max_error_rate"]), (v) => pct(v, 1)),
        chart("p99", "ms", own.p99, base.p99, guardLimit(g, ["max_p99_ms", "max_p99_latency_ms"]), ms)),
      h("table", {},
        h("caption", { class: "bar-label" }, "Backends: " + healthy + " of " + backends.length + " serving"),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Address"), h("th", { scope: "col" }, "Health"),
          h("th", { scope: "col" }, "In flight"), h("th", { scope: "col" }, "State"))),
        h("tbody", {}, backends.map((b) => h("tr", {},
          h("td", {}, b.address),
          h("td", {}, h("span", { class: "badge " + (b.healthy ? "good" : "bad") }, b.healthy ? "healthy" : b.ejected ? "ejected" : "unhealthy")),
          h("td", { class: "num" }, num(b.in_flight)),
          h("td", {}, b.draining ? h("span", { class: "badge warn" }, "draining") : "serving"))))),
      h("div", { class: "actions" },
        p.tripped
          ? h("button", { type: "button", id: "reset-" + p.name, onclick: () => askPool(p.name, "reset") }, "Reset trip")
          : h("button", { type: "button", id: "trip-" + p.name, class: "danger", onclick: () => askPool(p.name, "trip") }, "Trip (roll back)")));
  }

  function causeClass(cause) {
    const c = String(cause || "").toLowerCase();
    if (/guard|trip|abort|fail/.test(c)) return "bad";
    if (/reset|promot/.test(c)) return "good";
    if (/switchback|override|admin|rollout/.test(c)) return "info";
    return "";
  }

  function historyItems(list) {
    if (!list.length) return [h("li", { class: "empty" }, "No revisions yet.")];
    return list.map((rev) => h("li", { class: causeClass(rev.cause), "data-revision": rev.revision },
      h("div", { class: "when" }, "#" + rev.revision + " · ", h("time", { datetime: rev.time }, rev.time)),
      h("div", { class: "cause" }, rev.cause),
      h("div", { class: "splits" }, Object.entries(rev.splits || {}).map(([r, s]) => r + ": " + text(s)).join(" · "))));
  }

  // ---- writing ----
  async function write(method, path, body) {
    const headers = { "Content-Type": "application/json", "X-Cutover-Admin": "1" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = "Bearer " + token;
    const r = await fetch(path, { method, headers, cache: "no-store", signal: AbortSignal.timeout(10000), body: JSON.stringify(body === undefined ? {} : body) });
    let answer = {};
    try { answer = await r.json(); } catch (e) { answer = {}; }
    return { status: r.status, answer };
  }

  let pending = null;
  function ask(title, message, action, editor) {
    const d = $("dialog");
    $("dialog-title").textContent = title;
    $("dialog-text").textContent = message;
    $("dialog-editor").replaceChildren(...(editor ? [editor] : []));
    $("dialog-error").textContent = "";
    $("dialog-token").hidden = true;
    $("token").value = "";
    pending = action;
    d.showModal();
    const first = d.querySelector("#dialog-editor input") || $("dialog-ok");
    first.focus();
  }

  async function confirmed() {
    if (!pending) return;
    const tokenField = $("dialog-token");
    if (!tokenField.hidden) {
      const t = $("token").value.trim();
      if (!t) { $("dialog-error").textContent = "Enter the admin token."; $("token").focus(); return; }
      sessionStorage.setItem(TOKEN_KEY, t);
    }
    $("dialog-ok").disabled = true;
    try {
      const { status, answer } = await pending();
      if (status === 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        tokenField.hidden = false;
        $("dialog-error").textContent = tokenField.dataset.tried ? "That token was refused." : "This proxy needs the admin token.";
        tokenField.dataset.tried = "1";
        $("token").focus();
        return;
      }
      if (status < 200 || status > 299) {
        $("dialog-error").textContent = "Refused (" + status + "): " + (answer.error || "no reason given");
        return;
      }
      delete tokenField.dataset.tried;
      $("dialog").close();
      pending = null;
      poll();
    } catch (e) {
      $("dialog-error").textContent = "Cannot reach the admin API.";
    } finally {
      $("dialog-ok").disabled = false;
    }
  }

  const enc = encodeURIComponent;
  function askSwitchback(r) {
    ask("Switch back " + r.name + "?", "Restore the split in force before this route's last change. Pressing it again undoes it.",
      () => write("POST", "/routes/" + enc(r.name) + "/switchback"));
  }
  function askClear(r) {
    ask("Clear the override of " + r.name + "?", "The config file's split applies again: " + text(r.configured) + ".",
      () => write("DELETE", "/routes/" + enc(r.name) + "/split"));
  }
  function askPool(pool, what) {
    const msg = what === "trip"
      ? "Roll " + pool + " back: its weight goes to 0 wherever another pool can serve, until reset."
      : "Clear the trip of " + pool + ": it gets its weights back and its guard window starts empty.";
    ask((what === "trip" ? "Trip " : "Reset ") + pool + "?", msg, () => write("POST", "/pools/" + enc(pool) + "/" + what));
  }
  function askRollout(route, cmd) {
    ask(cmd[0].toUpperCase() + cmd.slice(1) + " the rollout of " + route + "?", "Send " + cmd + " to the rollout of route " + route + ".",
      () => write("POST", "/routes/" + enc(route) + "/rollout/" + cmd));
  }
  function askSplit(r) {
    const current = r.effective || r.configured || {};
    const inputs = Object.entries(current).map(([p, w]) => {
      const input = h("input", { id: "weight-" + p, type: "number", min: 0, step: 1, inputmode: "numeric", value: w, "data-pool": p });
      return [h("label", { for: "weight-" + p }, p), input];
    });
    const editor = h("div", { class: "weights" }, inputs);
    ask("Set the split of " + r.name, "Relative weights, whole numbers from 0. Held until the file's split for this route changes.", () => {
      const weights = {};
      for (const input of editor.querySelectorAll("input")) {
        const n = Number(input.value);
        if (!Number.isInteger(n) || n < 0) return Promise.resolve({ status: 400, answer: { error: input.dataset.pool + ": weight must be a whole number >= 0" } });
        weights[input.dataset.pool] = n;
      }
      return write("PUT", "/routes/" + enc(r.name) + "/split", weights);
    }, editor);
  }

  $("dialog-ok").addEventListener("click", confirmed);
  $("dialog-cancel").addEventListener("click", () => { pending = null; $("dialog").close(); });
  $("dialog").addEventListener("close", () => { pending = null; });
  $("token").addEventListener("keydown", (e) => { if (e.key === "Enter") confirmed(); });

  poll();
  setInterval(poll, POLL_MS);
})();
