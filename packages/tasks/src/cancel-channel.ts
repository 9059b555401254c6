import type { Cluster, Redis } from 'ioredis';
import type { TaskKeys } from './keys';

/**
 * Cancel requests broadcast to every worker process. BullMQ's `worker.cancelJob`
 * only reaches jobs of its own process, so the api publishes here and each worker
 * cancels the job if it is running it.
 */
export class CancelChannel {
  constructor(private readonly keys: TaskKeys) {}

  broadcast(publisher: Redis | Cluster, taskId: string, reason: string): Promise<number> {
    return publisher.publish(this.keys.cancelChannel(), JSON.stringify({ taskId, reason }));
  }

  /** Listens on a dedicated subscriber connection. */
  async listen(subscriber: Redis | Cluster, onCancel: (taskId: string, reason: string) => void): Promise<void> {
    const channel = this.keys.cancelChannel();
    subscriber.on('message', (from: string, message: string) => {
      if (from !== channel) return;
      try {
        const { taskId, reason } = JSON.parse(message) as { taskId: string; reason: string };
        onCancel(taskId, reason);
      } catch {
        // A malformed message is not ours to act on.
      }
    });
    await subscriber.subscribe(channel);
  }
}
