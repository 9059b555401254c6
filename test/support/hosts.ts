import type { HostReport } from '@mageagent/models';
import { callsOnHost, type SimulatedCall, type SimulatorStats } from '../../apps/model-sim/src/simulator';
import { requestJson } from './http';

export type { HostReport };
export { handoffGaps } from '../../apps/model-sim/src/simulator';

export async function hostsOf(api: string): Promise<HostReport[]> {
  return (await requestJson<{ hosts: HostReport[] }>(`${api}/hosts`)).body.hosts;
}

/** The simulator's statistics with its per-call list. */
export async function simStats(sim: string): Promise<SimulatorStats & { calls: SimulatedCall[] }> {
  return (await requestJson<SimulatorStats & { calls: SimulatedCall[] }>(`${sim}/sim/stats?calls=1`)).body;
}

/** The calls one host served, in the order they started. */
export const callsOn = (stats: { calls: SimulatedCall[] }, host: string): SimulatedCall[] => callsOnHost(stats.calls, host);

/** Whether two calls were in flight at the same moment. */
export function overlap(first: SimulatedCall, second: SimulatedCall): boolean {
  return first.startedAt < second.endedAt && second.startedAt < first.endedAt;
}

export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] ?? Number.NaN;
}
