// Unit tests of service/static/momentcast.js (node --test; no network, no browser).
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { describe, it } from "node:test";

import {
  FakeCaches, FakeStorage, fakeFetch, fakeNavigator, fakePushSubscription, fakeRegistration,
  position,
} from "./fakes.mjs";

const require = createRequire(import.meta.url);
const Momentcast = require("../../../service/static/momentcast.js");

const SERVER = "https://push.example.com";
// A real 65-byte P-256 point would do too; the SDK only decodes base64url.
const KEY = Buffer.from(Uint8Array.from({ length: 65 }, (_, i) => i)).toString("base64url");

function routes(extra = {}) {
  return {
    "GET /v1/vapid-public-key": [200, { public_key: KEY }],
    "POST /v1/subscriptions": [201, { id: "sub-1", token: "tok-1" }],
    "POST /v1/signals": [202, { accepted: 1 }],
    "PATCH /v1/subscriptions/sub-1": [200, { id: "sub-1" }],
    ...extra,
  };
}

function client({ permission = "granted", fetchRoutes = routes(), nav = fakeNavigator(),
  clock = { t: 1_000_000 }, random = () => 0.5, options = {} } = {}) {
  const fetch = fakeFetch(fetchRoutes);
  const storage = new FakeStorage();
  const caches = new FakeCaches();
  const errors = [];
  // Retry waits pass on the fake clock at once; each one is recorded.
  const sleeps = [];
  const sleep = async (ms) => { sleeps.push(ms); clock.t += ms; };
  const mc = Momentcast.create({
    server: `${SERVER}/`, fetch, navigator: nav, storage, caches,
    Notification: { requestPermission: async () => permission }, now: () => clock.t,
    random, sleep, ...options,
  });
  mc.on("error", (e) => errors.push(e));
  return { mc, fetch, nav, storage, caches, errors, clock, sleeps };
}

/** An answer per call of POST /v1/signals, in order; the last one repeats. */
function signalAnswers(...answers) {
  let n = 0;
  return routes({ "POST /v1/signals": () => answers[Math.min(n++, answers.length - 1)] });
}

const signalCalls = (fetch) => fetch.calls.filter((c) => c.path === "/v1/signals");
const SIGNAL_ID = /^[A-Za-z0-9._:-]{1,64}$/;
const UNAVAILABLE = [503, { error: { code: "unavailable", message: "retry later" } },
  { "Retry-After": "1" }];

describe("helpers", () => {
  it("decodes base64url keys to bytes", () => {
    assert.deepEqual([...Momentcast.base64UrlToBytes("AQID_-8")], [1, 2, 3, 255, 239]);
    assert.equal(Momentcast.base64UrlToBytes(KEY).length, 65);
  });

  it("measures distances like the server (haversine)", () => {
    // 0.001 degree of latitude is about 111.2 m.
    const d = Momentcast.distanceM({ lat: 52.52, lon: 13.4 }, { lat: 52.521, lon: 13.4 });
    assert.ok(Math.abs(d - 111.2) < 0.5, String(d));
  });

  it("builds signals without inventing unknown speed", () => {
    const s = Momentcast.signalFromPosition(
      position(52.5, 13.4, { accuracy: 12, speed: null, timestamp: Date.UTC(2026, 0, 5, 12) }),
      "go", {});
    assert.deepEqual(s, { lat: 52.5, lon: 13.4, at: "2026-01-05T12:00:00.000Z",
      accuracy_m: 12, moment: "go" });
    const moving = Momentcast.signalFromPosition(position(1, 2, { speed: 1.4 }), null,
      { screen: "map" });
    assert.equal(moving.speed_mps, 1.4);
    assert.deepEqual(moving.context, { screen: "map" });
    assert.equal("moment" in moving, false);
  });

  it("throttles by interval and distance, with a heartbeat when standing still", () => {
    const t = new Momentcast.Throttle({ minIntervalS: 30, minDistanceM: 25, maxIntervalS: 120 });
    const here = { lat: 52.52, lon: 13.4 };
    const near = { lat: 52.5201, lon: 13.4 }; // 11 m
    const far = { lat: 52.5205, lon: 13.4 }; // 56 m
    assert.equal(t.accept(here, 0), true);
    t.sent(here, 0);
    assert.equal(t.accept(far, 10_000), false, "too soon even though it moved");
    assert.equal(t.accept(far, 30_000), true);
    assert.equal(t.accept(near, 60_000), false, "moved too little");
    assert.equal(t.accept(near, 120_000), true, "heartbeat for dwell rules");
  });
});

describe("subscribe", () => {
  it("registers the worker, subscribes visibly and keeps the device token", async () => {
    const { mc, fetch, nav, storage, caches } = client();
    const result = await mc.subscribe({ topics: ["food"], timezone: "Europe/Berlin" });
    assert.deepEqual(result, { id: "sub-1" });
    assert.equal(nav.state.registered, "/sw.js");
    assert.equal(nav.state.subscribeOptions.userVisibleOnly, true);
    assert.equal(nav.state.subscribeOptions.applicationServerKey.length, 65);
    const post = fetch.calls.find((c) => c.path === "/v1/subscriptions");
    assert.equal(post.url, `${SERVER}/v1/subscriptions`);
    assert.deepEqual(post.body, {
      subscription: { endpoint: "https://push.example.net/abc", expirationTime: null,
        keys: { p256dh: "BPUB", auth: "AUTH" } },
      topics: ["food"], timezone: "Europe/Berlin",
    });
    const saved = JSON.parse(storage.getItem(Momentcast.STORAGE_KEY));
    assert.equal(saved.token, "tok-1");
    // The service worker finds it in the Cache API for pushsubscriptionchange.
    const cache = await caches.open(Momentcast.STATE_CACHE);
    const forWorker = await (await cache.match(Momentcast.REGISTRATION_URL)).json();
    assert.equal(forWorker.id, "sub-1");
    assert.equal(forWorker.server, SERVER);
    assert.equal(mc.subscribed, true);
  });

  it("reports a refused permission visibly and registers nothing", async () => {
    const { mc, fetch, errors } = client({ permission: "denied" });
    await assert.rejects(mc.subscribe(), (e) => e.code === "permission-denied");
    assert.equal(errors.length, 1);
    assert.match(errors[0].message, /blocked/);
    assert.equal(fetch.calls.length, 0);
    assert.equal(mc.subscribed, false);
  });

  it("passes the server's error message through", async () => {
    const { mc, errors } = client({ fetchRoutes: routes({
      "POST /v1/subscriptions": [422, { error: { code: "invalid", message: "topics.0: bad",
        details: [{ field: "topics.0" }] } }],
    }) });
    await assert.rejects(mc.subscribe({ topics: ["?"] }),
      (e) => e.code === "invalid" && e.status === 422 && e.details[0].field === "topics.0");
    assert.equal(errors[0].message, "topics.0: bad");
  });

  it("replaces a subscription made for another VAPID key", async () => {
    const old = fakePushSubscription("https://push.example.net/old");
    old.options = { applicationServerKey: new Uint8Array(65).buffer };
    const nav = fakeNavigator({ existing: old });
    const { mc, fetch } = client({ nav });
    await mc.subscribe();
    assert.equal(old.unsubscribed, true);
    const post = fetch.calls.find((c) => c.path === "/v1/subscriptions");
    assert.equal(post.body.subscription.endpoint, "https://push.example.net/abc");
  });

  it("adopts a registration renewed by the service worker", async () => {
    const { mc, nav, storage } = client();
    await mc.subscribe();
    nav.serviceWorker.dispatch("message", { data: {
      type: "momentcast:registration", server: SERVER, id: "sub-2", token: "tok-2" } });
    await new Promise((r) => setTimeout(r, 0));
    assert.equal(mc.registration.token, "tok-2");
    assert.equal(JSON.parse(storage.getItem(Momentcast.STORAGE_KEY)).id, "sub-2");
  });
});

describe("the site's own service worker", () => {
  const APP_SW = "https://shop.example/app-sw.js";
  const scripts = (nav) => nav.state.registrations.map((r) => r.active.scriptURL);

  it("uses the worker named by serviceWorker and registers no other", async () => {
    const nav = fakeNavigator();
    const app = fakeRegistration(nav.state, APP_SW);
    nav.state.registrations = [app];
    const { mc, fetch } = client({ nav, options: { serviceWorker: "/app-sw.js" } });
    await mc.subscribe();
    assert.equal(nav.state.registered, null, "the site's registration is reused as it is");
    assert.deepEqual(scripts(nav), [APP_SW]);
    assert.ok(fetch.calls.some((c) => c.path === "/v1/subscriptions"));
    assert.equal(nav.state.subscription.options.userVisibleOnly, true);
  });

  it("registers the named worker when the site has not yet", async () => {
    const nav = fakeNavigator();
    const { mc } = client({ nav, options: { serviceWorker: "/app-sw.js" } });
    await mc.subscribe();
    assert.equal(nav.state.registered, "/app-sw.js");
    assert.deepEqual(scripts(nav), [APP_SW]);
  });

  it("uses a ServiceWorkerRegistration passed in, for subscribe and unsubscribe", async () => {
    const nav = fakeNavigator();
    const own = { subscription: null };
    const app = fakeRegistration(own, APP_SW);
    const { mc } = client({ nav, fetchRoutes: routes({
      "DELETE /v1/subscriptions/sub-1": [204, null] }), options: { serviceWorker: app } });
    await mc.subscribe();
    assert.equal(nav.state.registered, null);
    assert.ok(own.subscription, "subscribed through the registration given");
    await mc.unsubscribe();
    assert.equal(own.subscription.unsubscribed, true);
  });

  it("with no option, keeps the worker already registered for the page", async () => {
    for (const controller of [APP_SW, null]) {
      const nav = fakeNavigator({ controller });
      nav.state.registrations = [fakeRegistration(nav.state, APP_SW)];
      const { mc } = client({ nav });
      await mc.subscribe();
      assert.equal(nav.state.registered, null, `controller ${controller}`);
      assert.deepEqual(scripts(nav), [APP_SW]);
    }
  });

  it("with no option and no worker, registers /sw.js", async () => {
    const { mc, nav } = client();
    await mc.subscribe();
    assert.equal(nav.state.registered, "/sw.js");
  });

  it("refuses a serviceWorker option that is neither a URL nor a registration", () => {
    for (const serviceWorker of [42, "", {}, true]) {
      assert.throws(() => client({ options: { serviceWorker } }),
        (e) => e.code === "config" && /serviceWorker/.test(e.message), String(serviceWorker));
    }
  });
});

describe("signals", () => {
  it("sends throttled positions with the device token and the page's moment", async () => {
    const { mc, fetch, clock } = client();
    await mc.subscribe();
    mc.setMoment("buy");
    assert.equal(await mc.sendPosition(position(52.52, 13.4)), true);
    clock.t += 5_000;
    assert.equal(await mc.sendPosition(position(52.53, 13.4)), false, "throttled");
    clock.t += 30_000;
    assert.equal(await mc.sendPosition(position(52.53, 13.4)), true);
    const sent = fetch.calls.filter((c) => c.path === "/v1/signals");
    assert.equal(sent.length, 2);
    assert.equal(sent[0].headers.Authorization, "Bearer tok-1");
    assert.equal(sent[0].body.moment, "buy");
    assert.equal(sent[1].body.lat, 52.53);
    assert.throws(() => mc.setMoment("eat"), /moment must be one of/);
  });

  it("keeps signals while offline and sends them as one batch later", async () => {
    let online = false;
    const { mc, fetch, clock, errors } = client({ fetchRoutes: routes({
      "POST /v1/signals": () => (online ? [202, { accepted: 2 }] : new TypeError("offline")),
    }) });
    await mc.subscribe();
    assert.equal(await mc.sendPosition(position(52.52, 13.4)), false);
    assert.equal(errors.at(-1).code, "network");
    clock.t += 60_000;
    online = true;
    assert.equal(await mc.sendPosition(position(52.53, 13.4)), true);
    const last = fetch.calls.filter((c) => c.path === "/v1/signals").at(-1);
    assert.deepEqual(last.body.signals.map((s) => s.lat), [52.52, 52.53]);
    assert.equal(mc.queue.length, 0);
  });

  it("drops signals the server refuses for good, keeps them on 429", async () => {
    let status = 429;
    const { mc, clock } = client({ fetchRoutes: routes({
      "POST /v1/signals": () => [status, { error: { code: "x", message: "no" } },
        { "Retry-After": "7" }],
    }) });
    await mc.subscribe();
    await mc.sendPosition(position(52.52, 13.4));
    assert.equal(mc.queue.length, 1);
    status = 422;
    clock.t += 60_000;
    await mc.sendPosition(position(52.53, 13.4));
    assert.equal(mc.queue.length, 0);
  });

  it("watches the position and stops on a refused location permission", async () => {
    const { mc, nav, errors, fetch } = client();
    await mc.subscribe();
    const id = mc.startTracking({ moment: "go" });
    const watch = nav.state.watches.get(id);
    assert.equal(watch.options.enableHighAccuracy, true);
    watch.ok(position(52.52, 13.4));
    await new Promise((r) => setTimeout(r, 0));
    assert.equal(fetch.calls.filter((c) => c.path === "/v1/signals")[0].body.moment, "go");
    watch.err({ code: 1, message: "User denied Geolocation" });
    assert.equal(errors.at(-1).code, "location-denied");
    assert.deepEqual(nav.state.cleared, [id]);
    assert.equal(mc.watchId, null);
  });

  it("records location consent with the first position, once, before sending it", async () => {
    const { mc, fetch, clock } = client();
    await mc.subscribe({ topics: ["food"] });
    await mc.sendPosition(position(52.52, 13.4));
    clock.t += 60_000;
    await mc.sendPosition(position(52.53, 13.4));
    const order = fetch.calls.map((c) => `${c.method} ${c.path}`)
      .filter((c) => !c.startsWith("GET"));
    assert.deepEqual(order, ["POST /v1/subscriptions", "PATCH /v1/subscriptions/sub-1",
      "POST /v1/signals", "POST /v1/signals"]);
    const patch = fetch.calls.find((c) => c.method === "PATCH");
    assert.deepEqual(patch.body, { location_consent: true });
    assert.equal(patch.headers.Authorization, "Bearer tok-1");
  });

  it("sends no consent request when subscribe() already gave it", async () => {
    const { mc, fetch } = client();
    await mc.subscribe({ location_consent: true });
    await mc.sendPosition(position(52.52, 13.4));
    assert.equal(fetch.calls.filter((c) => c.method === "PATCH").length, 0);
    const sent = fetch.calls.find((c) => c.path === "/v1/subscriptions");
    assert.equal(sent.body.location_consent, true);
  });

  it("keeps positions queued while consent cannot be recorded", async () => {
    const { mc, fetch } = client({ fetchRoutes: routes({
      "PATCH /v1/subscriptions/sub-1": () => new TypeError("offline"),
    }) });
    await mc.subscribe();
    assert.equal(await mc.sendPosition(position(52.52, 13.4)), false);
    assert.equal(mc.queue.length, 1);
    assert.equal(fetch.calls.filter((c) => c.path === "/v1/signals").length, 0);
  });

  it("sends a context signal without asking for the location or consent", async () => {
    const { mc, fetch, nav } = client();
    await mc.subscribe();
    mc.setMoment("know");
    assert.equal(await mc.signal({ context: { page_category: "boots" } }), true);
    const [sent] = fetch.calls.filter((c) => c.path === "/v1/signals");
    assert.equal(sent.body.moment, "know");
    assert.deepEqual(sent.body.context, { page_category: "boots" });
    assert.equal(sent.body.lat, undefined);
    assert.equal(sent.body.lon, undefined);
    assert.ok(!Number.isNaN(Date.parse(sent.body.at)));
    assert.equal(fetch.calls.filter((c) => c.method === "PATCH").length, 0);
    assert.equal(nav.state.watches.size, 0);
    await assert.rejects(mc.signal({ moment: "eat" }), /moment must be one of/);
  });

  it("refuses to track before subscribing", () => {
    const { mc, errors } = client();
    assert.throws(() => mc.startTracking(), (e) => e.code === "not-subscribed");
    assert.equal(errors.length, 1);
  });
});

describe("retries", () => {
  it("gives every signal its own id, in the server's alphabet", async () => {
    const { mc, fetch, clock } = client();
    await mc.subscribe();
    await mc.sendPosition(position(52.52, 13.4));
    clock.t += 60_000;
    await mc.sendPosition(position(52.53, 13.4));
    await mc.signal({ moment: "know" });
    const ids = signalCalls(fetch).map((c) => c.body.id);
    assert.equal(new Set(ids).size, 3);
    for (const id of ids) assert.match(id, SIGNAL_ID);
    // Without crypto.randomUUID (a page served without HTTPS) the ids still fit.
    const saved = globalThis.crypto;
    Object.defineProperty(globalThis, "crypto", { value: undefined, configurable: true });
    try {
      const fallback = new Set(Array.from({ length: 100 }, () => Momentcast.newSignalId()));
      assert.equal(fallback.size, 100);
      for (const id of fallback) assert.match(id, SIGNAL_ID);
    } finally {
      Object.defineProperty(globalThis, "crypto", { value: saved, configurable: true });
    }
  });

  it("retries a network error, 503 and 429 with the same ids, backing off with jitter",
    async () => {
      const draws = [0, 1, 0.5, 0.25];
      const { mc, fetch, errors, sleeps } = client({
        random: () => draws.shift(),
        fetchRoutes: signalAnswers(
          new TypeError("Failed to fetch"),
          [503, { error: { code: "unavailable", message: "retry later" } }],
          [429, { error: { code: "rate_limited", message: "slow down" } },
            { "Retry-After": "3" }],
          [202, { accepted: 0, duplicates: 1 }],
        ),
      });
      await mc.subscribe();
      assert.equal(await mc.sendPosition(position(52.52, 13.4)), true);
      const calls = signalCalls(fetch);
      assert.equal(calls.length, 4);
      // The very same signal every time: the server stores it once, whichever try it kept.
      for (const call of calls) assert.deepEqual(call.body, calls[0].body);
      assert.match(calls[0].body.id, SIGNAL_ID);
      // Between half and all of 1 s, then of 2 s (the draws 0 and 1); then the server's
      // Retry-After (3 s) plus up to 1 s of jitter (the draw 0.5).
      assert.deepEqual(sleeps, [500, 2000, 3500]);
      assert.equal(mc.queue.length, 0);
      assert.deepEqual(errors, [], "a retry that succeeded reports nothing");
    });

  it("does not retry what the server refused for good", async () => {
    for (const status of [400, 401, 403, 413, 422]) {
      const { mc, fetch, errors, sleeps } = client({
        fetchRoutes: signalAnswers([status, { error: { code: "x", message: "no" } }]),
      });
      await mc.subscribe();
      assert.equal(await mc.sendPosition(position(52.52, 13.4)), false);
      assert.equal(signalCalls(fetch).length, 1, `HTTP ${status} sent once`);
      assert.deepEqual(sleeps, []);
      assert.equal(errors.at(-1).status, status);
      assert.equal(mc.queue.length, 0, "dropped");
    }
  });

  it("gives up after `retries`, keeps the signal, and later sends it with the same id",
    async () => {
      let up = false;
      const { mc, fetch, errors, sleeps, clock } = client({
        random: () => 1,
        options: { retries: 6 },
        fetchRoutes: routes({
          "POST /v1/signals": () => (up ? [202, { accepted: 1, duplicates: 0 }]
            : [503, { error: { code: "unavailable", message: "retry later" } }]),
        }),
      });
      await mc.subscribe();
      assert.equal(await mc.sendPosition(position(52.52, 13.4)), false);
      assert.equal(signalCalls(fetch).length, 7);
      // Doubling from 1 s, never above retryMaxMs (30 s).
      assert.deepEqual(sleeps, [1000, 2000, 4000, 8000, 16000, 30000]);
      assert.equal(errors.length, 1);
      assert.equal(errors[0].status, 503);
      assert.equal(mc.queue.length, 1);
      up = true;
      clock.t += 60_000;
      assert.equal(await mc.sendPosition(position(52.53, 13.4)), true);
      const [first, ...rest] = signalCalls(fetch);
      const last = rest.at(-1);
      assert.equal(last.body.signals.length, 2);
      assert.equal(last.body.signals[0].id, first.body.id);
      assert.notEqual(last.body.signals[1].id, first.body.id);
    });

  it("waits a long Retry-After out between flushes instead of sleeping through it",
    async () => {
      const { mc, fetch, sleeps, clock } = client({
        fetchRoutes: signalAnswers(
          [429, { error: { code: "rate_limited", message: "slow down" } },
            { "Retry-After": "120" }],
          [202, { accepted: 1, duplicates: 0 }],
        ),
      });
      await mc.subscribe();
      assert.equal(await mc.signal({ moment: "know" }), false);
      assert.deepEqual(sleeps, []);
      clock.t += 60_000;
      assert.equal(await mc.flush(), false, "Retry-After has not passed");
      assert.equal(signalCalls(fetch).length, 1);
      clock.t += 61_000;
      assert.equal(await mc.flush(), true);
      assert.equal(signalCalls(fetch).length, 2);
    });

  it("sends a signal queued during a retry after it, once", async () => {
    let gate;
    const first = new Promise((resolve) => { gate = resolve; });
    let n = 0;
    const { mc, fetch } = client({
      fetchRoutes: routes({ "POST /v1/signals": async () => {
        n += 1;
        if (n === 1) { await first; return UNAVAILABLE; }
        return [202, { accepted: 1, duplicates: 0 }];
      } }),
    });
    await mc.subscribe();
    const one = mc.signal({ moment: "know" });
    const two = mc.signal({ moment: "buy" });
    gate();
    assert.deepEqual(await Promise.all([one, two]), [true, true]);
    const sent = signalCalls(fetch).map((c) => c.body);
    assert.equal(mc.queue.length, 0);
    assert.deepEqual(sent.map((b) => b.moment || b.signals.map((s) => s.moment)),
      ["know", "know", "buy"]);
  });
});

describe("profile and unsubscribe", () => {
  it("patches topics with the device token", async () => {
    const { mc, fetch } = client({ fetchRoutes: routes({
      "PATCH /v1/subscriptions/sub-1": [200, { id: "sub-1", topics: ["food", "travel"] }],
    }) });
    await mc.subscribe();
    const profile = await mc.setTopics(["food", "travel"]);
    assert.deepEqual(profile.topics, ["food", "travel"]);
    const patch = fetch.calls.find((c) => c.method === "PATCH");
    assert.deepEqual(patch.body, { topics: ["food", "travel"] });
    assert.equal(patch.headers.Authorization, "Bearer tok-1");
  });

  it("unsubscribes in the browser and erases on the server", async () => {
    const { mc, fetch, nav, storage, caches } = client({ fetchRoutes: routes({
      "DELETE /v1/subscriptions/sub-1": [204, null],
    }) });
    await mc.subscribe();
    await mc.unsubscribe();
    assert.equal(nav.state.subscription.unsubscribed, true);
    assert.ok(fetch.calls.some((c) => c.method === "DELETE"));
    assert.equal(storage.getItem(Momentcast.STORAGE_KEY), null);
    const cache = await caches.open(Momentcast.STATE_CACHE);
    assert.equal(await cache.match(Momentcast.REGISTRATION_URL), undefined);
    assert.equal(mc.subscribed, false);
  });

  it("reports a conversion for the last clicked push", async () => {
    const { mc, fetch, caches } = client({ fetchRoutes: routes({
      "POST /v1/events": [202, { recorded: true }],
    }) });
    assert.equal(await mc.converted(), false, "nothing clicked yet");
    const cache = await caches.open(Momentcast.STATE_CACHE);
    await cache.put(Momentcast.LAST_CLICK_URL, new Response(JSON.stringify({
      delivery_id: 42, event_token: "t42", events_url: `${SERVER}/v1/events` })));
    assert.equal(await mc.converted(), true);
    const event = fetch.calls.find((c) => c.path === "/v1/events");
    assert.deepEqual(event.body, { delivery_id: 42, token: "t42", type: "converted" });
    assert.equal(event.headers["Content-Type"], "text/plain");
    assert.equal(await mc.converted(), false, "reported once");
  });
});
