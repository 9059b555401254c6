export * from './types';
export * from './config';
export * from './openai-client';
export * from './observer';
export * from './registry';
export * from './scheduling';
export * from './traced-model';
