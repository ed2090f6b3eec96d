// Experiment, not part of the proxy: the floor for any proxy on Bun's sockets. Each client connection
// gets its own upstream connection and bytes are copied both ways as they come: no HTTP, no parsing,
// no pooling. What it costs per request is what Bun's event loop and sockets cost (bench/README.md,
// "Session 7"); everything a real proxy does comes on top.
//   PORT=18090 UPSTREAM=127.0.0.1:18000 taskset -c 0 bun bench/experiments/relay.ts
//   taskset -c 1 wrk -t1 -c64 -d3s http://127.0.0.1:18090/small
import type { Socket } from "bun";

const PORT = Number(process.env.PORT ?? 18090);
const [UP_HOST, UP_PORT] = (process.env.UPSTREAM ?? "127.0.0.1:18000").split(":") as [string, string];

type Client = { peer: Socket<Upstream> | null; early: Uint8Array[] };
type Upstream = { peer: Socket<Client> };

Bun.listen<Client>({
  hostname: "127.0.0.1",
  port: PORT,
  socket: {
    binaryType: "uint8array",
    open(client) {
      client.data = { peer: null, early: [] };
      void Bun.connect<Upstream>({
        hostname: UP_HOST,
        port: Number(UP_PORT),
        data: { peer: client },
        socket: {
          binaryType: "uint8array",
          open(up) {
            client.data.peer = up;
            for (const chunk of client.data.early) up.write(chunk);
            client.data.early.length = 0;
          },
          data(up, chunk) {
            up.data.peer.write(chunk);
          },
          close(up) {
            up.data.peer.end();
          },
          error() {},
        },
      });
    },
    data(client, chunk) {
      if (client.data.peer !== null) client.data.peer.write(chunk);
      else client.data.early.push(chunk);
    },
    close(client) {
      client.data.peer?.end();
    },
    error() {},
  },
});
console.log(`relay on 127.0.0.1:${PORT} -> ${UP_HOST}:${UP_PORT}`);
