// One version of a filter module: its bytes, hash, config schema, and compiled (metered) forms.
import * as abi from "./abi.ts";
import type { JsonSchema } from "./config-schema.ts";
import type { Metering } from "./fuel.ts";

/** The custom section `meshctl filter build` puts a filter's schema.json in. */
export const SCHEMA_SECTION = "meshwasm.config-schema";

/** A module that cannot be used; the message says why, for the admin API and the log. */
export class ModuleError extends Error {
  override name = "ModuleError";
}

export type ModuleSource = "file" | "admin";

export class ModuleEntry {
  private readonly compiled = new Map<number, Promise<WebAssembly.Module>>();
  /** Increases with every version loaded in this process, for logs. */
  readonly generation: number;
  private static next = 1;

  constructor(
    readonly name: string,
    readonly bytes: Uint8Array,
    readonly sha256: string,
    readonly source: ModuleSource,
    readonly schema: JsonSchema | null,
    private readonly metering: Metering,
  ) {
    this.generation = ModuleEntry.next++;
  }

  /** The module metered for a memory cap of `pages` 64 KiB pages, compiled once per cap. */
  compiledFor(pages: number): Promise<WebAssembly.Module> {
    let p = this.compiled.get(pages);
    if (!p) {
      p = compileChecked(this.name, this.metering.meter(this.bytes, pages));
      this.compiled.set(pages, p);
      p.catch(() => this.compiled.delete(pages));
    }
    return p;
  }
}

export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as BufferSource));
  let hex = "";
  for (const b of digest) hex += b.toString(16).padStart(2, "0");
  return hex;
}

async function compileChecked(name: string, bytes: Uint8Array): Promise<WebAssembly.Module> {
  let module: WebAssembly.Module;
  try {
    module = await WebAssembly.compile(bytes as BufferSource);
  } catch (err) {
    throw new ModuleError(`module "${name}" does not compile: ${(err as Error).message}`);
  }
  const exports = new Set(WebAssembly.Module.exports(module).map((e) => e.name));
  const missing = abi.REQUIRED_EXPORTS.filter((e) => !exports.has(e));
  if (missing.length > 0) {
    throw new ModuleError(
      `module "${name}" lacks required exports ${missing.join(", ")}: build it with the SDK (export * from "@meshwasm/sdk/exports") and meshctl filter build`,
    );
  }
  for (const imp of WebAssembly.Module.imports(module)) {
    if (!abi.HOST_IMPORTS[imp.module]?.includes(imp.name)) {
      throw new ModuleError(`module "${name}" imports "${imp.module}"."${imp.name}", which the filter host does not provide`);
    }
  }
  return module;
}

function readLeb(bytes: Uint8Array, at: number): [value: number, next: number] {
  let result = 0;
  let shift = 0;
  for (;;) {
    if (at >= bytes.length) throw new ModuleError("truncated module");
    const b = bytes[at++]!;
    result += (b & 0x7f) * 2 ** shift;
    shift += 7;
    if ((b & 0x80) === 0) return [result, at];
    if (shift > 35) throw new ModuleError("malformed module (bad LEB128)");
  }
}

/** The payload of the first custom section called `name`, or null. */
export function customSection(bytes: Uint8Array, name: string): Uint8Array | null {
  if (bytes.length < 8 || bytes[0] !== 0 || bytes[1] !== 0x61 || bytes[2] !== 0x73 || bytes[3] !== 0x6d) {
    throw new ModuleError("not a WebAssembly module (bad magic number)");
  }
  const decoder = new TextDecoder();
  let at = 8;
  while (at < bytes.length) {
    const id = bytes[at++]!;
    const [size, body] = readLeb(bytes, at);
    const end = body + size;
    if (end > bytes.length) throw new ModuleError("truncated module");
    if (id === 0) {
      const [nameLen, nameAt] = readLeb(bytes, body);
      if (decoder.decode(bytes.subarray(nameAt, nameAt + nameLen)) === name) return bytes.subarray(nameAt + nameLen, end);
    }
    at = end;
  }
  return null;
}

/**
 * Checks and wraps new module bytes. Compiles it once (metered for `pages`) so a module that will
 * not compile, lacks the ABI exports or imports something unknown is refused here, off the request path.
 */
export async function prepareModule(
  name: string,
  bytes: Uint8Array,
  source: ModuleSource,
  metering: Metering,
  pages: number,
): Promise<ModuleEntry> {
  let schema: JsonSchema | null = null;
  const section = customSection(bytes, SCHEMA_SECTION);
  if (section) {
    try {
      schema = JSON.parse(new TextDecoder().decode(section)) as JsonSchema;
    } catch {
      throw new ModuleError(`module "${name}" has a config schema that is not valid JSON`);
    }
  }
  let entry: ModuleEntry;
  try {
    entry = new ModuleEntry(name, bytes, await sha256Hex(bytes), source, schema, metering);
    await entry.compiledFor(pages);
  } catch (err) {
    if (err instanceof ModuleError) throw err;
    throw new ModuleError(`module "${name}" cannot be metered: ${(err as Error).message}`);
  }
  return entry;
}
