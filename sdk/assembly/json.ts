// A small JSON reader for filter configs: parse once at configure time, read with typed getters.

export enum JsonKind {
  Null = 0,
  Bool = 1,
  Number = 2,
  String = 3,
  Array = 4,
  Object = 5,
}

/** One JSON value. Getters with a default make reading an optional config field one line. */
export class JsonValue {
  kind: JsonKind = JsonKind.Null;
  bool: bool = false;
  num: f64 = 0;
  str: string = "";
  items: JsonValue[] = [];
  keys: string[] = [];

  static null(): JsonValue {
    return new JsonValue();
  }

  isNull(): bool {
    return this.kind == JsonKind.Null;
  }
  isBool(): bool {
    return this.kind == JsonKind.Bool;
  }
  isNumber(): bool {
    return this.kind == JsonKind.Number;
  }
  isString(): bool {
    return this.kind == JsonKind.String;
  }
  isArray(): bool {
    return this.kind == JsonKind.Array;
  }
  isObject(): bool {
    return this.kind == JsonKind.Object;
  }

  /** The member `key` of an object, or null (also when this is not an object). */
  get(key: string): JsonValue | null {
    if (this.kind != JsonKind.Object) return null;
    // Last duplicate wins, as in JavaScript.
    for (let i = this.keys.length - 1; i >= 0; i--) {
      if (this.keys[i] == key) return this.items[i];
    }
    return null;
  }

  has(key: string): bool {
    return this.get(key) !== null;
  }

  /** A string member, or `fallback` when missing or not a string. */
  getString(key: string, fallback: string = ""): string {
    const v = this.get(key);
    return v !== null && v.kind == JsonKind.String ? v.str : fallback;
  }

  getNumber(key: string, fallback: f64 = 0): f64 {
    const v = this.get(key);
    return v !== null && v.kind == JsonKind.Number ? v.num : fallback;
  }

  getInt(key: string, fallback: i64 = 0): i64 {
    const v = this.get(key);
    return v !== null && v.kind == JsonKind.Number ? <i64>v.num : fallback;
  }

  getBool(key: string, fallback: bool = false): bool {
    const v = this.get(key);
    return v !== null && v.kind == JsonKind.Bool ? v.bool : fallback;
  }

  /** An array member's items; empty when missing or not an array. */
  getArray(key: string): JsonValue[] {
    const v = this.get(key);
    return v !== null && v.kind == JsonKind.Array ? v.items : [];
  }

  /** Strings of an array member, skipping non-strings. */
  getStrings(key: string): string[] {
    const items = this.getArray(key);
    const out = new Array<string>();
    for (let i = 0; i < items.length; i++) {
      if (items[i].kind == JsonKind.String) out.push(items[i].str);
    }
    return out;
  }

  /**
   * Whether `other` is the same JSON value: objects member by member whatever their order (with a
   * duplicate key, the last one counts, as get() reads it), arrays item by item, numbers by value.
   */
  equals(other: JsonValue): bool {
    if (this.kind != other.kind) return false;
    switch (this.kind) {
      case JsonKind.Null:
        return true;
      case JsonKind.Bool:
        return this.bool == other.bool;
      case JsonKind.Number:
        return this.num == other.num;
      case JsonKind.String:
        return this.str == other.str;
      case JsonKind.Array: {
        if (this.items.length != other.items.length) return false;
        for (let i = 0; i < this.items.length; i++) {
          if (!this.items[i].equals(other.items[i])) return false;
        }
        return true;
      }
      default: {
        for (let i = 0; i < this.keys.length; i++) {
          const mine = this.get(this.keys[i]);
          const theirs = other.get(this.keys[i]);
          if (mine === null || theirs === null || !mine.equals(theirs)) return false;
        }
        for (let i = 0; i < other.keys.length; i++) {
          if (this.get(other.keys[i]) === null) return false;
        }
        return true;
      }
    }
  }

  /** Number of items (array) or members (object); 0 otherwise. */
  get length(): i32 {
    return this.kind == JsonKind.Array || this.kind == JsonKind.Object ? this.items.length : 0;
  }

  toString(): string {
    switch (this.kind) {
      case JsonKind.Null:
        return "null";
      case JsonKind.Bool:
        return this.bool ? "true" : "false";
      case JsonKind.Number:
        return Math.floor(this.num) == this.num && Math.abs(this.num) < 9007199254740992 ? (<i64>this.num).toString() : this.num.toString();
      case JsonKind.String:
        return quote(this.str);
      case JsonKind.Array: {
        const parts = new Array<string>(this.items.length);
        for (let i = 0; i < this.items.length; i++) parts[i] = this.items[i].toString();
        return "[" + parts.join(",") + "]";
      }
      default: {
        const parts = new Array<string>(this.items.length);
        for (let i = 0; i < this.items.length; i++) parts[i] = quote(this.keys[i]) + ":" + this.items[i].toString();
        return "{" + parts.join(",") + "}";
      }
    }
  }
}

/** `s` as a JSON string literal. */
export function quote(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c == 0x22) out += '\\"';
    else if (c == 0x5c) out += "\\\\";
    else if (c == 0x0a) out += "\\n";
    else if (c == 0x0d) out += "\\r";
    else if (c == 0x09) out += "\\t";
    else if (c < 0x20) out += "\\u00" + (c < 16 ? "0" : "") + c.toString(16);
    else out += String.fromCharCode(c);
  }
  return out + '"';
}

let parseError: string = "";

/** Why the last parseJson returned null. */
export function jsonError(): string {
  return parseError;
}

/** Parses JSON text; null (and jsonError() says why) when it is not valid JSON. */
export function parseJson(text: string): JsonValue | null {
  const p = new Parser(text);
  p.ws();
  const v = p.value(0);
  if (v === null) {
    parseError = p.error + " at offset " + p.pos.toString();
    return null;
  }
  p.ws();
  if (p.pos != text.length) {
    parseError = "unexpected text after the value at offset " + p.pos.toString();
    return null;
  }
  parseError = "";
  return v;
}

const MAX_DEPTH = 64;

class Parser {
  pos: i32 = 0;
  error: string = "";
  constructor(public s: string) {}

  ws(): void {
    const s = this.s;
    while (this.pos < s.length) {
      const c = s.charCodeAt(this.pos);
      if (c == 0x20 || c == 0x0a || c == 0x0d || c == 0x09) this.pos++;
      else break;
    }
  }

  fail(msg: string): JsonValue | null {
    if (this.error.length == 0) this.error = msg;
    return null;
  }

  value(depth: i32): JsonValue | null {
    if (depth > MAX_DEPTH) return this.fail("nested too deeply");
    if (this.pos >= this.s.length) return this.fail("unexpected end");
    const c = this.s.charCodeAt(this.pos);
    if (c == 0x7b) return this.object(depth);
    if (c == 0x5b) return this.array(depth);
    if (c == 0x22) {
      const str = this.string();
      if (str === null) return null;
      const v = new JsonValue();
      v.kind = JsonKind.String;
      v.str = str;
      return v;
    }
    if (this.word("true")) return boolValue(true);
    if (this.word("false")) return boolValue(false);
    if (this.word("null")) return new JsonValue();
    if (c == 0x2d || (c >= 0x30 && c <= 0x39)) return this.number();
    return this.fail("unexpected character");
  }

  word(w: string): bool {
    if (this.s.substr(this.pos, w.length) == w) {
      this.pos += w.length;
      return true;
    }
    return false;
  }

  number(): JsonValue | null {
    const start = this.pos;
    const s = this.s;
    if (s.charCodeAt(this.pos) == 0x2d) this.pos++;
    let digits = 0;
    while (this.pos < s.length) {
      const c = s.charCodeAt(this.pos);
      if ((c >= 0x30 && c <= 0x39) || c == 0x2e || c == 0x65 || c == 0x45 || c == 0x2b || c == 0x2d) {
        if (c >= 0x30 && c <= 0x39) digits++;
        this.pos++;
      } else break;
    }
    if (digits == 0) return this.fail("invalid number");
    const v = new JsonValue();
    v.kind = JsonKind.Number;
    v.num = parseFloat(s.substring(start, this.pos));
    if (isNaN(v.num)) return this.fail("invalid number");
    return v;
  }

  string(): string | null {
    const s = this.s;
    this.pos++; // opening quote
    let out = "";
    let run = this.pos;
    while (this.pos < s.length) {
      const c = s.charCodeAt(this.pos);
      if (c == 0x22) {
        out += s.substring(run, this.pos);
        this.pos++;
        return out;
      }
      if (c == 0x5c) {
        out += s.substring(run, this.pos);
        this.pos++;
        if (this.pos >= s.length) break;
        const e = s.charCodeAt(this.pos);
        this.pos++;
        if (e == 0x6e) out += "\n";
        else if (e == 0x74) out += "\t";
        else if (e == 0x72) out += "\r";
        else if (e == 0x62) out += "\b";
        else if (e == 0x66) out += "\f";
        else if (e == 0x75) {
          if (this.pos + 4 > s.length) break;
          const code = I32.parseInt(s.substr(this.pos, 4), 16);
          this.pos += 4;
          out += String.fromCharCode(code);
        } else out += String.fromCharCode(e);
        run = this.pos;
        continue;
      }
      if (c < 0x20) {
        this.fail("control character in string");
        return null;
      }
      this.pos++;
    }
    this.fail("unterminated string");
    return null;
  }

  array(depth: i32): JsonValue | null {
    this.pos++;
    const v = new JsonValue();
    v.kind = JsonKind.Array;
    this.ws();
    if (this.pos < this.s.length && this.s.charCodeAt(this.pos) == 0x5d) {
      this.pos++;
      return v;
    }
    while (true) {
      this.ws();
      const item = this.value(depth + 1);
      if (item === null) return null;
      v.items.push(item);
      this.ws();
      if (this.pos >= this.s.length) return this.fail("unterminated array");
      const c = this.s.charCodeAt(this.pos++);
      if (c == 0x5d) return v;
      if (c != 0x2c) return this.fail("expected ',' or ']'");
    }
  }

  object(depth: i32): JsonValue | null {
    this.pos++;
    const v = new JsonValue();
    v.kind = JsonKind.Object;
    this.ws();
    if (this.pos < this.s.length && this.s.charCodeAt(this.pos) == 0x7d) {
      this.pos++;
      return v;
    }
    while (true) {
      this.ws();
      if (this.pos >= this.s.length || this.s.charCodeAt(this.pos) != 0x22) return this.fail("expected a string key");
      const key = this.string();
      if (key === null) return null;
      this.ws();
      if (this.pos >= this.s.length || this.s.charCodeAt(this.pos) != 0x3a) return this.fail("expected ':'");
      this.pos++;
      this.ws();
      const item = this.value(depth + 1);
      if (item === null) return null;
      v.keys.push(key);
      v.items.push(item);
      this.ws();
      if (this.pos >= this.s.length) return this.fail("unterminated object");
      const c = this.s.charCodeAt(this.pos++);
      if (c == 0x7d) return v;
      if (c != 0x2c) return this.fail("expected ',' or '}'");
    }
  }
}

function boolValue(b: bool): JsonValue {
  const v = new JsonValue();
  v.kind = JsonKind.Bool;
  v.bool = b;
  return v;
}
