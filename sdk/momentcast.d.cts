// Types of the momentcast browser SDK (service/static/momentcast.js), written by hand. They
// describe `require("momentcast")` and the global `Momentcast` of the <script> served as
// /momentcast.js; momentcast.d.mts re-exports them for `import`. tests/web/test_npm_package.py
// checks them with tsc on a consumer, and that every export of the SDK is declared here.
/// <reference lib="dom" />

declare namespace Momentcast {
  /** The intent the page knows about, sent with each signal. */
  type Moment = "know" | "go" | "do" | "buy";

  /** Attribute and context values: flat, no objects, arrays or null. */
  type Scalar = string | number | boolean;

  /** Every `code` the SDK itself gives an error; HTTP errors carry the server's code
   * (`invalid`, `consent_required`, `rate_limited` ...) or `http-<status>`. */
  type ErrorCode =
    | "config"
    | "unsupported"
    | "permission-denied"
    | "subscribe-failed"
    | "not-subscribed"
    | "network"
    | "location-denied"
    | "location-unavailable"
    | "location-timeout"
    | "location-error";

  interface Options {
    /** The momentcast server, e.g. "https://push.example.com" (default: the page's origin). */
    server?: string;
    /** The service worker pushes go to: your own worker's script URL (which must
     * importScripts momentcast's sw.js) or its registration. Default: the worker already
     * registered for the page, else "/sw.js" is registered. */
    serviceWorker?: string | ServiceWorkerRegistration;
    minIntervalS?: number;
    minDistanceM?: number;
    maxIntervalS?: number;
    highAccuracy?: boolean;
    maxQueue?: number;
    retries?: number;
    retryBaseMs?: number;
    retryMaxMs?: number;
    /** Stand-ins for the browser's APIs (tests, other runtimes). */
    fetch?: (input: string, init?: RequestInit) => Promise<Response>;
    navigator?: Partial<Navigator>;
    storage?: Pick<Storage, "getItem" | "setItem" | "removeItem"> | null;
    caches?: Pick<CacheStorage, "open"> | null;
    Notification?: { requestPermission(): Promise<NotificationPermission> };
    now?: () => number;
    random?: () => number;
    sleep?: (ms: number) => Promise<void>;
  }

  /** What subscribe() registers; PATCH /v1/subscriptions/{id} takes the same and `paused`. */
  interface Profile {
    topics?: string[];
    attributes?: Record<string, Scalar>;
    /** IANA zone; default: the browser's. */
    timezone?: string | null;
    locale?: string | null;
    location_consent?: boolean;
  }

  interface ProfilePatch extends Profile {
    paused?: boolean;
  }

  /** GET/PATCH /v1/subscriptions/{id}: the profile as the server keeps it. */
  interface SubscriptionProfile {
    id: string;
    timezone: string | null;
    locale: string | null;
    topics: string[];
    attributes: Record<string, Scalar>;
    paused: boolean;
    status: string;
    [field: string]: unknown;
  }

  /** The device's registration, kept in localStorage (and the Cache API for sw.js). */
  interface Registration {
    server: string;
    id: string;
    token: string;
    applicationServerKey?: string;
    profile?: Profile;
    renewed_at?: number;
  }

  /** One signal of POST /v1/signals. */
  interface Signal {
    id?: string;
    at: string;
    lat?: number;
    lon?: number;
    accuracy_m?: number;
    speed_mps?: number;
    moment?: Moment;
    context?: Record<string, Scalar>;
  }

  /** A GeolocationPosition, or anything shaped like one. */
  interface PositionLike {
    coords: {
      latitude: number;
      longitude: number;
      accuracy?: number | null;
      speed?: number | null;
    };
    timestamp: number;
  }

  interface LatLon {
    lat: number;
    lon: number;
  }

  class MomentcastError extends Error {
    constructor(code: string, message: string, cause?: unknown);
    /** One of ErrorCode, or the server's error code for an HTTP error. */
    code: ErrorCode | (string & {});
    /** HTTP errors only. */
    status?: number;
    details?: Array<{ field?: string; message?: string; type?: string }>;
    retryAfterS?: number | null;
    cause?: unknown;
  }

  class Throttle {
    constructor(options: { minIntervalS: number; minDistanceM: number; maxIntervalS: number });
    accept(signal: LatLon, nowMs: number): boolean;
    sent(signal: LatLon, nowMs: number): void;
    reset(): void;
  }

  class Client {
    constructor(options?: Options);
    readonly server: string;
    /** The device's registration; null before subscribe() (or after unsubscribe()). */
    registration: Registration | null;
    readonly subscribed: boolean;
    /** Signals not sent yet (offline, rate-limited). */
    queue: Signal[];
    moment: Moment | null;
    /** Sent with every signal (a flat map, as `context` of POST /v1/signals). */
    context: Record<string, Scalar>;

    on(event: "error", fn: (error: MomentcastError) => void): this;
    on(event: "status", fn: (status: string) => void): this;
    on(event: "registration", fn: (registration: Registration | null) => void): this;

    /** Permission, service worker, push subscription, POST /v1/subscriptions. */
    subscribe(profile?: Profile): Promise<{ id: string }>;
    updateProfile(patch: ProfilePatch): Promise<SubscriptionProfile>;
    setTopics(topics: string[]): Promise<SubscriptionProfile>;
    setMoment(moment: Moment | null): void;
    sendPosition(position: PositionLike, options?: { force?: boolean }): Promise<boolean>;
    signal(options?: { moment?: Moment | null; context?: Record<string, Scalar> }): Promise<boolean>;
    flush(): Promise<boolean>;
    /** navigator.geolocation.watchPosition; answers the watch id. */
    startTracking(options?: { moment?: Moment | null }): number;
    stopTracking(): void;
    unsubscribe(): Promise<void>;
    converted(): Promise<boolean>;
  }

  function create(options?: Options): Client;
  function base64UrlToBytes(value: string): Uint8Array;
  function distanceM(a: LatLon, b: LatLon): number;
  function signalFromPosition(
    position: PositionLike,
    moment?: Moment | null,
    context?: Record<string, Scalar>,
  ): Signal;
  function geolocationError(error: { code?: number; message?: string } | null): MomentcastError;
  function profileBody(profile: Profile): Profile;
  function newSignalId(): string;
  function retryable(error: unknown): boolean;
  function retryDelayMs(
    attempt: number,
    error: { retryAfterS?: number | null } | null | undefined,
    options: { retryBaseMs: number; retryMaxMs: number },
    random: () => number,
  ): number;

  const RETRY_STATUSES: readonly number[];
  const DEFAULT_WORKER: string;
  const STORAGE_KEY: string;
  const STATE_CACHE: string;
  const REGISTRATION_URL: string;
  const LAST_CLICK_URL: string;
}

export = Momentcast;
export as namespace Momentcast;
