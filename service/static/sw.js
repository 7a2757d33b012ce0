/* momentcast service worker: shows pushes and reports shown / clicked / dismissed.
 *
 * Serve it from your own origin (a service worker's scope never crosses origins), either as
 * this file or as a one-liner: importScripts("https://push.example.com/sw.js");
 * The same file is loaded by node's test runner, which is why the handlers take their
 * environment (`scope`) as an argument instead of reaching for `self` directly.
 *
 * Pushes are Declarative Web Push messages ({"web_push": 8030, "notification": {...},
 * "mutable": true}): browsers that support the format (Safari 18.4+) could show them without
 * this worker; here the worker shows the same notification wherever it runs, so that it can
 * report `shown`. Clicks are reported to events_url as well as counted by the `navigate` links
 * (GET /c/...): the server counts a delivery's click once, whichever arrives first. The older
 * payload (title, body, url ... at the top level) is still shown.
 *
 * Imported into a site's own worker, it shares that worker politely: it handles only
 * momentcast's pushes (those whose data carries a delivery_id) and leaves every other push to
 * the site's handlers, and it calls skipWaiting() and clients.claim() only when it is itself
 * the registered script, never on the site's behalf.
 */
"use strict";

(function () {
  const MC_STATE_CACHE = "momentcast-state";
  const MC_LAST_CLICK = "/__momentcast/last-click";
  const MC_REGISTRATION = "/__momentcast/registration";
  const MC_DECLARATIVE = 8030;
  const MC_FIELDS = ["body", "icon", "image", "badge", "tag", "lang", "dir", "timestamp",
    "silent", "requireInteraction", "renotify"];

  /** The URL this file was loaded from, read from a stack trace: a worker has no
   * document.currentScript, and importScripts() leaves location.href at the site's worker.
   * Null when the trace names no URL. */
  function ownScriptUrl() {
    const stack = String(new Error().stack || "");
    const match = /((?:https?|file):\/\/[^\s()@]+?):\d+:\d+/.exec(stack);
    return match ? match[1] : null;
  }

  const MC_SCRIPT_URL = ownScriptUrl();

  /** Whether this file is the worker's registered script (not imported into another one).
   * When unsure, it is not: then a new version waits for the old one's tabs to close, which
   * is the browser's default, rather than taking over a worker that is not its own. */
  function isRegisteredScript(scope, scriptUrl = MC_SCRIPT_URL) {
    const own = scope && scope.location && scope.location.href;
    return Boolean(own && scriptUrl && own.split("#")[0] === scriptUrl.split("#")[0]);
  }

  /** The push's JSON payload, or null (no data, not JSON). */
  function pushPayload(event) {
    try {
      return event.data ? event.data.json() : null;
    } catch (_err) {
      return null;
    }
  }

  /** Whether a push payload is momentcast's: its data carries the delivery_id (declarative
   * messages in notification.data, the older payload in data). */
  function isOurs(payload) {
    if (!payload || typeof payload !== "object") return false;
    const holder = payload.web_push === MC_DECLARATIVE ? payload.notification : payload;
    const data = holder && typeof holder === "object" ? holder.data : null;
    return Boolean(data && typeof data === "object" && data.delivery_id != null);
  }

  /** Whether a shown notification is one of momentcast's pushes. */
  function isOurNotification(notification) {
    const data = notification && notification.data;
    return Boolean(data && typeof data === "object" && data.delivery_id != null);
  }

  /** Whether a push event is momentcast's (see isOurs). */
  function isOurPush(event) {
    return isOurs(pushPayload(event));
  }

  /** The notification a push describes: a declarative message's, or an old-format payload's
   * (its url and action urls then stand in for the navigate links). Null when there is none. */
  function notificationOf(payload) {
    if (!payload || typeof payload !== "object") return null;
    if (payload.web_push === MC_DECLARATIVE) {
      const n = payload.notification;
      return n && typeof n === "object" ? n : null;
    }
    const actions = Array.isArray(payload.actions) ? payload.actions : undefined;
    return {
      ...payload,
      navigate: payload.url || null,
      ...(actions ? { actions: actions.map((a) => (a ? { ...a, navigate: a.url || null } : a)) }
        : {}),
      data: { ...(payload.data || {}), url: payload.url || null },
    };
  }

  /** [title, options] for showNotification(), from the decrypted push payload. */
  function notificationFromPayload(payload) {
    const n = notificationOf(payload);
    if (!n || typeof n.title !== "string" || n.title === "") {
      throw new Error("push payload has no title");
    }
    const data = { ...(n.data || {}) };
    data.url = data.url || null;
    const options = { data };
    for (const key of MC_FIELDS) {
      // lang "" is the format's "unknown": leave it to the browser.
      if (n[key] !== undefined && n[key] !== null && n[key] !== "") options[key] = n[key];
    }
    if (Array.isArray(n.actions)) {
      // Browsers show at most a couple of buttons; where each leads is looked up on click.
      const actions = n.actions.filter(
        (a) => a && typeof a.action === "string" && a.action && typeof a.title === "string");
      options.actions = actions.map(
        (a) => ({ action: a.action, title: a.title, ...(a.icon ? { icon: a.icon } : {}) }));
      data.action_urls = Object.fromEntries(
        actions.filter((a) => a.navigate).map((a) => [a.action, a.navigate]));
    }
    // A push with a tag replaces an older one silently unless renotify is set.
    if (options.tag && options.renotify === undefined) options.renotify = true;
    return [n.title, options];
  }

  /** The request body of POST /v1/events, or null when the push carries no event token. */
  function eventBody(data, type, action) {
    if (!data || !data.events_url || !data.event_token || data.delivery_id == null) return null;
    const body = { delivery_id: data.delivery_id, token: data.event_token, type };
    if (action) body.action = action;
    return JSON.stringify(body);
  }

  /** Report one event; text/plain keeps it a CORS "simple request" (no preflight). */
  async function reportEvent(fetchFn, data, type, attempts = 2, action = "") {
    const body = eventBody(data, type, action);
    if (body === null) return false;
    for (let i = 0; i < attempts; i += 1) {
      try {
        const response = await fetchFn(data.events_url, {
          method: "POST", body, keepalive: true, headers: { "Content-Type": "text/plain" },
        });
        // 4xx will not get better by retrying (forged, erased or malformed).
        if (response.ok || (response.status >= 400 && response.status < 500)) return response.ok;
      } catch (_err) {
        // network error: retry once
      }
    }
    return false;
  }

  /** Where a click should go: an action's link (its navigate URL, which redirects to the
   * action's target), else the notification's url (opened directly: the click is reported). */
  function clickTarget(data, action) {
    if (action && data && data.action_urls && data.action_urls[action]) {
      return data.action_urls[action];
    }
    return (data && data.url) || null;
  }

  async function rememberClick(scope, data) {
    if (!scope.caches) return;
    const cache = await scope.caches.open(MC_STATE_CACHE);
    const state = {
      delivery_id: data.delivery_id, event_token: data.event_token, events_url: data.events_url,
      at: Date.now(),
    };
    await cache.put(MC_LAST_CLICK, new scope.Response(JSON.stringify(state), {
      headers: { "Content-Type": "application/json" },
    }));
  }

  async function focusOrOpen(scope, url) {
    if (!url) return null;
    const windows = await scope.clients.matchAll({ type: "window", includeUncontrolled: true });
    for (const client of windows) {
      if (client.url === url && "focus" in client) return client.focus();
    }
    return scope.clients.openWindow ? scope.clients.openWindow(url) : null;
  }

  async function onPush(scope, payload) {
    let title;
    let options;
    try {
      [title, options] = notificationFromPayload(payload);
    } catch (_err) {
      // userVisibleOnly promises a notification for every push; say something generic.
      await scope.registration.showNotification("New notification");
      return;
    }
    await scope.registration.showNotification(title, options);
    await reportEvent(scope.fetch.bind(scope), options.data, "shown");
  }

  async function onClick(scope, event) {
    const data = event.notification.data || {};
    const action = event.action || "";
    event.notification.close();
    await Promise.all([
      reportEvent(scope.fetch.bind(scope), data, "clicked", 2, action),
      rememberClick(scope, data),
      focusOrOpen(scope, clickTarget(data, event.action)),
    ]);
  }

  async function onClose(scope, event) {
    await reportEvent(scope.fetch.bind(scope), event.notification.data || {}, "dismissed");
  }

  /** The browser replaced the subscription: subscribe again and register the new one. */
  async function onSubscriptionChange(scope, event) {
    const cache = scope.caches ? await scope.caches.open(MC_STATE_CACHE) : null;
    const stored = cache ? await cache.match(MC_REGISTRATION) : null;
    const registration = stored ? await stored.json() : null;
    if (!registration || !registration.server) return;
    const old = event.oldSubscription;
    const subscription = event.newSubscription || await scope.registration.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: old && old.options ? old.options.applicationServerKey
        : registration.applicationServerKey,
    });
    // The device token proves this browser holds the subscription: an endpoint that stays the
    // same with new keys is renewed only with it (else 409 endpoint_registered).
    const headers = { "Content-Type": "application/json" };
    if (registration.token) headers.Authorization = `Bearer ${registration.token}`;
    const response = await scope.fetch(`${registration.server}/v1/subscriptions`, {
      method: "POST",
      headers,
      body: JSON.stringify({ subscription: subscription.toJSON(), ...(registration.profile || {}) }),
    });
    if (!response.ok) return;
    const created = await response.json();
    const next = { ...registration, id: created.id, token: created.token, renewed_at: Date.now() };
    await cache.put(MC_REGISTRATION, new scope.Response(JSON.stringify(next)));
    const windows = await scope.clients.matchAll({ type: "window", includeUncontrolled: true });
    for (const client of windows) client.postMessage({ type: "momentcast:registration", ...next });
  }

  /** Attach the handlers to a service worker global scope. `standalone`: this file is the
   * registered script, so it may take over at once (see isRegisteredScript). */
  function install(scope, { standalone = false } = {}) {
    scope.addEventListener("push", (event) => {
      const payload = pushPayload(event);
      // Not momentcast's: the site's own handlers show it (no notification, no waitUntil here).
      if (!isOurs(payload)) return;
      event.waitUntil(onPush(scope, payload));
    });
    // Clicks and closes likewise: only on notifications this file showed (they keep the
    // delivery's data); the site's own notifications are its handlers' to open.
    scope.addEventListener("notificationclick", (event) => {
      if (isOurNotification(event.notification)) event.waitUntil(onClick(scope, event));
    });
    scope.addEventListener("notificationclose", (event) => {
      if (isOurNotification(event.notification)) event.waitUntil(onClose(scope, event));
    });
    scope.addEventListener("pushsubscriptionchange",
      (event) => event.waitUntil(onSubscriptionChange(scope, event)));
    if (!standalone) return;
    // A new version of this file takes over at once instead of waiting for every tab to close.
    scope.addEventListener("install", () => scope.skipWaiting && scope.skipWaiting());
    scope.addEventListener("activate",
      (event) => event.waitUntil(scope.clients.claim ? scope.clients.claim() : Promise.resolve()));
  }

  // One global for the site's own worker (momentcast.isOurPush(event) in its push handler);
  // everything else stays inside this function, so that no name of the site's is replaced.
  const api = {
    MC_STATE_CACHE, MC_LAST_CLICK, MC_REGISTRATION, MC_SCRIPT_URL,
    notificationOf, notificationFromPayload, eventBody, reportEvent, clickTarget, isOurs,
    isOurPush, isRegisteredScript, install,
  };
  if (typeof module === "object" && module.exports) {
    module.exports = api;
  } else if (typeof ServiceWorkerGlobalScope !== "undefined" &&
             self instanceof ServiceWorkerGlobalScope) {
    const standalone = isRegisteredScript(self);
    self.momentcast = { isOurs, isOurPush, scriptUrl: MC_SCRIPT_URL, standalone };
    install(self, { standalone });
  }
})();
