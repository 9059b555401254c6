export * from './definitions';
export * from './parse';
export * from './validate';
export * from './heuristics';
export * from './extract';
