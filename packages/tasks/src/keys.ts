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

  /** The webhook delivery attempts of a task (a list, kept as long as the task). */
  webhookDeliveries(taskId: string): string {
    return `${this.prefix}:task:{${taskId}}:webhook`;
  }

  /**
   * A tenant's tasks, newest last: a sorted set whose members are task ids, all at score 0 so
   * they sort by the id, and task ids (uuid v7) sort by creation time. Listing reads it backwards.
   */
  tenantTasks(tenant: string): string {
    return `${this.prefix}:tenant:{${tenant}}:tasks`;
  }

  /** How many tasks of one API key are queued or running (its `maxActiveTasks` quota). */
  activeTasks(keyId: string): string {
    return `${this.prefix}:active:{${keyId}}`;
  }

  /** Task ids whose webhook is due: appended by the same script that ends the task (an outbox). */
  webhookOutbox(): string {
    return `${this.prefix}:webhooks:outbox`;
  }

  /** BullMQ's lists of the task queue's waiting jobs (plain and prioritised): the queue's backlog. */
  queueBacklog(queueName: string): [wait: string, prioritized: string] {
    return [`${this.prefix}:${queueName}:wait`, `${this.prefix}:${queueName}:prioritized`];
  }

  /** The task id of an event channel, or undefined for any other channel. */
  taskIdOfChannel(channel: string): string | undefined {
    const head = `${this.prefix}:task-events:`;
    return channel.startsWith(head) ? channel.slice(head.length) : undefined;
  }
}

/**
 * The smallest uuid v7 of a millisecond: task ids created at or after `ms` sort at or after it, so a
 * time bound becomes a bound on the ids of a tenant's index.
 */
export function uuidV7Floor(ms: number): string {
  const hex = Math.max(0, Math.floor(ms)).toString(16).padStart(12, '0').slice(-12);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-7000-8000-000000000000`;
}
