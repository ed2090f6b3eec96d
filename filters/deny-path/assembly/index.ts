// deny-path: answers 403 (or a configured status) for requests whose path starts with a denied prefix.
import { Config, Counter, Header, Outcome, Request, log, onConfigure, onRequest } from "@meshwasm/sdk";
export * from "@meshwasm/sdk/exports";

let prefixes: string[] = [];
let exceptMethods: string[] = [];
let status: i32 = 403;
let body = "forbidden";

const denied = new Counter("denied_total", "Requests deny-path answered itself");

onConfigure((config: Config): string | null => {
  const list = config.get("prefixes");
  if (list === null || !list.isArray()) return "prefixes: expected an array of path prefixes";
  const next = new Array<string>();
  for (let i = 0; i < list.items.length; i++) {
    const p = list.items[i];
    if (!p.isString() || !p.str.startsWith("/")) return "prefixes[" + i.toString() + ']: expected a string starting with "/"';
    next.push(p.str);
  }
  const s = config.getInt("status", 403);
  if (s < 200 || s > 599) return "status: expected 200..599";
  prefixes = next;
  exceptMethods = config.getStrings("exceptMethods");
  status = <i32>s;
  body = config.getString("body", "forbidden");
  log.info("deny-path denies " + prefixes.length.toString() + " prefixes");
  return null;
});

onRequest((req: Request): Outcome => {
  const path = req.path;
  for (let i = 0; i < prefixes.length; i++) {
    if (!path.startsWith(prefixes[i])) continue;
    if (exceptMethods.length > 0 && exceptMethods.includes(req.method)) return Outcome.continue();
    denied.inc();
    return Outcome.respond(status, body, [new Header("content-type", "text/plain; charset=utf-8")]);
  }
  return Outcome.continue();
});
