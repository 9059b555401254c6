export * from './context';
export * from './generate';
export * from './patterns';
export * from './tools';
