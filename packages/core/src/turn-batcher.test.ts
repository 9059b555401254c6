import { TurnBatcher } from './turn-batcher';

const turn = () => new Promise((resolve) => setImmediate(resolve));

test('items of one turn are one batch; while a batch is handled, the items of later turns wait and form the next one', async () => {
  const batches: number[][] = [];
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  const batcher = new TurnBatcher<number>(async (batch) => {
    batches.push(batch);
    if (batches.length === 1) await held;
  });
  batcher.add(1);
  batcher.add(2);
  await turn();
  expect(batches).toEqual([[1, 2]]);
  for (let item = 3; item <= 6; item += 1) {
    batcher.add(item);
    await turn();
  }
  expect(batches).toEqual([[1, 2]]);
  release();
  await held;
  await turn();
  expect(batches).toEqual([
    [1, 2],
    [3, 4, 5, 6],
  ]);
});

test('a batch whose handler rejects does not stop the next one', async () => {
  const batches: string[][] = [];
  const batcher = new TurnBatcher<string>(async (batch) => {
    batches.push(batch);
    if (batch.includes('bad')) throw new Error('handler failed');
  });
  batcher.add('bad');
  await turn();
  await turn();
  batcher.add('good');
  await turn();
  expect(batches).toEqual([['bad'], ['good']]);
});
