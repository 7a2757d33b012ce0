/* The dashboard: draws GET /v1/dashboard with plain DOM and SVG (no CDN; map tiles only from
   MOMENTCAST_MAP_TILES, through the vendored Leaflet). */
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  // Rule colours are the classes c0..c6 of momentcast.css (no inline styles under the CSP).
  const COLOURS = 7;
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

  // POST /v1/rules/{id}/test: the rule's message now, to the recipient chosen above the
  // rules table, past caps and quiet hours; it is marked test and counts in no statistic.
  async function sendTest(rule) {
    const choice = $("test-recipient").value;
    const id = (choice === "other" ? $("test-other").value : choice).trim();
    if (!id) {
      $("state").textContent = "choose a test recipient above the rules table first";
      $("state").className = "error";
      return;
    }
    const response = await fetch(`/v1/rules/${encodeURIComponent(rule)}/test`, {
      method: "POST",
      headers: { Authorization: `Bearer ${$("token").value.trim()}`,
        "Content-Type": "application/json" },
      body: JSON.stringify({ subscription_id: id }),
    });
    const body = await response.json();
    $("state").textContent = response.ok
      ? `test push of ${rule} queued (delivery ${body.delivery_id})`
      : `test push of ${rule}: ${body.error ? body.error.message : `HTTP ${response.status}`}`;
    $("state").className = response.ok ? "ok" : "error";
  }

  // The demo page's own device, if this browser subscribed there: the SDK keeps its
  // registration in this origin's localStorage (momentcast.js, STORAGE_KEY).
  function demoDevice() {
    try {
      const reg = JSON.parse(localStorage.getItem("momentcast.registration") || "null");
      return reg && reg.id && reg.server === location.origin ? reg.id : null;
    } catch (_err) {
      return null;
    }
  }

  function ago(iso) {
    const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (s < 90) return "just now";
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    if (s < 129600) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  }

  // Test recipients: the demo page's device first, then GET /v1/subscriptions (the active,
  // unpaused ones seen or registered last; no endpoint, token or position), then any id.
  async function renderRecipients() {
    const body = await (await adminFetch("/v1/subscriptions?limit=20")).json();
    const select = $("test-recipient");
    const before = select.value;
    select.textContent = "";
    const mine = demoDevice();
    if (mine) {
      select.append(el("option", { value: mine },
        `this browser (the demo page's device) · ${mine.slice(0, 8)}`));
    }
    for (const s of body.subscriptions) {
      if (s.id === mine) continue;
      const seen = s.last_seen_at ? `seen ${ago(s.last_seen_at)}`
        : `registered ${ago(s.created_at)}`;
      select.append(el("option", { value: s.id }, [s.push_service, s.locale || "no locale",
        s.topics.length ? s.topics.join(", ") : "no topics",
        s.location_consent ? "shares location" : "no location", seen, s.id.slice(0, 8)]
        .join(" · ")));
    }
    if (!select.options.length) {
      select.append(el("option", { value: "", disabled: "" },
        "no subscriber yet: subscribe this browser on the demo page (/)"));
    }
    select.append(el("option", { value: "other" }, "another subscription id…"));
    // A refresh keeps the choice while it is still offered.
    if ([...select.options].some((o) => o.value === before && !o.disabled)) select.value = before;
    else select.selectedIndex = select.options[0].disabled ? -1 : 0;
    $("test-other").hidden = select.value !== "other";
  }

  const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

  // Who the rules and campaigns can reach: the dashboard's own counts (GET /v1/dashboard).
  function renderCounts(data) {
    const c = data.subscribers;
    const box = $("counts");
    box.textContent = "";
    box.append(el("p", {}, `Subscribers: ${c.active} active · ${c.paused} paused · `
      + `${c.gone} gone (their push service dropped them)`));
    box.append(el("p", {}, `Audience: ${c.sharing_location} share their location (rules `
      + "with places reach only them); campaigns and rules without places can reach "
      + `${c.active === 1 ? "the 1 active subscriber" : `all ${c.active} active`} (their `
      + "topics and attributes conditions narrow that)."));
    const campaigns = data.stats.campaigns || [];
    if (campaigns.length) {
      box.append(el("p", { class: "muted" }, `${plural(campaigns.length, "campaign")}: `
        + campaigns.slice(0, 5).map((x) => `${x.id} reached ${x.audience}`).join(" · ")
        + (campaigns.length > 5 ? " …" : "") + " (its audience when it was created)"));
    }
  }

  // GET /v1/stats' health: the last week's pushes with an interaction (a click or a
  // conversion) per push sent. Browsers revoke the permission of senders whose pushes nobody
  // opens; a rule with at least 500 pushes sent and under 1 % is warned about
  // (low_engagement, decided by the server), campaigns ("") are listed, never warned about.
  function renderHealth(stats) {
    const h = stats.health;
    const box = $("health");
    box.textContent = "";
    if (!h) return;
    box.append(el("p", {}, `${h.sent} pushes sent in the last ${h.window_days} days, `
      + `${h.interacted} clicked or converted: interaction rate ${pct(h.interaction_rate)}`
      + ` · ${plural(h.resting_subscribers, "subscriber")} resting (fatigue guard)`));
    for (const r of h.rules.filter((x) => x.low_engagement)) {
      box.append(el("p", { class: "error low-engagement", "data-rule": r.rule },
        `Warning: ${r.rule} sent ${r.sent} pushes in ${h.window_days} days and only `
        + `${r.interacted} were clicked or converted (${pct(r.interaction_rate)}, under 1 %): `
        + "browsers take the permission of senders like this back. Narrow its audience or "
        + "moments, or add a fatigue guard to policy.yaml."));
    }
    if (h.rules.length) {
      box.append(table(["rule", "sent", "clicked or converted", "interaction rate"],
        h.rules.map((r) => [r.rule || "(campaigns)", r.sent, r.interacted,
          pct(r.interaction_rate)])));
    }
  }

  // What to do next on a fresh deployment: a rule, a campaign, subscribers.
  function renderNextSteps(data) {
    const list = $("next-steps-list");
    list.textContent = "";
    const step = (...parts) => {
      const li = el("li");
      for (const p of parts) li.append(p.code ? el("code", {}, p.code) : document.createTextNode(p));
      list.append(li);
    };
    if (!data.rules.length) {
      step("No rules are loaded. ", { code: "momentcast rules init rules" }, " writes a starter "
        + "set (a policy, an example rule and a places file) into ./rules, the default ",
      { code: "MOMENTCAST_RULES_DIR" }, "; ", { code: "momentcast rules check rules" },
      " checks it, and the running service loads it within seconds. Each field is explained "
        + "in docs/rules.md.");
    }
    if (!(data.stats.campaigns || []).length) {
      step("No campaign yet: one message to an audience at a set time (or at a local time in "
        + "each subscriber's zone). Write one as in docs/campaigns.md, see its audience and a "
        + "sample with ", { code: "momentcast campaign send FILE.yaml --dry-run" },
      ", then send it without --dry-run.");
    }
    if (!data.subscribers.active) {
      step("No subscribers yet. Add the SDK to your site (docs/clients.md), or subscribe "
        + "this browser on the demo page at ", { code: "/" }, "; then send yourself a test "
        + "push with a rule's send test button.");
    }
    $("next-steps").hidden = list.children.length === 0;
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

  const hasFunnel = (r) => Boolean(r.matched || r.shadow_sent || r.sent || r.failed || r.gone
    || r.expired || r.shown || r.clicked || r.dismissed || r.converted
    || Object.keys(r.suppressed || {}).length || Object.keys(r.clicked_actions || {}).length);

  function renderFunnel(data) {
    const stats = data.stats;
    const box = $("funnel");
    box.textContent = "";
    // "shadow" is what a rule in mode: shadow would have sent: never sent, never in "sent".
    const t = table(["rule", "variant", "matched", "shadow (not sent)", "sent", "failed", "gone",
      "expired", "shown", "clicked", "by action", "converted", "CTR", "funnel"], []);
    // The entry of variant "" holds what belongs to a rule rather than to a variant: its
    // not_matched (drawn in Why not) and suppressions of rules no longer loaded. It is a
    // funnel row only when it has numbers of a funnel, never a row of zeros. /v1/stats lists
    // every variant of a loaded rule (for its share and prob_best); a variant without numbers
    // is a row only beside a sibling that has some, so a rule without traffic keeps its one
    // quiet row below.
    const active = new Set(stats.rules.filter(hasFunnel).map((r) => r.rule));
    const rows = stats.rules.filter((r) => hasFunnel(r) || (r.variant && active.has(r.rule)));
    for (const r of rows) {
      const tr = t.insertRow();
      // Clicks on action buttons, by action; the rest of "clicked" is the notification itself.
      const actions = Object.entries(r.clicked_actions || {}).map(([a, n]) => `${a} ${n}`)
        .join(" · ") || "–";
      for (const v of [r.rule, r.variant || "–", r.matched, r.shadow_sent ? r.shadow_sent : "–",
        r.sent, r.failed, r.gone, r.expired, r.shown, r.clicked, actions, r.converted,
        pct(r.ctr)]) tr.insertCell().textContent = v;
      tr.insertCell().append(funnelBar(r));
    }
    // Every loaded rule is listed: one without any decision yet gets a row of its own.
    const seen = new Set(rows.map((r) => r.rule));
    const missed = new Map();
    for (const r of stats.rules) {
      const n = Object.values(r.not_matched || {}).reduce((a, b) => a + b, 0);
      missed.set(r.rule, (missed.get(r.rule) || 0) + n);
    }
    for (const rule of data.rules) {
      if (seen.has(rule.id)) continue;
      const tr = t.insertRow();
      tr.className = "quiet";
      tr.insertCell().textContent = rule.id;
      const cell = tr.insertCell();
      cell.colSpan = 13;
      cell.className = "muted";
      const n = missed.get(rule.id) || 0;
      cell.textContent = n ? `nothing matched yet: ${plural(n, "signal")} within reach did not `
        + "match (see Why not)" : "no traffic yet";
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

  // ---- Places: one plan per area (a city), fitted to what it shows; a selector zooms to a
  // rule or an area. Colours are CSS classes (c0..c6 in momentcast.css): the page's CSP
  // (style-src 'self') refuses inline style attributes.
  const AREA_GAP_M = 20000; // places further apart than this are in different areas
  let selection = "all";
  let leafletMap = null;

  // Metres east and north of (lat0, lon0): equirectangular, true to shape within a city.
  function project(c, lat0, lon0) {
    const k = Math.cos((lat0 * Math.PI) / 180);
    return [(c[0] - lon0) * k * 111320, (c[1] - lat0) * 110540];
  }

  function collectPlaces(data) {
    const places = [];
    data.rules.forEach((rule, i) => {
      for (const f of rule.places.features) {
        const g = f.geometry;
        const rings = g.type === "Polygon" ? [g.coordinates[0]]
          : g.type === "MultiPolygon" ? g.coordinates.map((p) => p[0]) : [];
        const coords = g.type === "Point" ? [g.coordinates] : rings.flat();
        if (!coords.length) continue;
        const centre = [coords.reduce((a, c) => a + c[0], 0) / coords.length,
          coords.reduce((a, c) => a + c[1], 0) / coords.length];
        places.push({ rule: rule.id, cls: `c${i % COLOURS}`, f, point: g.type === "Point",
          coords, rings, centre, radius: Number(f.properties.radius_m) || 0, area: 0 });
      }
    });
    // Areas: single-linkage clusters of the places' centres.
    const areas = [];
    places.forEach((p) => { p.area = -1; });
    for (const p of places) {
      if (p.area >= 0) continue;
      const members = [p];
      p.area = areas.length;
      for (let j = 0; j < members.length; j++) {
        const m = members[j];
        for (const q of places) {
          if (q.area >= 0) continue;
          const [dx, dy] = project(q.centre, m.centre[1], m.centre[0]);
          if (Math.hypot(dx, dy) <= AREA_GAP_M) {
            q.area = p.area;
            members.push(q);
          }
        }
      }
      areas.push(members);
    }
    return { places, areas };
  }

  function areaLabel(members, n) {
    const names = [...new Set(members.map((p) => p.f.properties.name || p.f.properties.id))];
    const lat = members.reduce((a, p) => a + p.centre[1], 0) / members.length;
    const lon = members.reduce((a, p) => a + p.centre[0], 0) / members.length;
    return `area ${n + 1} (${lat.toFixed(2)}, ${lon.toFixed(2)}): ${names.slice(0, 2).join(", ")}`
      + (names.length > 2 ? ` +${names.length - 2}` : "");
  }

  function selected(places) {
    if (selection.startsWith("rule:")) return places.filter((p) => p.rule === selection.slice(5));
    if (selection.startsWith("area:")) {
      return places.filter((p) => p.area === Number(selection.slice(5)));
    }
    return places;
  }

  function renderMapSelector(data, areas) {
    const select = $("map-select");
    const options = [["all", `all rules (${areas.length} area${areas.length === 1 ? "" : "s"})`]];
    for (const r of data.rules) options.push([`rule:${r.id}`, `rule ${r.id}`]);
    areas.forEach((members, n) => options.push([`area:${n}`, areaLabel(members, n)]));
    if (!options.some(([v]) => v === selection)) selection = "all";
    select.textContent = "";
    for (const [value, label] of options) select.append(el("option", { value }, label));
    select.value = selection;
  }

  // A place's name and rule, with its counts of the Per place period when there are any.
  function placeTitle(p) {
    const c = placeCounts.get(`${p.rule}\u0000${p.f.properties.id}`);
    const counts = c ? `: ${c.sent} sent, ${c.clicked} clicked, CTR ${pct(c.ctr)}` : "";
    return `${p.f.properties.name || p.f.properties.id} (${p.rule})${counts}`;
  }

  // One SVG plan fitted to the given places (their radius included).
  function plan(members) {
    const lat0 = members.reduce((a, p) => a + p.centre[1], 0) / members.length;
    const lon0 = members.reduce((a, p) => a + p.centre[0], 0) / members.length;
    let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
    for (const p of members) {
      for (const c of p.coords) {
        const [x, y] = project(c, lat0, lon0);
        x0 = Math.min(x0, x - p.radius); x1 = Math.max(x1, x + p.radius);
        y0 = Math.min(y0, y - p.radius); y1 = Math.max(y1, y + p.radius);
      }
    }
    const W = 1000;
    const H = 480;
    const pad = 36;
    const minSpan = 300; // metres: a lone place is not blown up to the whole plan
    const cx = (x0 + x1) / 2;
    const cy = (y0 + y1) / 2;
    const scale = Math.min((W - 2 * pad) / Math.max(x1 - x0, minSpan),
      (H - 2 * pad) / Math.max(y1 - y0, minSpan)); // px per metre
    const sx = (x) => W / 2 + (x - cx) * scale;
    const sy = (y) => H / 2 - (y - cy) * scale;
    const xy = (c) => project(c, lat0, lon0);
    const svg = el("svg:svg", { viewBox: `0 0 ${W} ${H}`, class: "map", role: "img",
      "aria-label": "places of the rules" });
    // Shapes first, then the markers and their labels above every shape (hoverable).
    const pins = [];
    for (const p of members) {
      for (const ring of p.rings) {
        const poly = el("svg:polygon", { points: ring.map((c) => {
          const [x, y] = xy(c);
          return `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`;
        }).join(" "), class: `place area-shape ${p.cls}`, "data-rule": p.rule });
        poly.append(el("svg:title", {}, placeTitle(p)));
        svg.append(poly);
      }
      if (p.point) {
        const [x, y] = xy(p.coords[0]);
        const circle = el("svg:circle", { cx: sx(x).toFixed(1), cy: sy(y).toFixed(1),
          r: Math.max(4, p.radius * scale).toFixed(1), class: `place reach ${p.cls}`,
          "data-rule": p.rule });
        circle.append(el("svg:title", {}, placeTitle(p)));
        svg.append(circle);
        const pin = el("svg:g", { class: "pin" });
        const marker = el("svg:circle", { cx: sx(x).toFixed(1), cy: sy(y).toFixed(1), r: 7,
          class: `place marker ${p.cls}`, "data-rule": p.rule, "data-place": p.f.properties.id });
        marker.append(el("svg:title", {}, placeTitle(p)));
        pin.append(marker);
        pin.append(el("svg:text", { x: (sx(x) + 10).toFixed(1), y: (sy(y) - 10).toFixed(1),
          class: "label" }, p.f.properties.name || p.f.properties.id));
        pins.push(pin);
      }
    }
    svg.append(...pins);
    // A scale bar of a round length near 1/5 of the plan.
    const steps = [50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000];
    const bar = steps.find((m) => m * scale >= (W - 2 * pad) / 6) || steps[steps.length - 1];
    svg.append(el("svg:rect", { x: pad, y: H - 14, width: bar * scale, height: 4,
      class: "scale" }));
    svg.append(el("svg:text", { x: pad, y: H - 22 },
      bar >= 1000 ? `${bar / 1000} km` : `${bar} m`));
    return svg;
  }

  // Labels that would overlap one already drawn (in file order) are hidden; each shows while
  // its marker is hovered (momentcast.css, .pin:hover). Needs the plan in the document.
  function declutter(svg) {
    const kept = [];
    const pad = 2;
    for (const label of svg.querySelectorAll("text.label")) {
      const b = label.getBBox();
      const clash = kept.some((k) => b.x < k.x + k.width + pad && k.x < b.x + b.width + pad
        && b.y < k.y + k.height + pad && k.y < b.y + b.height + pad);
      label.classList.toggle("crowded", clash);
      if (!clash) kept.push(b);
    }
  }

  function renderLegend(data) {
    const legend = $("legend");
    legend.textContent = "";
    data.rules.forEach((rule, i) => {
      const n = rule.places.features.length;
      const item = el("button", { class: `legend-item secondary${selection === `rule:${rule.id}`
        ? " active" : ""}`, "data-rule": rule.id, title: `zoom to ${rule.id}` });
      item.append(el("span", { class: `swatch c${i % COLOURS}` }));
      item.append(document.createTextNode(`${rule.id}${n ? "" : " (no places)"}`));
      item.addEventListener("click", () => {
        selection = selection === `rule:${rule.id}` ? "all" : `rule:${rule.id}`;
        renderMap(data);
      });
      legend.append(item);
    });
  }

  function renderMap(data) {
    const box = $("map");
    const { places, areas } = collectPlaces(data);
    renderMapSelector(data, areas);
    renderLegend(data);
    $("map-select").onchange = (e) => { selection = e.target.value; renderMap(data); };
    const shown = selected(places);
    if (data.map_tiles) {
      renderTiles(data, shown, box);
      return;
    }
    box.textContent = "";
    if (!shown.length) {
      box.append(el("p", { class: "muted" }, places.length ? "This rule has no places."
        : "No places."));
      return;
    }
    // Each area on its own plan: two cities side by side instead of two dots far apart.
    const groups = [...new Set(shown.map((p) => p.area))].map((a) => shown.filter((p) =>
      p.area === a));
    box.className = groups.length > 1 ? "plans" : "";
    for (const members of groups) {
      const figure = el("figure", { class: "plan", "data-area": members[0].area });
      const drawn = plan(members);
      figure.append(drawn);
      figure.append(el("figcaption", { class: "muted" }, areaLabel(members, members[0].area)));
      box.append(figure);
      declutter(drawn);
    }
  }

  // ---- The optional basemap (MOMENTCAST_MAP_TILES): the vendored Leaflet, loaded only then.
  function loadLeaflet() {
    if (window.L) return Promise.resolve(window.L);
    return new Promise((resolve, reject) => {
      const css = el("link", { rel: "stylesheet", href: "/static/vendor/leaflet/leaflet.css" });
      document.head.append(css);
      const script = el("script", { src: "/static/vendor/leaflet/leaflet.js" });
      script.addEventListener("load", () => resolve(window.L));
      script.addEventListener("error", () => reject(new Error("leaflet.js did not load")));
      document.head.append(script);
    });
  }

  async function drawTiles(data, shown, box) {
    const L = await loadLeaflet();
    if (!leafletMap) {
      box.textContent = "";
      box.className = "";
      const holder = el("div", { id: "leaflet", class: "map" });
      box.append(holder);
      // A view at once: Leaflet draws paths (and so has their elements) only once it has one.
      leafletMap = L.map(holder, { attributionControl: true }).setView([20, 0], 2);
      leafletMap.attributionControl.setPrefix(false);
      const host = new URL(data.map_tiles.replace("{s}", "a")).host;
      L.tileLayer(data.map_tiles, { maxZoom: 19, attribution: `tiles: ${host}` })
        .addTo(leafletMap);
      leafletMap.placesLayer = L.featureGroup().addTo(leafletMap);
    }
    const layer = leafletMap.placesLayer;
    layer.clearLayers();
    for (const p of shown) {
      const title = placeTitle(p);
      for (const ring of p.rings) {
        L.polygon(ring.map((c) => [c[1], c[0]]), { className: `place area-shape ${p.cls}` })
          .bindTooltip(title).addTo(layer);
      }
      if (p.point) {
        const at = [p.coords[0][1], p.coords[0][0]];
        if (p.radius) {
          L.circle(at, { radius: p.radius, className: `place reach ${p.cls}` }).addTo(layer);
        }
        const marker = L.circleMarker(at, { radius: 5, className: `place marker ${p.cls}` })
          .bindTooltip(title).addTo(layer);
        const node = marker.getElement();
        if (node) node.setAttribute("data-rule", p.rule);
      }
    }
    // Fitted when the selection changes, not on every refresh (that would undo a pan or zoom).
    if (shown.length && leafletMap.fittedTo !== selection) {
      leafletMap.fitBounds(layer.getBounds(), { padding: [30, 30], maxZoom: 17, animate: false });
      leafletMap.fittedTo = selection;
    }
  }

  function renderTiles(data, shown, box) {
    drawTiles(data, shown, box).catch((err) => {
      box.textContent = "";
      box.append(el("p", { class: "error" }, `basemap: ${err.message}`));
    });
  }

  // ---- Per place over a period: GET /v1/stats/places?from=&to= ([from, to), UTC dates), and
  // the same as CSV (GET /v1/stats.csv), fetched with the token and saved from a blob.
  function periodQuery() {
    const q = new URLSearchParams();
    if ($("pl-from").value) q.set("from", $("pl-from").value);
    if ($("pl-to").value) q.set("to", $("pl-to").value);
    return q.toString();
  }

  async function adminFetch(path) {
    const response = await fetch(path,
      { headers: { Authorization: `Bearer ${$("token").value.trim()}` } });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
    }
    return response;
  }

  // "rule\u0000place" -> that place's counts of the period: shown in the map's tooltips too.
  let placeCounts = new Map();

  async function showPlaces() {
    const body = await (await adminFetch(`/v1/stats/places?${periodQuery()}`)).json();
    placeCounts = new Map(body.places.map((p) => [`${p.rule}\u0000${p.place}`, p]));
    const box = $("places");
    box.textContent = "";
    box.append(body.places.length ? table(["rule", "place", "name", "decided", "sent", "failed",
      "gone", "expired", "shown", "clicked", "converted", "CTR"], body.places.map((p) => [
      p.rule, p.place || "–", p.place_name || "–", p.decided, p.sent, p.failed, p.gone,
      p.expired, p.shown, p.clicked, p.converted, pct(p.ctr)]))
      : el("p", { class: "muted" }, "No deliveries in this period."));
    $("pl-state").textContent = `${body.since.slice(0, 16)} – ${body.until.slice(0, 16)} UTC`;
    $("pl-state").className = "muted";
  }

  async function downloadCsv() {
    const response = await adminFetch(`/v1/stats.csv?${periodQuery()}`);
    const name = (response.headers.get("Content-Disposition") || "").match(/filename="(.+)"/);
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: name ? name[1] : "momentcast-stats.csv" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  const shownError = (id) => (err) => {
    $(id).textContent = err.message;
    $(id).className = "error";
  };

  // Campaigns (GET /v1/stats' campaigns): listed once one exists.
  function renderCampaigns(stats) {
    const section = $("campaigns-box");
    const campaigns = stats.campaigns || [];
    section.hidden = campaigns.length === 0;
    const box = $("campaigns");
    box.textContent = "";
    if (!campaigns.length) return;
    const sendAt = (s) => (typeof s === "string" ? s : `${s.local} local (late: ${s.late})`);
    box.append(table(["campaign", "status", "send at", "audience", "queued", "sent", "failed",
      "expired", "cancelled", "suppressed", "shown", "clicked", "converted", "CTR", "winner"],
      campaigns.map((c) => [c.id, c.status, sendAt(c.send_at), c.audience, c.queued, c.sent,
        c.failed, c.expired, c.cancelled, reasons(c.suppressed), c.shown, c.clicked,
        c.converted, pct(c.ctr), c.experiment ? c.experiment.winner || "none yet" : "–"])));
  }

  async function load() {
    const token = $("token").value.trim();
    sessionStorage.setItem("mc.admin", token);
    const response = await fetch("/v1/dashboard", { headers: { Authorization: `Bearer ${token}` } });
    const data = await response.json();
    if (!response.ok) throw new Error(data.error ? data.error.message : `HTTP ${response.status}`);
    renderNextSteps(data);
    renderCounts(data);
    renderHealth(data.stats);
    renderStatus(data);
    renderFunnel(data);
    renderExperiments(data.stats);
    renderHours(data);
    renderSuppressed(data.stats);
    renderWhyNot(data.stats);
    renderCampaigns(data.stats);
    await renderRecipients().catch(shownError("state"));
    // The per-place counts of the chosen period, for their table and the map's tooltips.
    await showPlaces().catch(shownError("pl-state"));
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
  $("test-recipient").addEventListener("change", (e) => {
    $("test-other").hidden = e.target.value !== "other";
    if (e.target.value === "other") $("test-other").focus();
  });
  $("bt-run").addEventListener("click", () => runBacktest().catch((err) => {
    $("bt-state").textContent = err.message;
    $("bt-state").className = "error";
  }));
  $("pl-run").addEventListener("click", () => showPlaces().catch(shownError("pl-state")));
  $("pl-csv").addEventListener("click", () => downloadCsv().catch(shownError("pl-state")));
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
