export * from './errors';
export * from './schemas';
export * from './logger';
export * from './env';
export { z } from 'zod';
export * from './shutdown';
export * from './quote';
export * from './json-bounds';
