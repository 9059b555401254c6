import type { ServiceProcess } from '../../apps/launcher/src/stack';
import type { SupervisionEvent, SupervisionOptions } from '../../apps/launcher/src/supervisor';
import { eventually } from './http';

/** Supervision with quick restarts for tests, recording every event in `events`. */
export function quickSupervision(events: SupervisionEvent[], overrides: Partial<SupervisionOptions> = {}): SupervisionOptions {
  return {
    backoffMs: 50,
    backoffMaxMs: 500,
    maxRestarts: 5,
    windowMs: 60_000,
    stableAfterMs: 10_000,
    onEvent: (event) => events.push(event),
    ...overrides,
  };
}

/** Waits until `current()` is a process other than `killed`: the service's restart is ready. */
export function replacementOf(killed: ServiceProcess, current: () => ServiceProcess | undefined, timeoutMs = 30_000): Promise<ServiceProcess> {
  return eventually(
    async () => {
      const process = current();
      return process && process.child.pid !== killed.child.pid ? process : undefined;
    },
    timeoutMs,
    `${killed.name} to be restarted`,
  );
}

export const hasExited = (process: ServiceProcess) => process.child.exitCode !== null || process.child.signalCode !== null;
