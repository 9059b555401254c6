/** A task's links, as `GET /tasks/:id` answers them and webhooks send them: clients need not build URLs. */
export interface TaskLinks {
  self: string;
  stream: string;
  events: string;
  cancel: string;
}

export function taskLinks(taskId: string): TaskLinks {
  return {
    self: `/tasks/${taskId}`,
    stream: `/tasks/${taskId}/stream`,
    events: `/tasks/${taskId}/events`,
    cancel: `/tasks/${taskId}/cancel`,
  };
}
