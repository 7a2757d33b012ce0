// Hand-made stand-ins for the browser APIs the SDK and the service worker use.
// They record calls and answer like the real ones; no network is touched.

export class FakeCache {
  constructor() { this.entries = new Map(); }
  async put(url, response) { this.entries.set(url, await response.text()); }
  async match(url) {
    return this.entries.has(url) ? new Response(this.entries.get(url)) : undefined;
  }
  async delete(url) { return this.entries.delete(url); }
}

export class FakeCaches {
  constructor() { this.caches = new Map(); }
  async open(name) {
    if (!this.caches.has(name)) this.caches.set(name, new FakeCache());
    return this.caches.get(name);
  }
}

export class FakeStorage {
  constructor() { this.map = new Map(); }
  getItem(k) { return this.map.has(k) ? this.map.get(k) : null; }
  setItem(k, v) { this.map.set(k, String(v)); }
  removeItem(k) { this.map.delete(k); }
}

/** fetch() with scripted answers per "METHOD path"; records every request. */
export function fakeFetch(routes) {
  const calls = [];
  const fn = async (url, init = {}) => {
    const method = init.method || "GET";
    const path = new URL(url).pathname;
    calls.push({ url, method, path, headers: init.headers || {},
      body: init.body === undefined ? undefined : JSON.parse(init.body) });
    const route = routes[`${method} ${path}`];
    if (route === undefined) return new Response("{}", { status: 404 });
    const answer = typeof route === "function" ? await route(calls.at(-1)) : route;
    if (answer instanceof Error) throw answer;
    const [status, body, headers] = answer;
    return new Response(status === 204 ? null : JSON.stringify(body), { status, headers });
  };
  fn.calls = calls;
  return fn;
}

export function fakePushSubscription(endpoint = "https://push.example.net/abc") {
  return {
    endpoint,
    unsubscribed: false,
    options: null,
    toJSON() {
      return { endpoint, expirationTime: null, keys: { p256dh: "BPUB", auth: "AUTH" } };
    },
    async unsubscribe() { this.unsubscribed = true; return true; },
  };
}

/** A ServiceWorkerRegistration with a working pushManager; `scriptURL` is its worker's. */
export function fakeRegistration(state, scriptURL = "https://shop.example/sw.js") {
  return {
    scope: new URL("/", scriptURL).href,
    active: { scriptURL, state: "activated" },
    pushManager: {
      async getSubscription() { return state.subscription; },
      async subscribe(options) {
        state.subscribeOptions = options;
        state.subscription = fakePushSubscription();
        state.subscription.options = options;
        return state.subscription;
      },
    },
  };
}

/** navigator with a service worker container: `registrations` are the site's workers already
 * registered (made with fakeRegistration), `controller` the script URL controlling the page. */
export function fakeNavigator({ existing = null, registrations = [], controller = null } = {}) {
  const state = { subscribeOptions: null, registered: null, subscription: existing,
    registrations, watches: new Map(), nextWatch: 1, cleared: [] };
  const listeners = [];
  return {
    state,
    serviceWorker: {
      controller: controller ? { scriptURL: controller } : null,
      async register(url) {
        state.registered = url;
        const registration = fakeRegistration(state, new URL(url, "https://shop.example/").href);
        state.registrations = [registration];  // one scope: the new script replaces the old
        return registration;
      },
      // The registration whose scope covers the page (all fakes have scope "/").
      async getRegistration() { return state.registrations[0]; },
      async getRegistrations() { return [...state.registrations]; },
      get ready() { return Promise.resolve(state.registrations[0]); },
      addEventListener(type, fn) { listeners.push([type, fn]); },
      dispatch(type, event) { for (const [t, fn] of listeners) if (t === type) fn(event); },
    },
    geolocation: {
      watchPosition(ok, err, options) {
        const id = state.nextWatch++;
        state.watches.set(id, { ok, err, options });
        return id;
      },
      clearWatch(id) { state.watches.delete(id); state.cleared.push(id); },
    },
  };
}

export function position(lat, lon, { accuracy = 10, speed = null, timestamp = 0 } = {}) {
  return { coords: { latitude: lat, longitude: lon, accuracy, speed }, timestamp };
}
