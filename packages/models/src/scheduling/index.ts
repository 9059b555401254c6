export * from './host-lease';
export * from './host-scheduler';
export * from './host-health';
export * from './host-stats';
export * from './scheduled-model';
