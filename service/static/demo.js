/* The demo page: drives the SDK and shows /v1/simulate's explanation of each signal. */
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const mc = Momentcast.create({ server: location.origin });
  const places = new Map();

  function log(text, cls) {
    const line = document.createElement("div");
    line.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
    if (cls) line.className = cls;
    $("log").prepend(line);
  }

  function showSubscription() {
    const reg = mc.registration;
    $("sub-status").textContent = reg ? `Subscribed as ${reg.id}.` : "Not subscribed.";
    $("sub-status").className = reg ? "ok" : "muted";
  }

  mc.on("error", (err) => log(`error (${err.code || "error"}): ${err.message}`, "error"));
  mc.on("status", (s) => log(s));
  mc.on("registration", showSubscription);
  navigator.serviceWorker && navigator.serviceWorker.addEventListener("message", (e) => {
    if (e.data && e.data.type) log(`service worker: ${e.data.type}`);
  });

  const adminToken = () => $("admin").value.trim() || sessionStorage.getItem("mc.admin") || "";

  async function admin(method, path, body) {
    const response = await fetch(path, {
      method, body: body ? JSON.stringify(body) : undefined,
      headers: { Authorization: `Bearer ${adminToken()}`,
        ...(body ? { "Content-Type": "application/json" } : {}) },
    });
    const data = await response.json();
    if (!response.ok) throw new Error((data.error && data.error.message) || response.status);
    return data;
  }

  async function loadPlaces() {
    sessionStorage.setItem("mc.admin", adminToken());
    const data = await admin("GET", "/v1/dashboard");
    const select = $("place");
    select.textContent = "";
    places.clear();
    for (const rule of data.rules) {
      for (const f of rule.places.features) {
        const key = `${rule.id}/${f.properties.id}`;
        const [lon, lat] = f.geometry.type === "Point" ? f.geometry.coordinates
          : centre(f.geometry);
        places.set(key, { lat, lon });
        const option = document.createElement("option");
        option.value = key;
        option.textContent = `${f.properties.name} (${rule.id})`;
        select.append(option);
      }
    }
    select.disabled = false;
    $("send-place").disabled = false;
    log(`${places.size} places loaded`);
  }

  function centre(geometry) {
    const ring = geometry.type === "Polygon" ? geometry.coordinates[0] : geometry.coordinates[0][0];
    const sum = ring.reduce((a, [x, y]) => [a[0] + x, a[1] + y], [0, 0]);
    return [sum[0] / ring.length, sum[1] / ring.length];
  }

  async function explain(signal) {
    const box = $("explain");
    if (!adminToken()) {
      box.textContent = "Enter the admin token to see why a rule fired or not.";
      return;
    }
    const reg = mc.registration || {};
    const topics = $("topics").value.split(",").map((t) => t.trim()).filter(Boolean);
    const result = await admin("POST", "/v1/simulate", {
      signal, profile: { id: reg.id || "simulation", topics },
    });
    box.textContent = "";
    const head = document.createElement("p");
    head.className = result.decision ? "ok" : "muted";
    head.textContent = result.decision
      ? `Fires: ${result.decision.rule} at ${result.decision.place} ` +
        `(${Math.round(result.decision.distance_m)} m, variant ${result.decision.variant})`
      : "No push for this signal.";
    box.append(head);
    const table = document.createElement("table");
    table.innerHTML = "<tr><th>rule</th><th>matched</th><th>reason</th></tr>";
    for (const r of result.rules) {
      const tr = table.insertRow();
      tr.insertCell().textContent = r.rule;
      tr.insertCell().textContent = r.matched ? "yes" : "no";
      tr.insertCell().textContent = r.reason || "";
    }
    box.append(table);
  }

  async function send(position) {
    mc.setMoment($("moment").value || null);
    const ok = await mc.sendPosition(position, { force: true });
    const { latitude, longitude } = position.coords;
    $("signal-status").textContent = ok
      ? `Sent ${latitude.toFixed(5)}, ${longitude.toFixed(5)}.` : "Not sent, see the log.";
    const signal = Momentcast.signalFromPosition(position, mc.moment, {});
    await explain(signal).catch((err) => log(`explain: ${err.message}`, "error"));
  }

  const guard = (fn) => () => fn().catch(() => { /* already reported through on("error") */ });

  $("subscribe").addEventListener("click", guard(async () => {
    const topics = $("topics").value.split(",").map((t) => t.trim()).filter(Boolean);
    await mc.subscribe({ topics, location_consent: true });
  }));
  $("unsubscribe").addEventListener("click", guard(() => mc.unsubscribe()));
  $("here").addEventListener("click", () => {
    if (!navigator.geolocation) return log("no geolocation in this browser", "error");
    navigator.geolocation.getCurrentPosition(
      (p) => send(p).catch((e) => log(e.message, "error")),
      (e) => log(Momentcast.geolocationError(e).message, "error"));
  });
  $("track").addEventListener("click", () => {
    try { mc.startTracking({ moment: $("moment").value || null }); } catch (_e) { /* logged */ }
  });
  $("send-place").addEventListener("click", () => {
    const p = places.get($("place").value);
    if (!p) return;
    send({ coords: { latitude: p.lat, longitude: p.lon, accuracy: 10, speed: 1 },
      timestamp: Date.now() }).catch((e) => log(e.message, "error"));
  });
  $("load-places").addEventListener("click",
    () => loadPlaces().catch((e) => log(`places: ${e.message}`, "error")));

  showSubscription();
  if (sessionStorage.getItem("mc.admin")) {
    $("admin").value = sessionStorage.getItem("mc.admin");
    loadPlaces().catch(() => {});
  }
  window.momentcastDemo = { mc, send, explain };
})();
