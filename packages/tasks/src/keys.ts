/**
 * Redis key names. The task id sits in a hash tag (`{id}`) so a task's record and its
 * event log land in one cluster slot and one Lua script may touch both.
 */
export class TaskKeys {
  constructor(readonly prefix: string) {}

  task(taskId: string): string {
    return `${this.prefix}:task:{${taskId}}`;
  }

  events(taskId: string): string {
    return `${this.prefix}:task:{${taskId}}:events`;
  }

  /** Pub/sub channel carrying a task's live events. */
  eventChannel(taskId: string): string {
    return `${this.prefix}:task-events:${taskId}`;
  }

  /** Pub/sub channel on which cancel requests are broadcast to every worker. */
  cancelChannel(): string {
    return `${this.prefix}:cancel`;
  }

  /** The task id of an event channel, or undefined for any other channel. */
  taskIdOfChannel(channel: string): string | undefined {
    const head = `${this.prefix}:task-events:`;
    return channel.startsWith(head) ? channel.slice(head.length) : undefined;
  }
}
