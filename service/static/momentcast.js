/* momentcast browser SDK: subscribe to pushes and send location signals.
 *
 *   <script src="https://push.example.com/momentcast.js"></script>
 *   const mc = Momentcast.create({ server: "https://push.example.com" });
 *   await mc.subscribe({ topics: ["food"] });   // asks for notification permission
 *   mc.startTracking({ moment: "go" });          // asks for location permission
 *
 * A site with a service worker of its own passes it (`serviceWorker: "/app-sw.js"`, or its
 * ServiceWorkerRegistration) after adding importScripts(".../sw.js") to it; the SDK never
 * registers /sw.js over a worker the page already has.
 *
 * Plain script, no build step. The npm package (sdk/) is built from this very file: a
 * CommonJS copy and an ES module made from it, with hand-written types
 * (sdk/momentcast.d.cts). Every browser API it touches can be passed in `options` (fetch,
 * navigator, storage, caches, Notification, now, random, sleep), which is how node's test
 * runner exercises it without a browser. See docs/clients.md.
 */
"use strict";

(function (root) {
  const STORAGE_KEY = "momentcast.registration";
  const STATE_CACHE = "momentcast-state";
  const REGISTRATION_URL = "/__momentcast/registration";
  const LAST_CLICK_URL = "/__momentcast/last-click";
  const MOMENTS = ["know", "go", "do", "buy"];
  const MAX_BATCH = 500;
  const EARTH_RADIUS_M = 6371008.8;
  // Answers after which sending the same signals again may succeed. The server may have
  // stored them before a 5xx or a lost answer: every signal carries an id, so a retry is
  // never stored twice.
  const RETRY_STATUSES = [429, 502, 503, 504];
  // Registered only for a page that has no service worker yet (and no serviceWorker option).
  const DEFAULT_WORKER = "/sw.js";

  const DEFAULTS = {
    // A new fix is sent when it moved minDistanceM since the last one sent, but not more
    // often than every minIntervalS; standing still still sends every maxIntervalS so that
    // "dwell" rules (three minutes in a store) can fire.
    minIntervalS: 30,
    minDistanceM: 25,
    maxIntervalS: 120,
    highAccuracy: true,
    maxQueue: 100,
    // Signal retries: up to `retries` more tries after a network error, 429, 502, 503 or
    // 504, waiting a random time between half and all of retryBaseMs * 2^n (at most
    // retryMaxMs), or Retry-After when the server sends it.
    retries: 4,
    retryBaseMs: 1000,
    retryMaxMs: 30000,
  };

  class MomentcastError extends Error {
    constructor(code, message, cause) {
      super(message);
      this.name = "MomentcastError";
      this.code = code;
      if (cause !== undefined) this.cause = cause;
    }
  }

  /** base64url (VAPID public key) to the bytes applicationServerKey wants. */
  function base64UrlToBytes(value) {
    const base64 = value.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const binary = typeof atob === "function" ? atob(padded)
      : Buffer.from(padded, "base64").toString("binary");
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  function distanceM(a, b) {
    const rad = Math.PI / 180;
    const dLat = (b.lat - a.lat) * rad;
    const dLon = (b.lon - a.lon) * rad;
    const h = Math.sin(dLat / 2) ** 2 +
      Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) ** 2;
    return 2 * EARTH_RADIUS_M * Math.asin(Math.min(1, Math.sqrt(h)));
  }

  /** Decides which position fixes are worth a signal: saves battery, data and rate limit. */
  class Throttle {
    constructor({ minIntervalS, minDistanceM, maxIntervalS }) {
      this.minIntervalMs = minIntervalS * 1000;
      this.maxIntervalMs = maxIntervalS * 1000;
      this.minDistanceM = minDistanceM;
      this.last = null;
    }

    /** True if `signal` (with lat, lon and a time in ms) should be sent now. */
    accept(signal, nowMs) {
      if (this.last === null) return true;
      const elapsed = nowMs - this.last.atMs;
      if (elapsed < this.minIntervalMs) return false;
      if (elapsed >= this.maxIntervalMs) return true;
      return distanceM(this.last, signal) >= this.minDistanceM;
    }

    sent(signal, nowMs) {
      this.last = { lat: signal.lat, lon: signal.lon, atMs: nowMs };
    }

    reset() {
      this.last = null;
    }
  }

  /** A Signal for POST /v1/signals from a GeolocationPosition. */
  function signalFromPosition(position, moment, context) {
    const c = position.coords;
    const signal = {
      lat: c.latitude,
      lon: c.longitude,
      at: new Date(position.timestamp).toISOString(),
    };
    if (Number.isFinite(c.accuracy)) signal.accuracy_m = c.accuracy;
    // Browsers report null (not 0) when they do not know the speed; never send a guess.
    if (Number.isFinite(c.speed) && c.speed >= 0) signal.speed_mps = c.speed;
    if (moment) signal.moment = moment;
    if (context && Object.keys(context).length) signal.context = context;
    return signal;
  }

  /** An id for a signal, unique for this device: the server stores a signal once per id. */
  function newSignalId() {
    const c = root.crypto;
    if (c && typeof c.randomUUID === "function") return c.randomUUID();
    // No randomUUID (a page without HTTPS): time and randomness, 1-64 of [A-Za-z0-9._:-].
    return `${Date.now().toString(36)}.${Math.random().toString(36).slice(2)}` +
      `${Math.random().toString(36).slice(2)}`;
  }

  /** Whether sending the same request again may succeed (network, 429, 502-504). */
  function retryable(err) {
    return err instanceof MomentcastError &&
      (err.code === "network" || RETRY_STATUSES.includes(err.status));
  }

  /** Milliseconds to wait before retry number `attempt` (0 for the first retry): Retry-After
   * when the server gave one, plus a little jitter; else exponential backoff with jitter, so
   * that devices cut off together do not come back together. */
  function retryDelayMs(attempt, err, { retryBaseMs, retryMaxMs }, random) {
    if (err && err.retryAfterS) return err.retryAfterS * 1000 + random() * retryBaseMs;
    const ceiling = Math.min(retryMaxMs, retryBaseMs * 2 ** attempt);
    return ceiling / 2 + random() * (ceiling / 2);
  }

  /** The registration among the page's whose worker script is `url` (resolved against the
   * page), or null. */
  async function findRegistration(container, url) {
    if (!container.getRegistrations) return null;
    for (const registration of await container.getRegistrations()) {
      const worker = registration.active || registration.waiting || registration.installing;
      if (!worker) continue;
      let wanted;
      try {
        wanted = new URL(url, root.location ? root.location.href : worker.scriptURL).href;
      } catch (_err) {
        return null;
      }
      if (worker.scriptURL === wanted) return registration;
    }
    return null;
  }

  /** `registration` once it has an active worker: pushManager.subscribe() needs one, and a
   * worker registered a moment ago is still installing. */
  function activated(registration) {
    if (registration.active) return Promise.resolve(registration);
    const worker = registration.installing || registration.waiting;
    if (!worker || !worker.addEventListener) return Promise.resolve(registration);
    return new Promise((resolve, reject) => {
      worker.addEventListener("statechange", () => {
        if (worker.state === "activated") resolve(registration);
        if (worker.state === "redundant") {
          reject(new Error(`the service worker ${worker.scriptURL} failed to install`));
        }
      });
    });
  }

  /** Whether `value` can be the serviceWorker option: a script URL or a registration. */
  function validWorkerOption(value) {
    if (value === undefined || value === null) return true;
    if (typeof value === "string") return value !== "";
    return typeof value === "object" && Boolean(value.pushManager);
  }

  function geolocationError(err) {
    const codes = { 1: "location-denied", 2: "location-unavailable", 3: "location-timeout" };
    const code = codes[err && err.code] || "location-error";
    const text = {
      "location-denied": "location permission was refused",
      "location-unavailable": "the position is not available",
      "location-timeout": "getting the position timed out",
    }[code] || "location error";
    return new MomentcastError(code, `${text}${err && err.message ? `: ${err.message}` : ""}`, err);
  }

  class Client {
    constructor(options = {}) {
      if (!options.server && !root.location) {
        throw new MomentcastError("config", "options.server is required");
      }
      if (!validWorkerOption(options.serviceWorker)) {
        throw new MomentcastError("config",
          "options.serviceWorker must be the URL of your service worker script or its " +
          "ServiceWorkerRegistration");
      }
      this.options = { ...DEFAULTS, ...options };
      this.server = (options.server || root.location.origin).replace(/\/+$/, "");
      this.fetch = options.fetch || root.fetch.bind(root);
      this.navigator = options.navigator || root.navigator;
      this.storage = options.storage !== undefined ? options.storage : root.localStorage;
      this.caches = options.caches !== undefined ? options.caches : root.caches;
      this.Notification = options.Notification || root.Notification;
      this.now = options.now || (() => Date.now());
      this.random = options.random || Math.random;
      this.sleep = options.sleep || ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
      this.retryAt = 0;  // no signal request before this time (ms): the server's Retry-After
      this.flushing = null;
      this.throttle = new Throttle(this.options);
      this.moment = null;
      this.context = {};
      this.queue = [];
      this.watchId = null;
      this.listeners = { status: [], error: [], registration: [] };
      this.registration = this._load();
      this._listenToServiceWorker();
    }

    on(event, fn) {
      this.listeners[event].push(fn);
      return this;
    }

    _emit(event, value) {
      for (const fn of this.listeners[event]) {
        try { fn(value); } catch (_err) { /* a listener's bug is not ours to report */ }
      }
    }

    /** Report an error to listeners (visible in the page) and hand it back for throwing. */
    _fail(error) {
      this._emit("error", error);
      return error;
    }

    get subscribed() {
      return this.registration !== null;
    }

    _load() {
      try {
        const raw = this.storage && this.storage.getItem(STORAGE_KEY);
        const value = raw ? JSON.parse(raw) : null;
        return value && value.server === this.server ? value : null;
      } catch (_err) {
        return null;
      }
    }

    async _save(registration) {
      this.registration = registration;
      if (this.storage) {
        if (registration) this.storage.setItem(STORAGE_KEY, JSON.stringify(registration));
        else this.storage.removeItem(STORAGE_KEY);
      }
      // The service worker cannot read localStorage; it finds the registration here when it
      // must re-register after a pushsubscriptionchange.
      if (this.caches) {
        const cache = await this.caches.open(STATE_CACHE);
        if (registration) {
          await cache.put(REGISTRATION_URL, new Response(JSON.stringify(registration)));
        } else {
          await cache.delete(REGISTRATION_URL);
        }
      }
      this._emit("registration", registration);
    }

    _listenToServiceWorker() {
      const sw = this.navigator && this.navigator.serviceWorker;
      if (!sw || !sw.addEventListener) return;
      sw.addEventListener("message", (event) => {
        const data = event.data || {};
        if (data.type === "momentcast:registration" && data.server === this.server) {
          const { type: _type, ...registration } = data;
          this._save(registration).catch((err) => this._fail(err));
          this._emit("status", "re-registered after the browser renewed the subscription");
        }
      });
    }

    /** The service worker registration pushes go to. The serviceWorker option names it (a
     * URL, registered unless the page has it already, or a registration); without the
     * option, the worker already registered for this page is kept (a site's own, which
     * imports sw.js), and only a page with none gets /sw.js. `register` false: find only. */
    async _serviceWorker(register) {
      const container = this.navigator.serviceWorker;
      const wanted = this.options.serviceWorker;
      if (wanted && typeof wanted === "object") return wanted;
      if (typeof wanted === "string") {
        const existing = await findRegistration(container, wanted);
        if (existing || !register) return existing;
        return container.register(wanted);
      }
      const existing = container.getRegistration ? await container.getRegistration() : null;
      if (existing || !register) return existing || null;
      return container.register(DEFAULT_WORKER);
    }

    async _request(method, path, body, token) {
      const headers = {};
      if (body !== undefined) headers["Content-Type"] = "application/json";
      if (token) headers.Authorization = `Bearer ${token}`;
      let response;
      try {
        response = await this.fetch(this.server + path, {
          method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        });
      } catch (err) {
        throw new MomentcastError("network", `cannot reach ${this.server}: ${err.message}`, err);
      }
      if (response.status === 204) return null;
      let data = null;
      try { data = await response.json(); } catch (_err) { data = null; }
      if (!response.ok) {
        const e = (data && data.error) || {};
        const error = new MomentcastError(
          e.code || `http-${response.status}`, e.message || `HTTP ${response.status}`);
        error.status = response.status;
        error.details = e.details || [];
        error.retryAfterS = Number(response.headers && response.headers.get &&
                                   response.headers.get("Retry-After")) || null;
        throw error;
      }
      return data;
    }

    /** Ask for permission, subscribe to pushes and register with the server. */
    async subscribe(profile = {}) {
      const nav = this.navigator;
      if (!nav || !nav.serviceWorker) {
        throw this._fail(new MomentcastError("unsupported", "this browser has no Web Push"));
      }
      if (this.Notification && this.Notification.requestPermission) {
        const permission = await this.Notification.requestPermission();
        if (permission !== "granted") {
          throw this._fail(new MomentcastError(
            "permission-denied",
            permission === "denied"
              ? "notifications are blocked for this site; allow them in the browser settings"
              : "notification permission was not granted"));
        }
      }
      try {
        const { public_key: publicKey } = await this._request("GET", "/v1/vapid-public-key");
        const ready = await activated(await this._serviceWorker(true));
        if (!ready.pushManager) {
          throw new MomentcastError("unsupported", "this browser has no Web Push");
        }
        const applicationServerKey = base64UrlToBytes(publicKey);
        let subscription = await ready.pushManager.getSubscription();
        if (subscription && subscription.options && subscription.options.applicationServerKey &&
            !sameKey(subscription.options.applicationServerKey, applicationServerKey)) {
          // The server's VAPID key changed: the old subscription can never receive again.
          await subscription.unsubscribe();
          subscription = null;
        }
        if (!subscription) {
          subscription = await ready.pushManager.subscribe({
            userVisibleOnly: true, applicationServerKey,
          });
        }
        const body = { subscription: subscription.toJSON(), ...profileBody(profile) };
        const created = await this._request("POST", "/v1/subscriptions", body);
        await this._save({
          server: this.server, id: created.id, token: created.token,
          applicationServerKey: publicKey, profile: profileBody(profile),
        });
        this._emit("status", "subscribed");
        return { id: created.id };
      } catch (err) {
        throw this._fail(err instanceof MomentcastError ? err
          : new MomentcastError("subscribe-failed", `could not subscribe: ${err.message}`, err));
      }
    }

    _require() {
      if (!this.registration) {
        throw this._fail(new MomentcastError("not-subscribed", "call subscribe() first"));
      }
      return this.registration;
    }

    /** Change topics / attributes / paused: PATCH /v1/subscriptions/{id}. */
    async updateProfile(patch) {
      const reg = this._require();
      try {
        const profile = await this._request(
          "PATCH", `/v1/subscriptions/${encodeURIComponent(reg.id)}`, patch, reg.token);
        await this._save({ ...reg, profile: { ...(reg.profile || {}), ...profileBody(patch) } });
        return profile;
      } catch (err) {
        throw this._fail(err);
      }
    }

    setTopics(topics) {
      return this.updateProfile({ topics });
    }

    /** The intent the page knows about ("know", "go", "do", "buy"), sent with each signal. */
    setMoment(moment) {
      if (moment !== null && !MOMENTS.includes(moment)) {
        throw new MomentcastError("config", `moment must be one of ${MOMENTS.join(", ")}`);
      }
      this.moment = moment;
    }

    /** Queue one position (GeolocationPosition-like); sent at once unless throttled.
     * A position means the user let the browser share their location: the first one
     * records that consent with the server (location_consent), which refuses locations
     * without it. */
    async sendPosition(position, { force = false } = {}) {
      const signal = signalFromPosition(position, this.moment, this.context);
      const nowMs = this.now();
      if (!force && !this.throttle.accept(signal, nowMs)) return false;
      this.throttle.sent(signal, nowMs);
      signal.id = newSignalId();
      this.queue.push(signal);
      // Offline or rate-limited: keep the newest fixes only, the old ones lose their value.
      if (this.queue.length > this.options.maxQueue) {
        this.queue.splice(0, this.queue.length - this.options.maxQueue);
      }
      if (!(await this._recordLocationConsent())) return false;
      return this.flush();
    }

    /** A context signal: the page's moment and context, no location and no geolocation
     * prompt (a page view, an intent). Location-free rules can match it; it needs no
     * location consent. */
    async signal({ moment, context } = {}) {
      this._require();
      const m = moment === undefined ? this.moment : moment;
      if (m !== null && m !== undefined && !MOMENTS.includes(m)) {
        throw this._fail(new MomentcastError("config", `moment must be one of ${MOMENTS.join(", ")}`));
      }
      const signal = { id: newSignalId(), at: new Date(this.now()).toISOString() };
      if (m) signal.moment = m;
      const merged = { ...this.context, ...(context || {}) };
      if (Object.keys(merged).length) signal.context = merged;
      this.queue.push(signal);
      if (this.queue.length > this.options.maxQueue) {
        this.queue.splice(0, this.queue.length - this.options.maxQueue);
      }
      return this.flush();
    }

    /** PATCH location_consent: true once; false (signals stay queued) if that failed. */
    async _recordLocationConsent() {
      const reg = this._require();
      if (reg.profile && reg.profile.location_consent === true) return true;
      try {
        await this.updateProfile({ location_consent: true });
        return true;
      } catch (_err) {
        return false;  // reported through on("error") by updateProfile
      }
    }

    /** Send queued signals in one batch; on failure they stay queued for the next try.
     * Network errors, 429 and 502-504 are retried with the same signals (so the same ids)
     * after a backoff with jitter or the server's Retry-After. One flush at a time: a call
     * while one runs waits for it, then sends what is still queued. */
    async flush() {
      this._require();
      while (this.flushing) {
        try { await this.flushing; } catch (_err) { /* that call reported its own error */ }
      }
      const mine = this._flushOnce();
      this.flushing = mine;
      try {
        return await mine;
      } finally {
        if (this.flushing === mine) this.flushing = null;
      }
    }

    async _flushOnce() {
      const reg = this._require();
      if (this.queue.length === 0) return true;
      if (this.now() < this.retryAt) return false;  // the server asked to wait: stay queued
      const batch = this.queue.slice(0, MAX_BATCH);
      const body = batch.length === 1 ? batch[0] : { signals: batch };
      for (let attempt = 0; ; attempt += 1) {
        try {
          await this._request("POST", "/v1/signals", body, reg.token);
          break;
        } catch (err) {
          if (err.retryAfterS) this.retryAt = this.now() + err.retryAfterS * 1000;
          const delay = retryDelayMs(attempt, err, this.options, this.random);
          if (!retryable(err) || attempt >= this.options.retries ||
              delay > this.options.retryMaxMs + this.options.retryBaseMs) {
            if (err.status >= 400 && err.status < 500 && err.status !== 429) {
              // The server refused these signals for good (invalid, revoked token): drop them.
              this._forget(batch);
            }
            this._fail(err);
            return false;
          }
          await this.sleep(delay);
        }
      }
      this._forget(batch);
      return true;
    }

    /** Take `batch` off the queue (by identity: the queue may have been trimmed meanwhile). */
    _forget(batch) {
      const sent = new Set(batch);
      this.queue = this.queue.filter((signal) => !sent.has(signal));
    }

    /** Follow navigator.geolocation.watchPosition; errors reach on("error", ...). */
    startTracking({ moment } = {}) {
      this._require();
      if (moment !== undefined) this.setMoment(moment);
      const geo = this.navigator && this.navigator.geolocation;
      if (!geo) throw this._fail(new MomentcastError("unsupported", "no geolocation here"));
      this.stopTracking();
      this.watchId = geo.watchPosition(
        (position) => { this.sendPosition(position).catch((err) => this._fail(err)); },
        (err) => {
          const error = geolocationError(err);
          if (error.code === "location-denied") this.stopTracking();
          this._fail(error);
        },
        { enableHighAccuracy: this.options.highAccuracy, maximumAge: 10000, timeout: 30000 },
      );
      this._emit("status", "tracking");
      return this.watchId;
    }

    stopTracking() {
      if (this.watchId !== null && this.navigator && this.navigator.geolocation) {
        this.navigator.geolocation.clearWatch(this.watchId);
        this._emit("status", "tracking stopped");
      }
      this.watchId = null;
      this.throttle.reset();
    }

    /** Unsubscribe everywhere: the browser, then the server (which erases the data). */
    async unsubscribe() {
      const reg = this._require();
      this.stopTracking();
      try {
        const registration = this.navigator && this.navigator.serviceWorker
          ? await this._serviceWorker(false) : null;
        const subscription = registration && registration.pushManager
          ? await registration.pushManager.getSubscription() : null;
        if (subscription) await subscription.unsubscribe();
        try {
          await this._request("DELETE", `/v1/subscriptions/${encodeURIComponent(reg.id)}`,
            undefined, reg.token);
        } catch (err) {
          if (err.status !== 404) throw err;  // already erased is what we wanted
        }
        this.queue = [];
        await this._save(null);
        this._emit("status", "unsubscribed");
      } catch (err) {
        throw this._fail(err);
      }
    }

    /** Report "converted" for the push the user last clicked (recorded by sw.js). */
    async converted() {
      if (!this.caches) return false;
      const cache = await this.caches.open(STATE_CACHE);
      const stored = await cache.match(LAST_CLICK_URL);
      if (!stored) return false;
      const click = await stored.json();
      const response = await this.fetch(click.events_url, {
        method: "POST",
        headers: { "Content-Type": "text/plain" },
        body: JSON.stringify({
          delivery_id: click.delivery_id, token: click.event_token, type: "converted",
        }),
        keepalive: true,
      });
      if (response.ok) await cache.delete(LAST_CLICK_URL);
      return response.ok;
    }
  }

  function profileBody(profile) {
    const out = {};
    for (const key of ["topics", "attributes", "timezone", "locale", "location_consent"]) {
      if (profile[key] !== undefined) out[key] = profile[key];
    }
    if (out.timezone === undefined && profile.timezone !== null) {
      try {
        out.timezone = Intl.DateTimeFormat().resolvedOptions().timeZone;
      } catch (_err) { /* no Intl: the server falls back to the location's zone */ }
    }
    return out;
  }

  function sameKey(a, b) {
    const x = new Uint8Array(a);
    const y = new Uint8Array(b);
    return x.length === y.length && x.every((v, i) => v === y[i]);
  }

  const Momentcast = {
    create: (options) => new Client(options),
    Client, Throttle, MomentcastError,
    base64UrlToBytes, distanceM, signalFromPosition, geolocationError, profileBody,
    newSignalId, retryable, retryDelayMs, RETRY_STATUSES, DEFAULT_WORKER,
    STORAGE_KEY, STATE_CACHE, REGISTRATION_URL, LAST_CLICK_URL,
  };
  // A module (CommonJS, or the npm package's ES module) exports it; a script tag makes the
  // global `Momentcast`.
  if (typeof module === "object" && module.exports) module.exports = Momentcast;
  else root.Momentcast = Momentcast;
})(typeof globalThis !== "undefined" ? globalThis : this);
