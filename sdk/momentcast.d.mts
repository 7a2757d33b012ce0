// Types of `import ... from "momentcast"` (dist/momentcast.mjs): the declarations of
// momentcast.d.cts, as a default export and named exports.
import Momentcast from "./momentcast.cjs";

export default Momentcast;

export type {
  ErrorCode,
  LatLon,
  Moment,
  Options,
  PositionLike,
  Profile,
  ProfilePatch,
  Registration,
  Scalar,
  Signal,
  SubscriptionProfile,
} from "./momentcast.cjs";

export declare const Client: typeof Momentcast.Client;
export type Client = Momentcast.Client;
export declare const MomentcastError: typeof Momentcast.MomentcastError;
export type MomentcastError = Momentcast.MomentcastError;
export declare const Throttle: typeof Momentcast.Throttle;
export type Throttle = Momentcast.Throttle;

export declare const create: typeof Momentcast.create;
export declare const base64UrlToBytes: typeof Momentcast.base64UrlToBytes;
export declare const distanceM: typeof Momentcast.distanceM;
export declare const signalFromPosition: typeof Momentcast.signalFromPosition;
export declare const geolocationError: typeof Momentcast.geolocationError;
export declare const profileBody: typeof Momentcast.profileBody;
export declare const newSignalId: typeof Momentcast.newSignalId;
export declare const retryable: typeof Momentcast.retryable;
export declare const retryDelayMs: typeof Momentcast.retryDelayMs;
export declare const RETRY_STATUSES: typeof Momentcast.RETRY_STATUSES;
export declare const DEFAULT_WORKER: typeof Momentcast.DEFAULT_WORKER;
export declare const STORAGE_KEY: typeof Momentcast.STORAGE_KEY;
export declare const STATE_CACHE: typeof Momentcast.STATE_CACHE;
export declare const REGISTRATION_URL: typeof Momentcast.REGISTRATION_URL;
export declare const LAST_CLICK_URL: typeof Momentcast.LAST_CLICK_URL;
