// Turns YAML text into a validated, frozen Config, or a list of errors that each name the field's path.
import * as v from "valibot";
import { parseDocument } from "yaml";
import { ConfigSchema, type Config } from "./schema.ts";

export type LoadResult = { ok: true; config: Config } | { ok: false; errors: string[] };

export class ConfigError extends Error {
  readonly errors: string[];
  constructor(source: string, errors: string[]) {
    super(`invalid config ${source}:\n  ${errors.join("\n  ")}`);
    this.name = "ConfigError";
    this.errors = errors;
  }
}

/** "routes[2].match.path" from a valibot issue path. */
function formatPath(path: v.BaseIssue<unknown>["path"]): string {
  if (!path || path.length === 0) return "(root)";
  let out = "";
  for (const item of path) {
    const key = (item as { key: unknown }).key;
    if (typeof key === "number") out += `[${key}]`;
    else out += out === "" ? String(key) : `.${String(key)}`;
  }
  return out;
}

function formatIssue(issue: v.BaseIssue<unknown>): string[] {
  // A union's own message is the useful one; its sub-issues explain each branch's failure, which for
  // "one of these shapes" is noise. Keep the union message alone.
  if (issue.expected === "never" && issue.path?.length) {
    const last = issue.path[issue.path.length - 1] as { key: unknown };
    return [`${formatPath(issue.path)}: unknown field "${String(last.key)}"`];
  }
  return [`${formatPath(issue.path)}: ${issue.message}`];
}

/** Checks that need the whole config: unique names and references between routes and clusters. */
function crossCheck(config: Config): string[] {
  const errors: string[] = [];
  const clusters = new Map<string, number>();
  config.clusters.forEach((c, i) => {
    if (clusters.has(c.name)) errors.push(`clusters[${i}].name: duplicate cluster name "${c.name}" (also clusters[${clusters.get(c.name)}])`);
    else clusters.set(c.name, i);
  });
  const routes = new Map<string, number>();
  config.routes.forEach((r, i) => {
    if (routes.has(r.name)) errors.push(`routes[${i}].name: duplicate route name "${r.name}" (also routes[${routes.get(r.name)}])`);
    else routes.set(r.name, i);
    if (r.cluster === undefined && r.backends === undefined) errors.push(`routes[${i}]: expected "cluster" or "backends"`);
    if (r.cluster !== undefined && r.backends !== undefined) errors.push(`routes[${i}]: expected only one of "cluster" and "backends"`);
    if (r.cluster !== undefined && !clusters.has(r.cluster)) errors.push(`routes[${i}].cluster: unknown cluster "${r.cluster}"`);
    r.backends?.forEach((b, j) => {
      if (!clusters.has(b.cluster)) errors.push(`routes[${i}].backends[${j}].cluster: unknown cluster "${b.cluster}"`);
    });
    if (r.backends && r.backends.every((b) => b.weight === 0)) errors.push(`routes[${i}].backends: at least one weight must be above 0`);
    if (r.rewrite && !("prefix" in r.match.path)) errors.push(`routes[${i}].rewrite.prefix: a prefix rewrite needs a prefix path match`);
  });
  const listeners = new Set<string>();
  config.listeners.forEach((l, i) => {
    const key = `${l.address}:${l.port}`;
    if (l.port !== 0 && listeners.has(key)) errors.push(`listeners[${i}]: duplicate address ${key}`);
    listeners.add(key);
  });
  return errors;
}

/** Validate an already-parsed value (JSON or YAML) against the schema and the cross-checks. */
export function validateConfig(raw: unknown): LoadResult {
  const parsed = v.safeParse(ConfigSchema, raw, { abortEarly: false });
  if (!parsed.success) return { ok: false, errors: parsed.issues.flatMap(formatIssue) };
  const errors = crossCheck(parsed.output);
  if (errors.length > 0) return { ok: false, errors };
  return { ok: true, config: deepFreeze(parsed.output) };
}

/** Parse YAML (JSON is YAML too) and validate it. Syntax errors carry line and column. */
export function parseConfig(text: string): LoadResult {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    return { ok: false, errors: doc.errors.map((e) => `yaml: ${e.message.split("\n")[0]}`) };
  }
  const raw = doc.toJS({ maxAliasCount: 100 });
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    return { ok: false, errors: ["(root): expected a mapping with routes and clusters"] };
  }
  return validateConfig(raw);
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const key of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[key]);
  }
  return value;
}
