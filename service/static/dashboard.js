/* The dashboard: draws GET /v1/dashboard with plain DOM and SVG (no CDN, no tile server). */
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const COLOURS = ["#2357d9", "#c2410c", "#15803d", "#7e22ce", "#0e7490", "#be123c", "#4d7c0f"];
  let timer = null;

  function el(tag, attrs = {}, text) {
    const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4))
      : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function table(headers, rows) {
    const t = el("table");
    const head = t.insertRow();
    for (const h of headers) head.append(el("th", {}, h));
    for (const row of rows) {
      const tr = t.insertRow();
      for (const cell of row) tr.insertCell().textContent = cell;
    }
    return t;
  }

  const pct = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)} %`);

  function renderStatus(data) {
    const box = $("status");
    box.textContent = "";
    const state = el("p", { class: data.status === "ok" ? "ok" : "error" },
      `Rule set: ${data.status} · ${data.rules.length} rules`);
    box.append(state);
    for (const e of data.errors) box.append(el("div", { class: "error log" }, e));
    for (const w of data.warnings) box.append(el("div", { class: "muted" }, w));
    const t = table(["rule", "mode", "trigger", "priority", "places", "description", ""],
      data.rules.map((r) => [r.id, r.mode || "live", r.trigger, r.priority,
        r.places.features.length, r.description]));
    data.rules.forEach((r, i) => {
      const button = el("button", { class: "send-test", "data-rule": r.id }, "send test");
      button.addEventListener("click", () => sendTest(r.id));
      t.rows[i + 1].insertCell().append(button);
    });
    box.append(t);
  }

  // POST /v1/rules/{id}/test: the rule's message now, to one subscription (e.g. your phone),
  // past caps and quiet hours; it is marked test and counts in no statistic.
  async function sendTest(rule) {
    const id = window.prompt(`Send a test push of ${rule} now to the subscription id:`);
    if (!id || !id.trim()) return;
    const response = await fetch(`/v1/rules/${encodeURIComponent(rule)}/test`, {
      method: "POST",
      headers: { Authorization: `Bearer ${$("token").value.trim()}`,
        "Content-Type": "application/json" },
      body: JSON.stringify({ subscription_id: id.trim() }),
    });
    const body = await response.json();
    $("state").textContent = response.ok
      ? `test push of ${rule} queued (delivery ${body.delivery_id})`
      : `test push of ${rule}: ${body.error ? body.error.message : `HTTP ${response.status}`}`;
    $("state").className = response.ok ? "ok" : "error";
  }

  function funnelBar(row) {
    // Widths relative to "sent", the denominator of the rates.
    const svg = el("svg:svg", { width: 240, height: 16, role: "img",
      "aria-label": `sent ${row.sent}, shown ${row.shown}, clicked ${row.clicked}` });
    const stages = [row.sent, row.shown, row.clicked, row.converted];
    const max = Math.max(1, row.sent, row.shown);
    stages.forEach((n, i) => {
      svg.append(el("svg:rect", { x: 0, y: i * 4, height: 3, width: (240 * n) / max,
        class: "bar", opacity: 1 - i * 0.2 }));
    });
    return svg;
  }

  function renderFunnel(stats) {
    const box = $("funnel");
    box.textContent = "";
    // "shadow" is what a rule in mode: shadow would have sent: never sent, never in "sent".
    const t = table(["rule", "variant", "matched", "shadow (not sent)", "sent", "failed", "gone",
      "expired", "shown", "clicked", "by action", "converted", "CTR", "funnel"], []);
    for (const r of stats.rules) {
      const tr = t.insertRow();
      // Clicks on action buttons, by action; the rest of "clicked" is the notification itself.
      const actions = Object.entries(r.clicked_actions || {}).map(([a, n]) => `${a} ${n}`)
        .join(" · ") || "–";
      for (const v of [r.rule, r.variant || "–", r.matched, r.shadow_sent ? r.shadow_sent : "–",
        r.sent, r.failed, r.gone, r.expired, r.shown, r.clicked, actions, r.converted,
        pct(r.ctr)]) tr.insertCell().textContent = v;
      tr.insertCell().append(funnelBar(r));
    }
    box.append(t);
  }

  function renderExperiments(stats) {
    const box = $("experiments");
    box.textContent = "";
    if (!stats.experiments.length) {
      box.append(el("p", { class: "muted" }, "No rule has two variants with data yet."));
      return;
    }
    const rows = [];
    for (const e of stats.experiments) {
      for (const c of e.comparisons) {
        rows.push([e.rule, `${c.a} vs ${c.b}`, pct(c.rate_a), pct(c.rate_b),
          c.p_value === null ? "–" : c.p_value.toPrecision(3),
          c.required_per_variant ?? "–", e.winner || "none yet", c.verdict]);
      }
    }
    box.append(table(["rule", "variants", "CTR a", "CTR b", "p", "needed per variant",
      "winner", "verdict"], rows));
  }

  function renderHours(data) {
    const box = $("hours");
    box.textContent = "";
    const totals = Array(24).fill(0);
    for (const r of data.rules) for (const h of r.decisions_by_hour) totals[h.hour] += h.decisions;
    const max = Math.max(1, ...totals);
    const w = 480;
    const h = 160;
    const svg = el("svg:svg", { viewBox: `0 0 ${w} ${h + 20}`, width: "100%", role: "img",
      "aria-label": "decisions by local hour of day" });
    totals.forEach((n, hour) => {
      const bh = (h * n) / max;
      const bar = el("svg:rect", { x: hour * 20 + 2, y: h - bh, width: 16, height: bh,
        class: "bar" });
      bar.append(el("svg:title", {}, `${hour}:00 – ${n} decisions`));
      svg.append(bar);
      if (hour % 3 === 0) svg.append(el("svg:text", { x: hour * 20 + 2, y: h + 14 }, `${hour}h`));
    });
    box.append(svg);
  }

  function renderSuppressed(stats) {
    const box = $("suppressed");
    box.textContent = "";
    const rows = [];
    for (const r of stats.rules) {
      for (const [reason, n] of Object.entries(r.suppressed)) {
        rows.push([r.rule, r.variant || "–", reason, n]);
      }
    }
    box.append(rows.length ? table(["rule", "variant", "reason", "count"], rows)
      : el("p", { class: "muted" }, "Nothing suppressed."));
  }

  // not_matched is per rule (on its entry with variant ""): the first failed condition of each
  // signal that came within reach of the rule (a place within radius + hysteresis, or any
  // signal for a rule without places) and did not match it.
  function renderWhyNot(stats) {
    const box = $("whynot");
    box.textContent = "";
    const rows = [];
    for (const r of stats.rules) {
      const reasons = Object.entries(r.not_matched || {}).sort((x, y) => y[1] - x[1]);
      for (const [reason, n] of reasons) rows.push([r.rule, reason, n]);
    }
    box.append(rows.length ? table(["rule", "first failed condition", "signals"], rows)
      : el("p", { class: "muted" }, "No signal within reach of a rule missed it yet."));
  }

  const reasons = (counts) => Object.entries(counts).sort((x, y) => y[1] - x[1])
    .map(([k, n]) => `${k} ${n}`).join(" · ") || "–";

  // GET /v1/backtest: the stored signals of the period through the loaded rules, from fresh
  // presence, beside what the live rules decided and sent (it writes nothing).
  async function runBacktest() {
    const since = $("bt-since").value.trim() || "24h";
    $("bt-state").textContent = "running…";
    $("bt-state").className = "muted";
    const response = await fetch(`/v1/backtest?since=${encodeURIComponent(since)}`,
      { headers: { Authorization: `Bearer ${$("token").value.trim()}` } });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
    const box = $("backtest");
    box.textContent = "";
    for (const note of body.notes) box.append(el("p", { class: "muted" }, note));
    const rows = body.rules.map((r) => [r.rule, r.mode, r.matched, r.would_send,
      r.shadow_sent || "–", r.live.decided, r.live.sent, reasons(r.suppressed),
      reasons(r.not_matched)]);
    for (const x of body.live_only) rows.push([x.rule, "(not loaded)", "–", "–", "–", x.decided,
      x.sent, "–", "–"]);
    box.append(table(["rule", "mode", "matched", "would send", "shadow", "live decided",
      "live sent", "suppressed", "not matched"], rows));
    $("bt-state").textContent = `${body.signals} signals of ${body.subscribers} subscribers, `
      + `${body.since.slice(0, 16)} – ${body.until.slice(0, 16)} UTC`;
  }

  function renderMap(data) {
    const box = $("map");
    const legend = $("legend");
    box.textContent = "";
    legend.textContent = "";
    const points = [];
    const shapes = [];
    data.rules.forEach((rule, i) => {
      const colour = COLOURS[i % COLOURS.length];
      const item = el("span");
      item.append(el("span", { class: "swatch", style: `background:${colour}` }));
      item.append(document.createTextNode(rule.id));
      legend.append(item);
      for (const f of rule.places.features) {
        const g = f.geometry;
        if (g.type === "Point") points.push({ c: g.coordinates, f, colour, rule: rule.id });
        const polys = g.type === "Polygon" ? [g.coordinates]
          : g.type === "MultiPolygon" ? g.coordinates : [];
        for (const p of polys) shapes.push({ ring: p[0], f, colour, rule: rule.id });
      }
    });
    const all = [...points.map((p) => p.c), ...shapes.flatMap((s) => s.ring)];
    if (!all.length) {
      box.append(el("p", { class: "muted" }, "No places."));
      return;
    }
    const lons = all.map((c) => c[0]);
    const lats = all.map((c) => c[1]);
    const [x0, x1, y0, y1] = [Math.min(...lons), Math.max(...lons), Math.min(...lats),
      Math.max(...lats)];
    // Equirectangular with the longitude scaled by cos(latitude): true to shape in a city.
    const k = Math.cos(((y0 + y1) / 2) * Math.PI / 180);
    const W = 1000;
    const spanX = Math.max((x1 - x0) * k, 1e-4);
    const spanY = Math.max(y1 - y0, 1e-4);
    const H = Math.round(W * spanY / spanX) || 400;
    const pad = 30;
    const sx = (lon) => pad + ((lon - x0) * k / spanX) * (W - 2 * pad);
    const sy = (lat) => pad + ((y1 - lat) / spanY) * (H - 2 * pad);
    const metres = (W - 2 * pad) / (spanX * 111320);
    const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, class: "map", role: "img",
      "aria-label": "places of the rules" });
    for (const s of shapes) {
      const poly = el("svg:polygon", { points: s.ring.map((c) => `${sx(c[0])},${sy(c[1])}`)
        .join(" "), fill: s.colour, "fill-opacity": 0.35, stroke: s.colour });
      poly.append(el("svg:title", {}, `${s.f.properties.name} (${s.rule})`));
      svg.append(poly);
    }
    for (const p of points) {
      const r = Math.max(3, (p.f.properties.radius_m || 0) * metres);
      const circle = el("svg:circle", { cx: sx(p.c[0]), cy: sy(p.c[1]), r, fill: p.colour,
        "fill-opacity": 0.25, stroke: p.colour });
      circle.append(el("svg:title", {}, `${p.f.properties.name} (${p.rule})`));
      svg.append(circle);
      svg.append(el("svg:circle", { cx: sx(p.c[0]), cy: sy(p.c[1]), r: 2, fill: p.colour }));
    }
    // A 500 m scale bar, since there is no map underneath to judge distances by.
    svg.append(el("svg:rect", { x: pad, y: H - 12, width: 500 * metres, height: 3,
      fill: "#1d2330" }));
    svg.append(el("svg:text", { x: pad, y: H - 16 }, "500 m"));
    box.append(svg);
  }

  async function load() {
    const token = $("token").value.trim();
    sessionStorage.setItem("mc.admin", token);
    const response = await fetch("/v1/dashboard", { headers: { Authorization: `Bearer ${token}` } });
    const data = await response.json();
    if (!response.ok) throw new Error(data.error ? data.error.message : `HTTP ${response.status}`);
    renderStatus(data);
    renderFunnel(data.stats);
    renderExperiments(data.stats);
    renderHours(data);
    renderSuppressed(data.stats);
    renderWhyNot(data.stats);
    renderMap(data);
    $("state").textContent = `updated ${new Date().toLocaleTimeString()}`;
    $("state").className = "muted";
  }

  function loadVisibly() {
    load().catch((err) => {
      $("state").textContent = err.message;
      $("state").className = "error";
    });
  }

  $("load").addEventListener("click", loadVisibly);
  $("bt-run").addEventListener("click", () => runBacktest().catch((err) => {
    $("bt-state").textContent = err.message;
    $("bt-state").className = "error";
  }));
  $("auto").addEventListener("change", (e) => {
    clearInterval(timer);
    timer = e.target.checked ? setInterval(loadVisibly, 10000) : null;
  });
  const saved = sessionStorage.getItem("mc.admin");
  if (saved) {
    $("token").value = saved;
    loadVisibly();
  }
})();
