import type { ToolDefinition } from '@mageagent/core';
import { BUILT_IN_TOOL_SPECS, checkToolRequest, requestToolSpec, toolSpecsFor } from './definitions';
import { searchTool } from './test-fixtures';

function builtIn(name: string) {
  const spec = BUILT_IN_TOOL_SPECS.find((candidate) => candidate.name === name);
  if (!spec) throw new Error(`no built-in ${name}`);
  return spec;
}

test('built-in tools publish strict JSON Schemas with descriptions and no dialect marker', () => {
  expect(BUILT_IN_TOOL_SPECS.map((spec) => spec.name)).toEqual(['Read', 'Write', 'Edit', 'Bash', 'Glob', 'Grep']);
  expect(builtIn('Glob').parameters).toEqual({
    type: 'object',
    properties: {
      pattern: { type: 'string', minLength: 1, description: 'Glob pattern, e.g. src/**/*.ts' },
      path: { type: 'string', minLength: 1, description: expect.any(String) },
    },
    required: ['pattern'],
    additionalProperties: false,
  });
  for (const spec of BUILT_IN_TOOL_SPECS) expect(spec.description).toBeTruthy();
});

test('built-in tools accept valid arguments and explain invalid ones', () => {
  expect(builtIn('Read').validate({ file_path: 'src/app.ts' })).toEqual({ ok: true, value: { file_path: 'src/app.ts' } });
  expect(builtIn('Edit').validate({ file_path: 'a.ts', old_string: 'x', new_string: '' })).toMatchObject({ ok: true });
  expect(builtIn('Read').validate({})).toEqual({ ok: false, errors: ['Read.file_path is required'] });
  expect(builtIn('Bash').validate({ command: '' })).toEqual({ ok: false, errors: ['Bash.command must not be empty'] });
  expect(builtIn('Glob').validate({ pattern: 3, extra: true })).toEqual({
    ok: false,
    errors: ['Glob.pattern must be a string', 'Glob has unknown arguments: extra'],
  });
  expect(builtIn('Write').validate('a.txt')).toEqual({ ok: false, errors: ['Write arguments must be a JSON object'] });
});

test('request tools are validated by ajv with readable messages', () => {
  const spec = requestToolSpec(searchTool);
  expect(spec).toMatchObject({ name: 'search', description: 'Search the web', parameters: searchTool.function.parameters });
  expect(spec.validate({ query: 'zod 4', limit: 3 })).toEqual({ ok: true, value: { query: 'zod 4', limit: 3 } });
  const invalid = spec.validate({ limit: 0, mode: 'slow', colour: 'red' });
  expect(invalid).toEqual({
    ok: false,
    errors: expect.arrayContaining([
      "search must have required property 'query'",
      'search must NOT have additional properties (colour)',
      'search.limit must be >= 1',
      'search.mode must be equal to one of the allowed values ("fast", "deep")',
    ]),
  });
  expect(spec.validate(['query'])).toEqual({ ok: false, errors: ['search arguments must be a JSON object'] });
});

test('a request tool without parameters takes any object; nested paths and 2020-12 schemas work', () => {
  const anything = requestToolSpec({ type: 'function', function: { name: 'ping' } });
  expect(anything.parameters).toEqual({ type: 'object' });
  expect(anything.validate({ whatever: [1] })).toMatchObject({ ok: true });
  expect(anything.validate(null)).toMatchObject({ ok: false });

  const nested = requestToolSpec({
    type: 'function',
    function: {
      name: 'deploy',
      parameters: {
        $schema: 'https://json-schema.org/draft/2020-12/schema',
        type: 'object',
        properties: { targets: { type: 'array', prefixItems: [{ type: 'string' }] } },
      },
    },
  });
  expect(nested.validate({ targets: [7] })).toEqual({ ok: false, errors: ['deploy.targets.0 must be string'] });
});

test('two requests reusing one $id with different schemas do not collide', () => {
  const first = requestToolSpec({
    type: 'function',
    function: { name: 'a', parameters: { $id: 'https://example.com/args', type: 'object', required: ['x'] } },
  });
  const second = requestToolSpec({
    type: 'function',
    function: { name: 'b', parameters: { $id: 'https://example.com/args', type: 'object', required: ['y'] } },
  });
  expect(first.validate({ x: 1 })).toMatchObject({ ok: true });
  expect(second.validate({ y: 1 })).toMatchObject({ ok: true });
  expect(second.validate({ x: 1 })).toMatchObject({ ok: false });
});

test('toolSpecsFor: built-ins by default, the request tools when given, none, named and required', () => {
  expect(toolSpecsFor({})).toMatchObject({ required: false, specs: BUILT_IN_TOOL_SPECS.map((spec) => ({ name: spec.name })) });
  expect(toolSpecsFor({ tools: [searchTool] })?.specs.map((spec) => spec.name)).toEqual(['search']);
  expect(toolSpecsFor({ toolChoice: 'none' })).toBeNull();
  expect(toolSpecsFor({ tools: [searchTool], toolChoice: 'none' })).toBeNull();
  expect(toolSpecsFor({ tools: [] })).toBeNull();
  expect(toolSpecsFor({ toolChoice: 'required' })?.required).toBe(true);
  expect(toolSpecsFor({ toolChoice: 'auto' })?.required).toBe(false);

  const named = toolSpecsFor({ toolChoice: { type: 'function', function: { name: 'Bash' } } });
  expect(named?.specs.map((spec) => spec.name)).toEqual(['Bash']);
  expect(named?.required).toBe(true);
  expect(() => toolSpecsFor({ tools: [searchTool], toolChoice: { type: 'function', function: { name: 'Bash' } } })).toThrow(
    expect.objectContaining({ code: 'VALIDATION_FAILED' }),
  );
});

test('checkToolRequest reports bad schemas, duplicate names and unknown tool choices', () => {
  expect(checkToolRequest()).toEqual([]);
  expect(checkToolRequest([searchTool], { type: 'function', function: { name: 'search' } })).toEqual([]);
  expect(checkToolRequest(undefined, { type: 'function', function: { name: 'Grep' } })).toEqual([]);

  const broken: ToolDefinition = { type: 'function', function: { name: 'broken', parameters: { type: 'objekt' } } };
  const remote: ToolDefinition = { type: 'function', function: { name: 'remote', parameters: { $ref: 'https://example.com/s.json' } } };
  const problems = checkToolRequest([searchTool, broken, searchTool, remote], { type: 'function', function: { name: 'fetch' } });
  expect(problems).toEqual([
    { path: 'tools.1.function.parameters', message: expect.stringMatching(/^tool "broken": parameters are not a usable JSON Schema: /) },
    { path: 'tools.2.function.name', message: 'duplicate tool name "search" (also tools.0)' },
    { path: 'tools.3.function.parameters', message: expect.stringContaining("can't resolve reference") },
    { path: 'toolChoice.function.name', message: 'toolChoice names "fetch", which is not in tools' },
  ]);

  expect(checkToolRequest(undefined, { type: 'function', function: { name: 'search' } })).toEqual([
    { path: 'toolChoice.function.name', message: 'toolChoice names "search", which is not a built-in tool (Read, Write, Edit, Bash, Glob, Grep)' },
  ]);
  expect(checkToolRequest([], 'required')).toEqual([{ path: 'toolChoice', message: 'toolChoice "required" needs at least one tool in tools' }]);
});

describe('the api checks tool schemas without compiling them, and agrees with the compile the worker does', () => {
  const DRAFT_2020 = 'https://json-schema.org/draft/2020-12/schema';
  const usable: Array<[string, Record<string, unknown>]> = [
    ['an object', { type: 'object' }],
    ['a pattern', { type: 'object', properties: { a: { type: 'string', pattern: '^a+\\p{L}$' } } }],
    ['pattern properties', { type: 'object', patternProperties: { '^x-': { type: 'string' } } }],
    ['a $defs reference', { type: 'object', $defs: { x: { type: 'string' } }, properties: { a: { $ref: '#/$defs/x' } } }],
    ['a recursive reference', { definitions: { n: { type: 'object', properties: { c: { $ref: '#/definitions/n' } } } }, $ref: '#/definitions/n' }],
    ['the root', { type: 'object', properties: { self: { $ref: '#' } } }],
    ['a pointer with escapes', { type: 'object', $defs: { 'a/b': { type: 'string' } }, properties: { a: { $ref: '#/$defs/a~1b' } } }],
    ['an anchor (2020-12)', { $schema: DRAFT_2020, type: 'object', $defs: { a: { $anchor: 'thing', type: 'string' } }, properties: { x: { $ref: '#thing' } } }],
    [
      'a root $id, and references through it',
      {
        $id: 'http://schemas.example/s.json',
        type: 'object',
        definitions: { a: { type: 'string' } },
        properties: { p: { $ref: 'http://schemas.example/s.json#/definitions/a' }, q: { $ref: 's.json#/definitions/a' } },
      },
    ],
    [
      'properties named like data keywords',
      { type: 'object', properties: { default: { type: 'string', pattern: '^a' }, enum: { $ref: '#/$defs/x' } }, $defs: { x: { type: 'integer' } } },
    ],
    ['a draft-07 anchor ($id "#name")', { type: 'object', definitions: { a: { $id: '#thing', type: 'string' } }, properties: { x: { $ref: '#thing' } } }],
    ['pattern-like data in enum and default', { type: 'object', properties: { a: { enum: [{ pattern: '[[' }], default: { $ref: 'nowhere' } } } }],
  ];
  const unusable: Array<[string, Record<string, unknown>, RegExp]> = [
    ['an unknown type', { type: 'objekt' }, /schema is invalid/],
    ['a bad pattern', { type: 'object', properties: { a: { type: 'string', pattern: '[unclosed' } } }, /not a valid regular expression/],
    ['a reference to nothing', { type: 'object', properties: { a: { $ref: '#/$defs/missing' } } }, /can't resolve reference/],
    ['a remote reference', { $ref: 'https://example.com/s.json' }, /can't resolve reference/],
    ['an unknown $schema', { $schema: 'http://json-schema.org/draft-04/schema#', type: 'object' }, /schema is invalid/],
    ['a $schema that is not a string', { $schema: 5, type: 'object' }, /schema is invalid/],
    [
      'a bad pattern under a property named default',
      { type: 'object', properties: { default: { type: 'string', pattern: '(' } } },
      /not a valid regular expression/,
    ],
    ['a reference to nothing under a property named enum', { type: 'object', properties: { enum: { $ref: '#/$defs/missing' } } }, /can't resolve reference/],
    [
      'a nested $id, which moves the base references resolve against',
      { definitions: { y: {} }, properties: { a: { $id: 'http://schemas.example/a', properties: { b: { $ref: '#/definitions/y' } } } } },
      /below the root/,
    ],
    ['an anchor name ajv refuses', { $schema: 'https://json-schema.org/draft/2019-09/schema', $defs: { a: { $anchor: 'a:b' } } }, /not a valid anchor name/],
    [
      'an anchor declared twice',
      { $schema: DRAFT_2020, $defs: { a: { $anchor: 'x', type: 'string' }, b: { $anchor: 'x', type: 'integer' } } },
      /declared more than once/,
    ],
    ['a meta-schema as $id', { $id: 'http://json-schema.org/draft-07/schema', type: 'object' }, /meta-schema/],
    ['an undeclared anchor', { $schema: DRAFT_2020, type: 'object', properties: { a: { $ref: '#nowhere' } } }, /can't resolve reference/],
  ];
  const tool = (parameters: Record<string, unknown>): ToolDefinition => ({ type: 'function', function: { name: 'probe', parameters } });

  test.each(usable)('%s: accepted, and it compiles', (_what, parameters) => {
    expect(checkToolRequest([tool(parameters)])).toEqual([]);
    expect(() => requestToolSpec(tool(parameters))).not.toThrow();
  });

  test('a pattern-properties key that is not a regular expression is refused (ajv would compile it, and fail on the first call)', () => {
    expect(checkToolRequest([tool({ type: 'object', patternProperties: { '(': {} } })])[0]?.message).toMatch(/"\(" is not a valid regular expression/);
  });

  test.each(unusable)('%s: refused with the reason, and it would not compile', (_what, parameters, reason) => {
    expect(checkToolRequest([tool(parameters)])).toEqual([
      { path: 'tools.0.function.parameters', message: expect.stringMatching(/^tool "probe": parameters are not a usable JSON Schema: /) },
    ]);
    expect(checkToolRequest([tool(parameters)])[0]?.message).toMatch(reason);
    expect(() => requestToolSpec(tool(parameters))).toThrow();
  });
});
