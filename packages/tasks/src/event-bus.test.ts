import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { TaskEventBus } from './event-bus';
import { TaskKeys } from './keys';
import { createRedis } from './redis';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/**
 * A real refusal of SUBSCRIBE: a Redis ACL user that may not use the task's channel. The
 * refusal must stay with the call that met it; once the user may, the next follower subscribes.
 */
test('a SUBSCRIBE Redis refuses fails that call only; the next subscriber of the task subscribes afresh', async () => {
  const admin = new Redis(REDIS_URL);
  const user = `test-bus-${randomUUID().slice(0, 8)}`;
  const password = randomUUID();
  const keys = new TaskKeys(`test-bus-${randomUUID().slice(0, 8)}`);
  const taskId = randomUUID();
  await admin.call('ACL', 'SETUSER', user, 'on', `>${password}`, '~*', '+@all', 'resetchannels', '&nothing-allowed');
  const url = new URL(REDIS_URL);
  url.username = user;
  url.password = password;
  const subscriber = createRedis(url.toString(), 'subscriber');
  const bus = new TaskEventBus(subscriber, keys);
  try {
    await expect(bus.subscribe(taskId, () => undefined)).rejects.toThrow(/NOPERM|No permissions/i);
    expect(bus.subscribedChannels).toBe(0);
    expect(bus.listenerCount).toBe(0);

    await admin.call('ACL', 'SETUSER', user, 'allchannels');
    const received: number[] = [];
    const unsubscribe = await bus.subscribe(taskId, (event) => received.push(event.seq));
    expect(bus.subscribedChannels).toBe(1);
    await admin.publish(keys.eventChannel(taskId), JSON.stringify({ taskId, seq: 7, at: '', type: 'warning', message: 'hi' }));
    for (let waited = 0; received.length === 0 && waited < 2000; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(received).toEqual([7]);
    unsubscribe();
    expect(bus.subscribedChannels).toBe(0);
  } finally {
    subscriber.disconnect();
    await admin.call('ACL', 'DELUSER', user);
    admin.disconnect();
  }
});
