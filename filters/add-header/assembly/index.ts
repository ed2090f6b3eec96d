// add-header: sets request headers (and optionally response headers) from its config.
import { Config, Header, Outcome, Request, Response, onConfigure, onRequest, onResponse } from "@meshwasm/sdk";
export * from "@meshwasm/sdk/exports";

let requestHeaders: Header[] = [];
let responseHeaders: Header[] = [];

function readHeaders(config: Config, key: string): Header[] | null {
  const obj = config.get(key);
  const out = new Array<Header>();
  if (obj === null) return out;
  if (!obj.isObject()) return null;
  for (let i = 0; i < obj.keys.length; i++) {
    if (!obj.items[i].isString()) return null;
    out.push(new Header(obj.keys[i], obj.items[i].str));
  }
  return out;
}

onConfigure((config: Config): string | null => {
  const req = readHeaders(config, "request");
  if (req === null) return "request: expected an object of header name to string value";
  const res = readHeaders(config, "response");
  if (res === null) return "response: expected an object of header name to string value";
  // Validated both: now assign.
  requestHeaders = req;
  responseHeaders = res;
  // Register the response phase only when there is something to do: a phase a filter does not
  // register is never called.
  onResponse(res.length > 0 ? setResponseHeaders : null);
  return null;
});

onRequest((req: Request): Outcome => {
  for (let i = 0; i < requestHeaders.length; i++) {
    req.headers.set(requestHeaders[i].name, requestHeaders[i].value);
  }
  return Outcome.continue();
});

function setResponseHeaders(res: Response): Outcome {
  for (let i = 0; i < responseHeaders.length; i++) {
    res.headers.set(responseHeaders[i].name, responseHeaders[i].value);
  }
  return Outcome.continue();
}
