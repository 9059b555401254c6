export * from './keys';
export * from './redis';
export * from './task-store';
export * from './event-bus';
export * from './task-follower';
export * from './task-queue';
export * from './cancel-channel';
