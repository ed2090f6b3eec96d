// Checks a filter's config against the JSON Schema its module carries, before the filter sees it.
// A subset of JSON Schema (draft 2020-12 keywords that config schemas use): type, enum, const,
// properties, required, additionalProperties, items, minItems, maxItems, minLength, maxLength,
// pattern, minimum, maximum, exclusiveMinimum, oneOf/anyOf (first match). Unknown keywords are ignored.

export type JsonSchema = {
  type?: string | string[];
  enum?: unknown[];
  const?: unknown;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  additionalProperties?: boolean | JsonSchema;
  items?: JsonSchema;
  minItems?: number;
  maxItems?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  description?: string;
};

function typeOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  return typeof v;
}

function typeMatches(want: string, got: string): boolean {
  return want === got || (want === "number" && got === "integer");
}

/** Errors as `<path>: <message>`, path starting at `path` (e.g. "routes[0].filters[1].config"). */
export function validateAgainstSchema(schema: JsonSchema, value: unknown, path: string): string[] {
  const errors: string[] = [];
  check(schema, value, path, errors);
  return errors;
}

function check(s: JsonSchema, v: unknown, path: string, errors: string[]): void {
  const alternatives = s.anyOf ?? s.oneOf;
  if (alternatives) {
    if (!alternatives.some((alt) => validateAgainstSchema(alt, v, path).length === 0)) {
      errors.push(`${path}: does not match any of the allowed shapes`);
    }
    return;
  }
  const got = typeOf(v);
  if (s.type !== undefined) {
    const types = Array.isArray(s.type) ? s.type : [s.type];
    if (!types.some((t) => typeMatches(t, got))) {
      errors.push(`${path}: expected ${types.join(" or ")}, got ${got}`);
      return;
    }
  }
  if (s.const !== undefined && JSON.stringify(s.const) !== JSON.stringify(v)) errors.push(`${path}: expected ${JSON.stringify(s.const)}`);
  if (s.enum && !s.enum.some((e) => JSON.stringify(e) === JSON.stringify(v))) {
    errors.push(`${path}: expected one of ${s.enum.map((e) => JSON.stringify(e)).join(", ")}`);
  }
  if (typeof v === "string") {
    if (s.minLength !== undefined && v.length < s.minLength) errors.push(`${path}: expected at least ${s.minLength} characters`);
    if (s.maxLength !== undefined && v.length > s.maxLength) errors.push(`${path}: expected at most ${s.maxLength} characters`);
    if (s.pattern !== undefined && !new RegExp(s.pattern, "u").test(v)) errors.push(`${path}: expected a string matching /${s.pattern}/`);
  }
  if (typeof v === "number") {
    if (s.minimum !== undefined && v < s.minimum) errors.push(`${path}: expected at least ${s.minimum}`);
    if (s.exclusiveMinimum !== undefined && v <= s.exclusiveMinimum) errors.push(`${path}: expected more than ${s.exclusiveMinimum}`);
    if (s.maximum !== undefined && v > s.maximum) errors.push(`${path}: expected at most ${s.maximum}`);
  }
  if (Array.isArray(v)) {
    if (s.minItems !== undefined && v.length < s.minItems) errors.push(`${path}: expected at least ${s.minItems} items`);
    if (s.maxItems !== undefined && v.length > s.maxItems) errors.push(`${path}: expected at most ${s.maxItems} items`);
    if (s.items) v.forEach((item, i) => check(s.items!, item, `${path}[${i}]`, errors));
  }
  if (got === "object") {
    const obj = v as Record<string, unknown>;
    for (const key of s.required ?? []) if (!(key in obj)) errors.push(`${path}.${key}: required`);
    for (const [key, val] of Object.entries(obj)) {
      const sub = s.properties?.[key];
      if (sub) check(sub, val, `${path}.${key}`, errors);
      else if (s.additionalProperties === false) errors.push(`${path}: unknown field "${key}"`);
      else if (typeof s.additionalProperties === "object") check(s.additionalProperties, val, `${path}.${key}`, errors);
    }
  }
}
