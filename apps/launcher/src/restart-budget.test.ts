import { RestartBudget, type RestartPolicy } from './restart-budget';

const policy: RestartPolicy = { backoffMs: 500, backoffMaxMs: 30_000, maxRestarts: 5, windowMs: 60_000, stableAfterMs: 10_000 };
const noJitter = () => 0;

const delays = (budget: RestartBudget, crashes: Array<{ at: number; upMs: number }>) =>
  crashes.map(({ at, upMs }) => {
    const decision = budget.next(at, upMs);
    return decision.restart ? decision.delayMs : 'crash loop';
  });

test('the delay doubles with each crash in a row, up to the maximum', () => {
  const budget = new RestartBudget({ ...policy, maxRestarts: 100 }, noJitter);
  const crashes = Array.from({ length: 9 }, (_, index) => ({ at: index * 100, upMs: 100 }));
  expect(delays(budget, crashes)).toEqual([500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]);
});

test('jitter adds at most a fifth, so services that crashed together come back spread out', () => {
  const low = new RestartBudget(policy, () => 0).next(0, 0);
  const high = new RestartBudget(policy, () => 0.999).next(0, 0);
  expect(low).toMatchObject({ restart: true, delayMs: 500 });
  expect(high).toMatchObject({ restart: true, delayMs: 600 });
});

test('a process that stayed up a while starts the backoff over', () => {
  const budget = new RestartBudget({ ...policy, maxRestarts: 100 }, noJitter);
  expect(
    delays(budget, [
      { at: 0, upMs: 50 },
      { at: 1000, upMs: 50 },
      { at: 3000, upMs: 50 },
    ]),
  ).toEqual([500, 1000, 2000]);
  expect(
    delays(budget, [
      { at: 20_000, upMs: 10_000 },
      { at: 21_000, upMs: 400 },
    ]),
  ).toEqual([500, 1000]);
});

test('needing more restarts than allowed within the window is a crash loop; older restarts leave the window', () => {
  const budget = new RestartBudget({ ...policy, maxRestarts: 2, windowMs: 10_000 }, noJitter);
  expect(budget.next(0, 0)).toMatchObject({ restart: true, restarts: 1, restartsInWindow: 1 });
  expect(budget.next(1000, 0)).toMatchObject({ restart: true, restarts: 2, restartsInWindow: 2 });
  expect(budget.next(2000, 0)).toEqual({ restart: false, restartsInWindow: 2 });
  // The first restart (at 0) has left the window at 10 s.
  expect(budget.next(10_500, 0)).toMatchObject({ restart: true, restarts: 3, restartsInWindow: 2 });
});

test('RESTART_MAX 0: the first crash is a crash loop (an outer supervisor restarts the launcher)', () => {
  expect(new RestartBudget({ ...policy, maxRestarts: 0 }, noJitter).next(0, 60_000)).toEqual({ restart: false, restartsInWindow: 0 });
});
