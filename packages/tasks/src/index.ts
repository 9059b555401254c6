export * from './keys';
export * from './redis';
export * from './task-store';
export * from './event-bus';
export * from './task-follower';
export * from './task-queue';
export * from './task-intake';
export * from './cancel-channel';
