// Headers as filters read and change them: a request's on their way upstream, a response's on their
// way to the client.
//
// Most filters read a header or two and append one (auth reads a key, retries adds its attempt count,
// rate-limit its RateLimit-* headers). Over a head our own parser read, LinesHeaders answers reads from
// the parsed lines in place and keeps appends in a short list after them, so the head can go on as the
// lines it came in plus those few; only a filter that changes, removes or lists the head's own headers
// makes the whole list (and the head is then rebuilt from it). ListHeaders is the same interface over a
// plain list (heads that did not come from our parser, the test harness).
import type { HeaderList } from "../upstream/types.ts";
import { getHeader, withoutPairs } from "./headers.ts";

export interface FilterHeaders {
  /** The first value of `name` (lower-case), or null. */
  get(name: string): string | null;
  /** The first `name` header takes `value` and later ones go; appended when there is none. */
  set(name: string, value: string): void;
  /** Appends, keeping any `name` headers already there. */
  add(name: string, value: string): void;
  /** Removes every `name` header; returns how many. */
  remove(name: string): number;
  /** Every header, in order: a list that is these headers from now on (changes to it are changes to them). */
  list(): HeaderList;
}

const NONE = Object.freeze([]) as unknown as HeaderList;

function setIn(list: HeaderList, name: string, value: string): void {
  let at = -1;
  for (let i = 0; i < list.length; i++) {
    if (list[i]![0] !== name) continue;
    if (at < 0) {
      at = i;
      // A new pair, never an edit of the old one: a pair may be shared with the parsed head.
      list[i] = [name, value];
    } else {
      list.splice(i, 1);
      i--;
    }
  }
  if (at < 0) list.push([name, value]);
}

function removeIn(list: HeaderList, name: string): number {
  let removed = 0;
  for (let i = list.length - 1; i >= 0; i--) {
    if (list[i]![0] === name) {
      list.splice(i, 1);
      removed++;
    }
  }
  return removed;
}

/** Over a plain list, changed in place. */
export class ListHeaders implements FilterHeaders {
  constructor(readonly headers: HeaderList) {}
  get(name: string): string | null {
    return getHeader(this.headers, name);
  }
  set(name: string, value: string): void {
    setIn(this.headers, name, value);
  }
  add(name: string, value: string): void {
    this.headers.push([name, value]);
  }
  remove(name: string): number {
    return removeIn(this.headers, name);
  }
  list(): HeaderList {
    return this.headers;
  }
}

/** A parsed head's lines, as LinesHeaders reads them (ParsedLines). */
export interface HeadLines {
  /** Lower-case name of each line. */
  readonly names: readonly string[];
  value(i: number): string;
}

/**
 * Over a parsed head: its lines but those at the indices in `drop` (sorted), then extra() (headers the
 * proxy adds after them, such as X-Forwarded-For), then what filters appended. `source.headers` is the
 * head as a list (line i is pair i). `inPlace`: that list becomes the whole list when one is needed (a
 * response's); otherwise a new one is made (a request's, whose list is the listener's).
 */
export class LinesHeaders implements FilterHeaders {
  /** What filters appended while the head's own headers stayed as they are. */
  readonly appended: HeaderList = [];
  private whole: HeaderList | null = null;

  constructor(
    private readonly lines: HeadLines,
    private readonly source: { readonly headers: HeaderList },
    private readonly drop: readonly number[] | null,
    private readonly inPlace: boolean,
  ) {}

  /** Headers the proxy puts after the head's own; made when first asked for. None here. */
  protected extra(): HeaderList {
    return NONE;
  }

  /** The whole list was made: filters changed, removed or listed the head's own headers. */
  get made(): boolean {
    return this.whole !== null;
  }

  /** Where `name` first is among the head's own lines and `extra`: a line index, -2 for extra, -1 nowhere. */
  private findOwn(name: string): number {
    const names = this.lines.names;
    const drop = this.drop;
    for (let i = 0, d = 0; i < names.length; i++) {
      if (drop !== null && drop[d] === i) {
        d++;
        continue;
      }
      if (names[i] === name) return i;
    }
    return getHeader(this.extra(), name) !== null ? -2 : -1;
  }

  get(name: string): string | null {
    if (this.whole !== null) return getHeader(this.whole, name);
    const at = this.findOwn(name);
    if (at >= 0) return this.lines.value(at);
    if (at === -2) return getHeader(this.extra(), name);
    return getHeader(this.appended, name);
  }

  set(name: string, value: string): void {
    if (this.whole === null && this.findOwn(name) === -1) setIn(this.appended, name, value);
    else setIn(this.list(), name, value);
  }

  add(name: string, value: string): void {
    (this.whole ?? this.appended).push([name, value]);
  }

  remove(name: string): number {
    if (this.whole === null && this.findOwn(name) === -1) return removeIn(this.appended, name);
    return removeIn(this.list(), name);
  }

  list(): HeaderList {
    if (this.whole !== null) return this.whole;
    const list = this.inPlace && this.drop === null ? this.source.headers : withoutPairs(this.source.headers, this.drop);
    for (const h of this.extra()) list.push(h);
    for (const h of this.appended) list.push(h);
    this.whole = list;
    return list;
  }
}
