// Registration of a filter's handlers, and the dispatch the host's calls go through.
import { ACTION_CONTINUE, FIELD_FILTER_NAME, PHASE_REQUEST, PHASE_RESPONSE, mesh_set_error } from "./abi";
import { Request, Response } from "./http";
import { JsonValue, jsonError, parseJson } from "./json";
import { Outcome } from "./outcome";
import { getField, reserve } from "./scratch";

/** A filter's config: the `config:` value of its entry in the proxy config. */
export type Config = JsonValue;

/** Returns null to accept the config, or a message saying what is wrong with it. */
export type ConfigureHandler = (config: Config) => string | null;
export type RequestHandler = (req: Request) => Outcome;
export type ResponseHandler = (res: Response) => Outcome;

let configureHandler: ConfigureHandler | null = null;
let requestHandler: RequestHandler | null = null;
let responseHandler: ResponseHandler | null = null;
let bodyLimit: i32 = 0;

const request = new Request();
const response = new Response(request);

/**
 * Runs when the filter starts and whenever its config changes (a proxy reload). Validate first,
 * then assign: a rejected config must leave the filter as it was, because the proxy keeps the old
 * config running. Without a handler any config is accepted.
 */
export function onConfigure(handler: ConfigureHandler): void {
  configureHandler = handler;
}

/**
 * Runs once per request, after routing and before the upstream is picked. Pass null to unregister
 * (also allowed in onConfigure): a phase without a handler is never called and costs nothing.
 */
export function onRequest(handler: RequestHandler | null): void {
  requestHandler = handler;
}

/** Runs once per response, when its head arrives from the upstream, in reverse chain order. Null unregisters. */
export function onResponse(handler: ResponseHandler | null): void {
  responseHandler = handler;
}

/**
 * Ask the proxy to buffer up to `maxBytes` of the request body before onRequest, so req.body()
 * returns it. The route's maxBodyBytes caps it. Call at top level or in onConfigure.
 */
export function wantBody(maxBytes: i32): void {
  bodyLimit = maxBytes < 0 ? 0 : maxBytes;
}

/** This filter's name in the route (`name:` in the proxy config); one module can run under several. */
export function filterName(): string {
  return getField(FIELD_FILTER_NAME)!;
}

// ---- dispatch, called by the exports in exports.ts ----

function reject(message: string): i32 {
  mesh_set_error(changetype<usize>(message), message.length);
  return 1;
}

export function dispatchConfigure(ptr: usize, len: i32): i32 {
  const text = String.UTF8.decodeUnsafe(ptr, <usize>len);
  const config = parseJson(text);
  if (config === null) return reject("config is not valid JSON: " + jsonError());
  const handler = configureHandler;
  if (handler === null) return 0;
  const err = handler(config);
  if (err !== null) return reject(err);
  return 0;
}

export function dispatchRequest(): i32 {
  const handler = requestHandler;
  if (handler === null) return ACTION_CONTINUE;
  return handler(request).encode();
}

export function dispatchResponse(status: i32): i32 {
  const handler = responseHandler;
  if (handler === null) return ACTION_CONTINUE;
  response.status = status;
  return handler(response).encode();
}

export function phases(): i32 {
  return (requestHandler !== null ? PHASE_REQUEST : 0) | (responseHandler !== null ? PHASE_RESPONSE : 0);
}

export function wantedBody(): i32 {
  return bodyLimit;
}

export function buffer(size: i32): usize {
  return reserve(size);
}
