/**
 * A signal that aborts after `ms` with a `TimeoutError`, as `AbortSignal.timeout`'s does, and
 * `clear()`, which stops its timer as soon as the call is over. `AbortSignal.timeout` keeps its
 * timer until the time is up, however early the call ended, and the timer keeps the async context
 * it was made in (under OpenTelemetry, the call's span and everything on it): one per call, held
 * until each call's deadline, memory that stays long after a burst of load.
 */
export function timeoutSignal(ms: number): { signal: AbortSignal; clear: () => void } {
  const controller = new AbortController();
  const timer = setTimeout(
    () => controller.abort(new DOMException("The operation timed out.", "TimeoutError")),
    Math.min(Math.max(1, ms), 2 ** 31 - 1),
  );
  timer.unref();
  return { signal: controller.signal, clear: () => clearTimeout(timer) };
}
