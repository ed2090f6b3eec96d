// @meshwasm/sdk: everything a filter imports. See sdk/README.md for the guide.
export { onConfigure, onRequest, onResponse, wantBody, filterName } from "./filter";
export { Config, ConfigureHandler, RequestHandler, ResponseHandler } from "./filter";
export { Request, Response, Headers, Header } from "./http";
export { Outcome } from "./outcome";
export { JsonValue, JsonKind, parseJson, jsonError, quote } from "./json";
export { log } from "./log";
export { Counter, Gauge, Histogram } from "./metrics";
export { nowMs, monotonicMs, random, randomBytes } from "./time";
export { crypto, base64url, PublicKey, KeyFormat, SigAlg, utf8, fromUtf8 } from "./crypto";
export { RemoteJwks } from "./jwks";
