// The monotonic clock of the request path, read once per event-loop callback.
//
// A request reads the time a dozen times (its start, the route deadline, the attempt, the balancer's
// latency, the pool's idle mark, the log's duration, a rate limiter's refill...), and performance.now()
// costs ~40 ns on the bench machine (clock_gettime in the vDSO): half a microsecond per filtered
// request. Envoy keeps one "approximate monotonic time" per dispatcher loop iteration for the same
// reason. Here a turn is one callback that opts in (a socket's data, the upstream client's batch of
// settled requests): its first now() reads the clock, later ones in the same turn get that reading.
// Outside a turn (timers, admin, tests) now() is performance.now().
//
// What that costs in accuracy: times taken within one callback are equal, so a duration measured
// across callbacks is short by at most the time the earlier callback had already run (microseconds;
// a filter's whole CPU budget in the worst case). Nothing that enforces a CPU budget uses it.

let depth = 0;
let reading = -1;

/** Milliseconds, as performance.now(); within a turn, the turn's first reading. */
export function now(): number {
  if (depth === 0) return performance.now();
  if (reading < 0) reading = performance.now();
  return reading;
}

/** Starts a turn (nests). Pair with endTurn() in a finally. */
export function beginTurn(): void {
  depth++;
}

export function endTurn(): void {
  if (--depth === 0) reading = -1;
}
