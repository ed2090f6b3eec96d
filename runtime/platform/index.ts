// Picks the platform once. The only place in the runtime that asks which JavaScript runtime this is.
import { bunPlatform } from "./bun.ts";
import { denoPlatform } from "./deno.ts";
import type { Platform } from "./types.ts";

export type { ClientInfo, Platform, RequestHandler, Server, ServeOptions } from "./types.ts";

export const platform: Platform = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined" ? bunPlatform : denoPlatform;
