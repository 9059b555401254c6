// The public API of @mageagent/tasks: the names other workspaces import (apps, other packages,
// tests, bench), listed by name so that everything else stays internal and tsc catches a name
// removed while still in use. Export a name here only when another workspace needs it.
export { CancelChannel } from './cancel-channel';
export { TaskEventBus } from './event-bus';
export { TaskKeys } from './keys';
export {
  createRedis,
  definedScript,
  deleteKeysWithPrefix,
  causedByRedisOutage,
  isRedisUnavailable,
  pingRedis,
  type RedisClient,
  type RedisRole,
  redisReady,
  redisUnavailable,
} from './redis';
export { type FollowOptions, followTask, type TaskFollow } from './task-follower';
export { TaskIntake, TaskNotQueuedError } from './task-intake';
export { BULLMQ_PRIORITY, DEFAULT_JOB_RETENTION, TASK_QUEUE_NAME, type TaskJobData, TaskQueue } from './task-queue';
export { type RequestCounter, TaskStore, type TaskSummary } from './task-store';
export { describeTopology, hashTagOf, type RedisTopology, type RedisTopologyEnv, redisTopologyOf } from './topology';
