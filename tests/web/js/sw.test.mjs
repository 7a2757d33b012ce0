// Unit tests of service/static/sw.js: events are dispatched to a fake worker scope.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { describe, it } from "node:test";
import vm from "node:vm";

import { FakeCaches, fakeFetch, fakePushSubscription } from "./fakes.mjs";

const require = createRequire(import.meta.url);
const SW_PATH = "../../../service/static/sw.js";
const sw = require(SW_PATH);

const EVENTS = "https://push.example.com/v1/events";
const CLICK = "https://push.example.com/c/7";
// A push as the sender renders it: a Declarative Web Push message (docs/push.md).
const PAYLOAD = {
  web_push: 8030,
  notification: {
    title: "Lunch at Pho Mitte?", body: "Pho Mitte is 80 m away", lang: "de",
    navigate: `${CLICK}/open?t=tok7`,
    icon: "https://example.com/i.png", image: "https://example.com/big.jpg", tag: "lunch",
    actions: [{ action: "menu", title: "Menu", navigate: `${CLICK}/menu?t=tok7` },
      { action: "later", title: "Later", navigate: `${CLICK}/later?t=tok7` }],
    data: { delivery_id: 7, rule: "lunch-nearby", variant: "b", url: "https://example.com/o/3",
      events_url: EVENTS, event_token: "tok7" },
  },
  mutable: true,
};
// The payload of earlier versions: the message at the top level, urls of its own.
const LEGACY = {
  title: "Lunch at Pho Mitte?", body: "Pho Mitte is 80 m away", url: "https://example.com/o/3",
  icon: "https://example.com/i.png", image: "https://example.com/big.jpg", tag: "lunch",
  actions: [{ action: "menu", title: "Menu", url: "https://example.com/menu" },
    { action: "later", title: "Later" }],
  data: { delivery_id: 7, rule: "lunch-nearby", variant: "b", events_url: EVENTS,
    event_token: "tok7" },
};

function scope({ fetchRoutes = { "POST /v1/events": [202, { recorded: true }] },
  windows = [] } = {}) {
  const listeners = {};
  const s = {
    shown: [], opened: [], focused: [], messages: [], waited: 0,
    fetch: fakeFetch(fetchRoutes),
    caches: new FakeCaches(),
    Response,
    addEventListener(type, fn) { listeners[type] = fn; },
    registration: {
      async showNotification(title, options) { s.shown.push({ title, options }); },
      pushManager: { async subscribe(options) {
        s.subscribeOptions = options; return fakePushSubscription("https://push.example.net/new");
      } },
    },
    clients: {
      async matchAll() { return windows; },
      async openWindow(url) { s.opened.push(url); return { url }; },
      async claim() {},
    },
    async dispatch(type, event) {
      const pending = [];
      listeners[type]({ ...event, waitUntil: (p) => { s.waited += 1; pending.push(p); } });
      await Promise.all(pending);
    },
  };
  sw.install(s);
  return s;
}

const pushEvent = (payload) => ({ data: { json: () => payload } });
const notification = (data) => ({ data, closed: false, close() { this.closed = true; } });

describe("notifications", () => {
  it("shows the declarative message: every field, the action titles, the data", () => {
    const [title, options] = sw.notificationFromPayload(PAYLOAD);
    const n = PAYLOAD.notification;
    assert.equal(title, "Lunch at Pho Mitte?");
    assert.equal(options.body, n.body);
    assert.equal(options.icon, n.icon);
    assert.equal(options.image, n.image);
    assert.equal(options.tag, "lunch");
    assert.equal(options.lang, "de");
    assert.equal(options.renotify, true);
    assert.deepEqual(options.actions, [{ action: "menu", title: "Menu" },
      { action: "later", title: "Later" }]);
    assert.deepEqual(options.data, { ...n.data, action_urls: {
      menu: `${CLICK}/menu?t=tok7`, later: `${CLICK}/later?t=tok7` } });
    // The navigate links are the worker's to follow: the browser must fire notificationclick.
    assert.equal(options.navigate, undefined);
    assert.throws(() => sw.notificationFromPayload({ body: "no title" }), /no title/);
    assert.throws(() => sw.notificationFromPayload({ web_push: 8030, notification: {} }),
      /no title/);
  });

  it("leaves an unknown language to the browser", () => {
    const [, options] = sw.notificationFromPayload(
      { ...PAYLOAD, notification: { ...PAYLOAD.notification, lang: "", tag: undefined } });
    assert.equal("lang" in options, false);
    assert.equal("renotify" in options, false);
  });

  it("still shows an old-format payload", () => {
    const [title, options] = sw.notificationFromPayload(LEGACY);
    assert.equal(title, LEGACY.title);
    assert.equal(options.body, LEGACY.body);
    assert.equal(options.tag, "lunch");
    assert.deepEqual(options.actions, [{ action: "menu", title: "Menu" },
      { action: "later", title: "Later" }]);
    assert.equal(options.data.url, LEGACY.url);
    assert.equal(options.data.event_token, "tok7");
    assert.deepEqual(options.data.action_urls, { menu: "https://example.com/menu" });
  });

  it("shows a push and reports shown with the delivery's token", async () => {
    const s = scope();
    await s.dispatch("push", pushEvent(PAYLOAD));
    assert.equal(s.shown.length, 1);
    assert.equal(s.shown[0].title, PAYLOAD.notification.title);
    assert.deepEqual(s.shown[0].options.actions.map((a) => a.title), ["Menu", "Later"]);
    assert.equal(s.fetch.calls.length, 1);
    const call = s.fetch.calls[0];
    assert.equal(call.url, EVENTS);
    assert.deepEqual(call.body, { delivery_id: 7, token: "tok7", type: "shown" });
    assert.equal(call.headers["Content-Type"], "text/plain");
  });

  it("still shows something for its own push without a title (userVisibleOnly)", async () => {
    for (const payload of [
      { web_push: 8030, notification: { data: { delivery_id: 7 } } },
      { body: "no title", data: { delivery_id: 7 } },
    ]) {
      const s = scope();
      await s.dispatch("push", pushEvent(payload));
      assert.equal(s.shown.length, 1);
      assert.equal(s.shown[0].title, "New notification");
      assert.equal(s.fetch.calls.length, 0);
    }
  });

  it("leaves a push without momentcast's delivery_id to the site's own handlers", async () => {
    // A site importing sw.js into its worker keeps its own push handler: a push of its own
    // (title and all, but no data.delivery_id) must not show twice, nor be waited on here.
    for (const data of [
      { json: () => ({ title: "Site news", body: "from the site's own server" }) },
      { json: () => ({ web_push: 8030, notification: { title: "Declarative, not ours" } }) },
      { json: () => ({ title: "Sale", data: { id: 3 } }) },
      { json: () => { throw new SyntaxError("not JSON"); } },
      { json: () => "a string" },
      null,
    ]) {
      const s = scope();
      await s.dispatch("push", { data });
      assert.deepEqual(s.shown, []);
      assert.equal(s.waited, 0, "no waitUntil for a push that is not ours");
      assert.equal(s.fetch.calls.length, 0);
    }
    assert.equal(sw.isOurs(PAYLOAD), true);
    assert.equal(sw.isOurs(LEGACY), true);
    assert.equal(sw.isOurs({ title: "Site news" }), false);
  });

  it("retries a failed report once, but not a refused one", async () => {
    let answers = [new TypeError("offline"), [202, {}]];
    let s = scope({ fetchRoutes: { "POST /v1/events": () => answers.shift() } });
    await s.dispatch("push", pushEvent(PAYLOAD));
    assert.equal(s.fetch.calls.length, 2);
    answers = [[403, { error: {} }], [202, {}]];
    s = scope({ fetchRoutes: { "POST /v1/events": () => answers.shift() } });
    await s.dispatch("push", pushEvent(PAYLOAD));
    assert.equal(s.fetch.calls.length, 1);
  });
});

describe("clicks", () => {
  const shownData = (payload = PAYLOAD) => sw.notificationFromPayload(payload)[1].data;

  it("reports clicked, remembers it for converted and opens the url", async () => {
    const s = scope();
    const n = notification(shownData());
    await s.dispatch("notificationclick", { notification: n, action: "" });
    assert.equal(n.closed, true);
    assert.deepEqual(s.fetch.calls[0].body, { delivery_id: 7, token: "tok7", type: "clicked" });
    // The notification's own url, directly: the click is reported already.
    assert.deepEqual(s.opened, ["https://example.com/o/3"]);
    const cache = await s.caches.open(sw.MC_STATE_CACHE);
    const click = await (await cache.match(sw.MC_LAST_CLICK)).json();
    assert.equal(click.delivery_id, 7);
    assert.equal(click.event_token, "tok7");
  });

  it("reports a click on an action with the action and opens its navigate link", async () => {
    const s = scope();
    await s.dispatch("notificationclick", { notification: notification(shownData()),
      action: "menu" });
    assert.equal(s.fetch.calls.length, 1);
    assert.deepEqual(s.fetch.calls[0].body,
      { delivery_id: 7, token: "tok7", type: "clicked", action: "menu" });
    // GET /c/7/menu redirects to the action's url; the server counts the click once.
    assert.deepEqual(s.opened, [`${CLICK}/menu?t=tok7`]);
  });

  it("opens an old payload's action url and focuses an open window instead of a new one",
    async () => {
      const focused = [];
      const win = { url: "https://example.com/menu", focus() { focused.push(this.url); } };
      const s = scope({ windows: [win] });
      const n = notification(shownData(LEGACY));
      await s.dispatch("notificationclick", { notification: n, action: "menu" });
      assert.deepEqual(focused, ["https://example.com/menu"]);
      assert.deepEqual(s.opened, []);
    });

  it("opens nothing for a message without a url, and still reports the click", async () => {
    const s = scope();
    const data = { ...shownData(), url: null };
    await s.dispatch("notificationclick", { notification: notification(data), action: "" });
    assert.equal(s.fetch.calls[0].body.type, "clicked");
    assert.deepEqual(s.opened, []);
  });

  it("reports dismissed when closed without a click", async () => {
    const s = scope();
    await s.dispatch("notificationclose", { notification: notification(shownData()) });
    assert.deepEqual(s.fetch.calls[0].body, { delivery_id: 7, token: "tok7", type: "dismissed" });
  });

  it("leaves a click on the site's own notification to the site", async () => {
    // The site's notification, shown by its own handler: no delivery_id in its data.
    for (const type of ["notificationclick", "notificationclose"]) {
      const s = scope();
      const n = notification({ url: "https://shop.example/sale" });
      await s.dispatch(type, { notification: n, action: "" });
      assert.equal(n.closed, false, type);
      assert.deepEqual(s.opened, [], type);
      assert.equal(s.waited, 0, type);
      assert.equal(s.fetch.calls.length, 0, type);
      const cache = await s.caches.open(sw.MC_STATE_CACHE);
      assert.equal(await cache.match(sw.MC_LAST_CLICK), undefined, type);
    }
  });

  it("sends nothing for a notification without event data", async () => {
    const s = scope();
    await s.dispatch("notificationclick", { notification: notification({ url: null }) });
    assert.equal(s.fetch.calls.length, 0);
    assert.equal(sw.eventBody({ delivery_id: 1 }, "shown"), null);
  });
});

describe("pushsubscriptionchange", () => {
  it("subscribes again with the old key and registers the new endpoint", async () => {
    const windows = [{ url: "https://shop.example/", postMessage(m) { s.messages.push(m); } }];
    const s = scope({ windows, fetchRoutes: {
      "POST /v1/subscriptions": [201, { id: "sub-9", token: "tok-9" }] } });
    const cache = await s.caches.open(sw.MC_STATE_CACHE);
    await cache.put(sw.MC_REGISTRATION, new Response(JSON.stringify({
      server: "https://push.example.com", id: "sub-1", token: "tok-1",
      applicationServerKey: "KEY", profile: { topics: ["food"] } })));
    const oldKey = new Uint8Array([4, 1, 2]).buffer;
    await s.dispatch("pushsubscriptionchange",
      { oldSubscription: { options: { applicationServerKey: oldKey } } });
    assert.equal(s.subscribeOptions.userVisibleOnly, true);
    assert.equal(s.subscribeOptions.applicationServerKey, oldKey);
    const post = s.fetch.calls[0];
    assert.equal(post.url, "https://push.example.com/v1/subscriptions");
    assert.equal(post.body.subscription.endpoint, "https://push.example.net/new");
    // The old token: proof of ownership if the endpoint stayed the same with new keys.
    assert.equal(post.headers.Authorization, "Bearer tok-1");
    assert.deepEqual(post.body.topics, ["food"]);
    const stored = await (await cache.match(sw.MC_REGISTRATION)).json();
    assert.equal(stored.token, "tok-9");
    assert.equal(s.messages[0].type, "momentcast:registration");
    assert.equal(s.messages[0].id, "sub-9");
  });

  it("does nothing when the page never registered", async () => {
    const s = scope();
    await s.dispatch("pushsubscriptionchange", { oldSubscription: null });
    assert.equal(s.fetch.calls.length, 0);
  });
});

// sw.js as a browser loads it: evaluated as a classic script in a worker scope, either as the
// registered script itself or through importScripts() from the site's own worker. The script's
// file name is its URL, as in a browser's stack traces, which is what sw.js looks at.
function loadWorker({ scriptURL, sourceURL = "https://push.example.com/sw.js" }) {
  const calls = [];
  const listeners = {};
  class ServiceWorkerGlobalScope {}
  const self = Object.assign(new ServiceWorkerGlobalScope(), {
    location: new URL(scriptURL),
    addEventListener(type, fn) { (listeners[type] ||= []).push(fn); },
    skipWaiting() { calls.push("skipWaiting"); return Promise.resolve(); },
    clients: { claim() { calls.push("claim"); return Promise.resolve(); } },
    registration: { async showNotification(title) { calls.push(`show ${title}`); } },
    fetch: async () => new Response("{}", { status: 202 }),
  });
  const context = vm.createContext({ self, ServiceWorkerGlobalScope, Response, URL });
  const source = readFileSync(new URL(SW_PATH, import.meta.url), "utf8");
  new vm.Script(source, { filename: sourceURL }).runInContext(context);
  const typeOf = (name) => vm.runInContext(`typeof ${name}`, context);
  const dispatch = async (type, event = {}) => {
    const pending = [];
    for (const fn of listeners[type] || []) {
      fn({ ...event, waitUntil: (p) => { calls.push(`waitUntil ${type}`); pending.push(p); } });
    }
    await Promise.all(pending);
  };
  return { calls, dispatch, self, typeOf };
}

describe("installed into a worker", () => {
  it("takes over at once as the registered script itself", async () => {
    const w = loadWorker({ scriptURL: "https://push.example.com/sw.js" });
    await w.dispatch("install");
    await w.dispatch("activate");
    assert.deepEqual(w.calls, ["skipWaiting", "claim", "waitUntil activate"]);
  });

  it("imported into the site's own worker, never calls skipWaiting() or clients.claim()",
    async () => {
      for (const scriptURL of ["https://shop.example/app-sw.js", "https://shop.example/sw.js",
        "https://push.example.com/app/sw.js"]) {
        const w = loadWorker({ scriptURL });
        await w.dispatch("install");
        await w.dispatch("activate");
        assert.deepEqual(w.calls, [], scriptURL);
        // Its own pushes it still shows; the site's it leaves alone.
        await w.dispatch("push", pushEvent(PAYLOAD));
        await w.dispatch("push", pushEvent({ title: "Site news" }));
        assert.deepEqual(w.calls, [`show ${PAYLOAD.notification.title}`, "waitUntil push"]);
      }
    });

  it("replaces none of the site's names: one global, momentcast", () => {
    const w = loadWorker({ scriptURL: "https://shop.example/app-sw.js" });
    // A site's worker with its own install() or onPush() keeps them.
    for (const name of ["install", "onPush", "onClick", "reportEvent", "isOurs",
      "MC_STATE_CACHE", "MC_SCRIPT_URL"]) {
      assert.equal(w.typeOf(name), "undefined", name);
    }
    assert.equal(w.self.momentcast.standalone, false);
    assert.equal(w.self.momentcast.scriptUrl, "https://push.example.com/sw.js");
    assert.equal(w.self.momentcast.isOurPush(pushEvent(PAYLOAD)), true);
    assert.equal(w.self.momentcast.isOurPush(pushEvent({ title: "Site news" })), false);
    assert.equal(w.self.momentcast.isOurPush({ data: null }), false);
  });
});
