import path from 'node:path';
import { interpolateEnv, loadModelsConfig, parseModelsConfig } from './config';

const CONFIG_DIR = path.resolve(__dirname, '../../../config');

test('the shipped configs load: the guide stack fits its 128 GB Mac, the simulator config points at SIM_PORT', () => {
  const example = loadModelsConfig(path.join(CONFIG_DIR, 'models.example.yaml'), {});
  expect(Object.keys(example.roles)).toEqual(['primary', 'competitor', 'validator', 'tools']);
  expect(Object.values(example.roles).reduce((sum, role) => sum + role.memoryGB, 0)).toBe(109);
  expect(example.roles.primary?.endpoint).toBe('http://127.0.0.1:8080/v1');
  const sim = loadModelsConfig(path.join(CONFIG_DIR, 'models.sim.yaml'), { SIM_PORT: '4999' });
  expect(sim.roles.validator?.endpoint).toBe('http://127.0.0.1:4999/v1');
});

const minimal = (extra = '') => `
hosts:
  mac: { memoryGB: 64, headroomGB: 8 }
roles:
  primary: { model: m, endpoint: "http://127.0.0.1:1/v1", host: mac, memoryGB: 40 ${extra} }
`;

test('defaults fill what a role leaves out', () => {
  const config = parseModelsConfig(minimal(), 'inline.yaml', {});
  expect(config.roles.primary).toMatchObject({
    contextLength: 32768,
    temperature: 0.7,
    maxTokens: 2048,
    structuredOutput: false,
    timeouts: { firstTokenMs: 120000, totalMs: 600000 },
  });
  expect(config.hosts.mac?.maxConcurrentGenerations).toBe(1);
});

test('a bad field is named by its path and the file', () => {
  expect(() => parseModelsConfig(minimal(', temperature: 9'), 'bad.yaml', {})).toThrow(/bad\.yaml: invalid model config: roles\.primary\.temperature/);
  expect(() => parseModelsConfig(minimal(', typo: 1'), 'bad.yaml', {})).toThrow(/roles\.primary/);
  expect(() => parseModelsConfig(minimal().replace('host: mac', 'host: elsewhere'), 'bad.yaml', {})).toThrow(
    /roles\.primary\.host: host "elsewhere" is not declared/,
  );
  expect(() => parseModelsConfig('roles: [', 'broken.yaml', {})).toThrow(/broken\.yaml: not valid YAML or JSON/);
});

test('models that do not fit their host are refused, naming the host and the sum', () => {
  const crowded = `
hosts:
  mac: { memoryGB: 64, headroomGB: 8 }
roles:
  primary: { model: a, endpoint: "http://127.0.0.1:1/v1", host: mac, memoryGB: 40 }
  competitor: { model: b, endpoint: "http://127.0.0.1:2/v1", host: mac, memoryGB: 18 }
`;
  expect(() => parseModelsConfig(crowded, 'crowded.yaml', {})).toThrow(/host "mac" need 58 GB .* = 56 GB/);
});

test('a model shared by two roles is resident once', () => {
  const shared = minimal().replace('roles:\n', 'roles:\n  validator: { model: m, endpoint: "http://127.0.0.1:1/v1", host: mac, memoryGB: 40 }\n');
  expect(() => parseModelsConfig(shared, 'shared.yaml', {})).not.toThrow();
});

test('environment interpolation: values, defaults, and a clear error for a missing variable', () => {
  expect(interpolateEnv('a ${X} b ${Y:-def}', { X: '1' })).toBe('a 1 b def');
  expect(() => interpolateEnv('${MISSING}', {})).toThrow(/MISSING/);
});
