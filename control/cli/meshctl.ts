#!/usr/bin/env bun
// meshctl: the mesh's command line. Today: `meshctl filter ...` (scaffold, build, test filters).
import { FILTER_USAGE, filterCommand } from "./filter.ts";

const USAGE = `usage: meshctl <command> ...

commands:
${FILTER_USAGE.replace(/^usage:\n/, "")}`;

async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  if (command === "filter") return filterCommand(rest);
  if (command === undefined || command === "help" || command === "--help" || command === "-h") {
    console.log(USAGE);
    return command === undefined ? 2 : 0;
  }
  console.error(`unknown command "${command}"\n${USAGE}`);
  return 2;
}

process.exit(await main(process.argv.slice(2)));
