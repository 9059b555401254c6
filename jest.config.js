/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  // Unit tests sit beside the code (the benchmarks' pure helpers too); cross-process tests live in test/.
  testMatch: ['<rootDir>/apps/*/src/**/*.test.ts', '<rootDir>/packages/*/src/**/*.test.ts', '<rootDir>/bench/**/*.test.ts', '<rootDir>/test/**/*.test.ts'],
  transform: {
    '^.+\\.(t|j)sx?$': ['@swc/jest', { jsc: { target: 'es2022' }, module: { type: 'commonjs' } }],
  },
  // uuid ships ESM only; let swc turn it into CommonJS for jest's module system.
  transformIgnorePatterns: ['/node_modules/(?!uuid/)'],
  testTimeout: 30000,
  // End-to-end suites start real processes; two at a time fits a 2-core machine.
  maxWorkers: 2,
};
