import { abortReason, type GenerateOutcome } from '../generate';
import { errorMessage, type PipelineRun } from './run';

/** One call of a fan-out that answered. */
export interface FannedOut<Item> {
  item: Item;
  index: number;
  outcome: GenerateOutcome;
}

/**
 * Starts every call at once and waits for all of them: calls on one GPU host are serialised by
 * the host leases, calls on several hosts run in parallel, with no step code knowing which. Calls
 * that answered are recorded in order; each failure drops out with a warning (described by
 * `describe`), and the caller decides whether enough answered. An abort fails the whole fan-out.
 */
export async function fanOut<Item>(
  run: PipelineRun,
  items: readonly Item[],
  start: (item: Item, index: number) => Promise<GenerateOutcome>,
  describe: (item: Item, index: number) => string,
): Promise<{ answered: Array<FannedOut<Item>>; failures: unknown[] }> {
  const settled = await Promise.allSettled(items.map((item, index) => start(item, index)));
  if (run.context.signal.aborted) throw abortReason(run.context.signal);
  const answered: Array<FannedOut<Item>> = [];
  const failures: unknown[] = [];
  settled.forEach((result, index) => {
    const item = items[index] as Item;
    if (result.status === 'fulfilled') {
      run.record(result.value);
      answered.push({ item, index, outcome: result.value });
    } else {
      failures.push(result.reason);
      run.warn(`${describe(item, index)} failed: ${errorMessage(result.reason)}`);
    }
  });
  return { answered, failures };
}
