/**
 * A circuit breaker per deployment: after `threshold` consecutive failures a deployment is taken
 * out of rotation for `cooldownMs`; one success closes it again. State is per process: each
 * replica learns on its own, which is what a replica-local view of an upstream should be.
 */
export class CircuitBreaker {
  readonly #state = new Map<string, { failures: number; openUntil: number }>();

  constructor(
    private readonly threshold: number,
    private readonly cooldownMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** False while the deployment is cooling down. */
  available(id: string): boolean {
    return (this.#state.get(id)?.openUntil ?? 0) <= this.now();
  }

  /** When a cooling deployment comes back (0 if it is available). */
  reopensAt(id: string): number {
    const until = this.#state.get(id)?.openUntil ?? 0;
    return until > this.now() ? until : 0;
  }

  success(id: string): void {
    this.#state.delete(id);
  }

  /** Records a failure; true when this one opened the circuit. */
  failure(id: string): boolean {
    const state = this.#state.get(id) ?? { failures: 0, openUntil: 0 };
    state.failures++;
    let opened = false;
    if (state.failures >= this.threshold) {
      opened = state.openUntil <= this.now();
      state.openUntil = this.now() + this.cooldownMs;
      state.failures = 0;
    }
    this.#state.set(id, state);
    return opened;
  }
}
