import type { TokenUsage } from '@mageagent/core';

/** How a model call ended, as metrics label it. */
export type ModelCallOutcome = 'ok' | 'error' | 'cancelled';

/** One finished model call (the HTTP call only: the lease wait before it is reported apart). */
export interface ModelCallRecord {
  role: string;
  host: string;
  outcome: ModelCallOutcome;
  durationMs: number;
  /** The call's usage (the server's, or the client's estimate when it sent none); only on `ok`. */
  usage?: TokenUsage;
  /** The MageError code of a failed call (`MODEL_TIMEOUT`, `MODEL_UNAVAILABLE`, ...); only on `error`. */
  errorCode?: string;
}

/**
 * What the scheduled models report as they run, for whoever owns the metrics (the worker's
 * Prometheus registry). Optional hooks rather than a metrics library here, so this package stays
 * free of prom-client and its tests need none. Hooks must not throw: a failing observer would
 * fail the call.
 */
export interface ModelObserver {
  /** A call was granted its host's lease after `waitMs` in the queue. */
  leaseGranted?(host: string, waitMs: number): void;
  /** A lease was released after being held `heldMs` (the host's busy time). */
  leaseReleased?(host: string, heldMs: number): void;
  /** A model call ended. */
  modelCall?(record: ModelCallRecord): void;
}
