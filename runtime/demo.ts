// `npm start`: the demo mesh. Starts three tiny services and the proxy in front of them, using the
// config embedded in examples/demo.yaml, then prints what to try.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { createLogger } from "./observability/log.ts";
import { platform } from "./platform/index.ts";
import { ConfigStartError, MeshProxy } from "./server.ts";

const configPath = fileURLToPath(new URL("../examples/demo.yaml", import.meta.url));
const DEMO_CONFIG = readFileSync(configPath, "utf8");

function demoService(name: string, port: number): void {
  platform.serve({
    hostname: "127.0.0.1",
    port,
    handler(req) {
      const url = new URL(req.url);
      const headers: Record<string, string> = {};
      req.headers.forEach((v, k) => (headers[k] = v));
      return Response.json({ service: name, method: req.method, path: url.pathname + url.search, headers });
    },
  });
}

demoService("web-1", 9101);
demoService("web-2", 9102);
demoService("api-v1", 9201);
demoService("api-v2", 9202);

const log = createLogger();
const proxy = new MeshProxy({
  log,
  filterHost: async (metrics) => {
    const { createFilterHost } = await import("./wasm/host.ts");
    return createFilterHost({ log: log.child({ component: "filters" }), metrics, configDir: process.cwd() });
  },
});
try {
  await proxy.startFromFile(configPath);
} catch (err) {
  console.error(err instanceof ConfigStartError ? err.message : err);
  platform.exit(1);
}
console.error(`
meshwasm demo is running (config: ${configPath}, ${DEMO_CONFIG.split("\n").length} lines)
  curl -s localhost:8080/hello            # web, round robin over two services
  curl -s localhost:8080/api/users?id=1   # 90% api-v1, 10% api-v2, /api stripped
  curl -s localhost:9901/metrics          # Prometheus metrics
  curl -s localhost:9901/config           # the running config
Ctrl-C drains and stops.
`);
const stop = async () => {
  await proxy.shutdown(2000);
  platform.exit(0);
};
platform.onSignal("SIGINT", () => void stop());
platform.onSignal("SIGTERM", () => void stop());
platform.onSignal("SIGHUP", () => void proxy.reload());
