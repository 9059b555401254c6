/**
 * A task cancelled while still queued ends in the api, not on a worker (the worker that takes its
 * job later skips it uncounted): the api counts that end in mageagent_tasks_finished_total.
 * The api runs in this process with no worker, so its tasks stay queued.
 */
import { startInProcessApi, type InProcessApi } from '../test-api';

let api: InProcessApi;
beforeAll(async () => {
  api = await startInProcessApi();
});
afterAll(async () => {
  await api.close();
});

async function finishedCancelled(pattern: string): Promise<number> {
  const text = await (await fetch(`${api.url}/metrics`)).text();
  const line = text.split('\n').find((row) => row.startsWith(`mageagent_tasks_finished_total{pattern="${pattern}",status="cancelled"}`));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}

test('a queued task cancelled through the api is counted once as a cancelled end', async () => {
  expect(await finishedCancelled('validated')).toBe(0);
  const created = (await (
    await fetch(`${api.url}/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'never run', pattern: 'validated' }),
    })
  ).json()) as { id: string };
  const cancel = () => fetch(`${api.url}/tasks/${created.id}/cancel`, { method: 'POST' });
  expect((await cancel()).status).toBe(200);
  expect(await finishedCancelled('validated')).toBe(1);
  // Cancelling a task that has already ended changes nothing, and counts nothing.
  expect((await cancel()).status).toBe(200);
  expect(await finishedCancelled('validated')).toBe(1);
});
