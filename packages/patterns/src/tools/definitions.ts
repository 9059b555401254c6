import { hash } from 'node:crypto';
import type { default as Ajv, ErrorObject, Options as AjvOptions, ValidateFunction } from 'ajv';
import { quote, ValidationError, z, type ToolChoice, type ToolDefinition } from '@mageagent/core';

/** A JSON Schema object, as tool parameters and `response_format` carry them. */
export type JsonSchema = Record<string, unknown>;

/** What checking a call's arguments against a tool's parameters gives. */
export type ToolArgumentsCheck = { ok: true; value: Record<string, unknown> } | { ok: false; errors: string[] };

/** A tool the extractor may call: what the model is shown, and how its arguments are checked. */
export interface ToolSpec {
  name: string;
  description?: string;
  /** JSON Schema of the arguments object, shown in the prompt and sent in `response_format`. */
  parameters: JsonSchema;
  /**
   * Checks a call's arguments. Errors read `<tool>.<path> <message>` (just `<tool> <message>` for
   * the arguments object itself), so a model shown them can correct its reply.
   */
  validate(args: unknown): ToolArgumentsCheck;
}

/** Which tools the extractor may call for a request, and whether it must call one. */
export interface ToolSelection {
  specs: ToolSpec[];
  /** Set by toolChoice `required` or a named function: an empty reply is then invalid. */
  required: boolean;
}

/** A reason to reject a request's tools up front, in the shape of the API's 400 `details`. */
export interface ToolRequestProblem {
  path: string;
  message: string;
}

function argumentError(tool: string, path: ReadonlyArray<PropertyKey>, message: string): string {
  return path.length === 0 ? `${tool} ${message}` : `${tool}.${path.map(String).join('.')} ${message}`;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

// Custom messages because the defaults ("Invalid input: expected string, received undefined")
// are harder for an 8B model to act on than "is required".
function stringArgument(description: string, options: { allowEmpty?: boolean } = {}) {
  const base = z.string({ error: (issue) => (issue.input === undefined ? 'is required' : 'must be a string') });
  return (options.allowEmpty ? base : base.min(1, 'must not be empty')).describe(description);
}

function argumentsObject<Shape extends z.ZodRawShape>(shape: Shape) {
  return z.strictObject(shape, {
    error: (issue) => (issue.code === 'unrecognized_keys' ? `has unknown arguments: ${issue.keys.join(', ')}` : 'arguments must be a JSON object'),
  });
}

function zodToolSpec(name: string, description: string, schema: z.ZodType<Record<string, unknown>>): ToolSpec {
  // `$schema` says 2020-12, which means nothing to the model and would clash when the
  // parameters are nested inside the response_format schema.
  const { $schema: _dialect, ...parameters } = z.toJSONSchema(schema);
  return {
    name,
    description,
    parameters,
    validate(args) {
      const parsed = schema.safeParse(args);
      if (parsed.success) return { ok: true, value: parsed.data };
      return { ok: false, errors: parsed.error.issues.map((issue) => argumentError(name, issue.path, issue.message)) };
    },
  };
}

/**
 * The tools extraction offers when the request brings none: the coding agent's file and shell
 * tools. Write's `content` and Edit's `new_string` may be empty (an empty file, a deletion).
 */
export const BUILT_IN_TOOL_SPECS: readonly ToolSpec[] = [
  zodToolSpec('Read', 'Read the contents of a file.', argumentsObject({ file_path: stringArgument('Path of the file to read') })),
  zodToolSpec(
    'Write',
    'Create a file, or overwrite an existing one, with the given content.',
    argumentsObject({
      file_path: stringArgument('Path of the file to write'),
      content: stringArgument('The complete new content of the file', { allowEmpty: true }),
    }),
  ),
  zodToolSpec(
    'Edit',
    'Replace an exact piece of text in a file with new text.',
    argumentsObject({
      file_path: stringArgument('Path of the file to edit'),
      old_string: stringArgument('The exact text to replace, as it appears in the file'),
      new_string: stringArgument('The text to put in its place (empty to delete it)', { allowEmpty: true }),
    }),
  ),
  zodToolSpec('Bash', 'Run a shell command.', argumentsObject({ command: stringArgument('The command line to run') })),
  zodToolSpec(
    'Glob',
    'Find files whose paths match a glob pattern.',
    argumentsObject({
      pattern: stringArgument('Glob pattern, e.g. src/**/*.ts'),
      path: stringArgument('Directory to search in; the working directory when absent').optional(),
    }),
  ),
  zodToolSpec(
    'Grep',
    'Search file contents for a regular expression.',
    argumentsObject({
      pattern: stringArgument('Regular expression to search for'),
      path: stringArgument('File or directory to search in; the working directory when absent').optional(),
    }),
  ),
];

/** What a request tool without `parameters` accepts: OpenAI treats it as taking any object. */
const ANY_OBJECT: JsonSchema = { type: 'object' };

const AJV_OPTIONS: AjvOptions = { allErrors: true, strict: false, logger: false };
type Dialect = 'draft7' | 'draft2019' | 'draft2020';
// One instance per JSON Schema dialect a client may name in `$schema`; draft-07 otherwise.
const ajvByDialect: Partial<Record<Dialect, Ajv>> = {};

/**
 * ajv is loaded, and each dialect's instance (with its meta-schemas) built, only when a request
 * first brings a tool of that dialect: loading ajv costs every api and worker process about 8 MB
 * of RSS, and a process that never sees request tools never needs it. `require` (not import) is
 * what makes it lazy; the bundles keep it as a require of the installed package.
 */
function createAjv(dialect: Dialect): Ajv {
  switch (dialect) {
    case 'draft2020': {
      const { default: Ajv2020 } = require('ajv/dist/2020') as typeof import('ajv/dist/2020');
      return new Ajv2020(AJV_OPTIONS);
    }
    case 'draft2019': {
      const { default: Ajv2019 } = require('ajv/dist/2019') as typeof import('ajv/dist/2019');
      return new Ajv2019(AJV_OPTIONS);
    }
    case 'draft7': {
      const { default: Ajv7 } = require('ajv') as typeof import('ajv');
      return new Ajv7(AJV_OPTIONS);
    }
  }
}

function ajvFor(schema: JsonSchema): Ajv {
  const declared = typeof schema.$schema === 'string' ? schema.$schema : '';
  const dialect: Dialect = declared.includes('2020-12') ? 'draft2020' : declared.includes('2019-09') ? 'draft2019' : 'draft7';
  return (ajvByDialect[dialect] ??= createAjv(dialect));
}

/** Requests repeat the same tools, and compiling is the slow part of ajv; bounded since clients choose the schemas. */
const VALIDATOR_CACHE_LIMIT = 256;
const validatorCache = new Map<string, ValidateFunction>();

/** Compiles a tool's parameters; throws ValidationError when ajv cannot. */
function compileParameters(tool: string, parameters: JsonSchema): ValidateFunction {
  const key = JSON.stringify(parameters);
  const cached = validatorCache.get(key);
  if (cached) {
    // Re-inserting keeps the map in least-recently-used order.
    validatorCache.delete(key);
    validatorCache.set(key, cached);
    return cached;
  }
  const ajv = ajvFor(parameters);
  let validator: ValidateFunction;
  try {
    validator = ajv.compile(parameters);
  } catch (error) {
    throw new ValidationError(`tool "${tool}": parameters are not a usable JSON Schema: ${(error as Error).message}`);
  } finally {
    // ajv keeps every compiled schema by identity and by `$id`: without this a long-lived worker
    // would grow without bound, and two requests reusing one `$id` would collide.
    ajv.removeSchema(parameters);
  }
  validatorCache.set(key, validator);
  if (validatorCache.size > VALIDATOR_CACHE_LIMIT) {
    const oldest = validatorCache.keys().next().value;
    if (oldest !== undefined) validatorCache.delete(oldest);
  }
  return validator;
}

function describeAjvError(tool: string, error: ErrorObject): string {
  const path = error.instancePath
    .split('/')
    .slice(1)
    .map((segment) => segment.replaceAll('~1', '/').replaceAll('~0', '~'));
  const params = error.params as { additionalProperty?: unknown; allowedValues?: unknown };
  let detail = '';
  if (error.keyword === 'additionalProperties') detail = ` (${String(params.additionalProperty)})`;
  if (error.keyword === 'enum' && Array.isArray(params.allowedValues)) {
    detail = ` (${params.allowedValues.map((value) => JSON.stringify(value)).join(', ')})`;
  }
  return argumentError(tool, path, `${error.message ?? 'is invalid'}${detail}`);
}

/** A request-supplied tool (OpenAI function format) as a ToolSpec, checked by ajv. */
export function requestToolSpec(definition: ToolDefinition): ToolSpec {
  const { name, description } = definition.function;
  const parameters = definition.function.parameters ?? ANY_OBJECT;
  const validator = compileParameters(name, parameters);
  return {
    name,
    ...(description !== undefined && { description }),
    parameters,
    validate(args) {
      // A schema such as `{}` accepts any value, but a call's arguments are always an object.
      if (!isPlainObject(args)) return { ok: false, errors: [argumentError(name, [], 'arguments must be a JSON object')] };
      if (validator(args)) return { ok: true, value: args };
      return { ok: false, errors: (validator.errors ?? []).map((error) => describeAjvError(name, error)) };
    },
  };
}

/**
 * The tools extraction may call for a request: the request's own tools, or the built-in set
 * when it brings none. Null when no tool may be called (toolChoice `none`, or an empty `tools`).
 * A named function restricts the set to that tool and, as with OpenAI, requires a call to it.
 * Throws ValidationError for what {@link checkToolRequest} reports, so run that first.
 */
export function toolSpecsFor(input: { tools?: ToolDefinition[]; toolChoice?: ToolChoice }): ToolSelection | null {
  const { tools, toolChoice } = input;
  if (toolChoice === 'none') return null;
  const specs = tools === undefined ? [...BUILT_IN_TOOL_SPECS] : tools.map(requestToolSpec);
  if (typeof toolChoice === 'object') {
    const wanted = toolChoice.function.name;
    const named = specs.filter((spec) => spec.name === wanted);
    if (named.length === 0) throw new ValidationError(`toolChoice names "${wanted}", which is not an available tool`);
    return { specs: named, required: true };
  }
  if (specs.length === 0) return null;
  return { specs, required: toolChoice === 'required' };
}

/** Keywords whose values are data, not schemas: nothing inside them is a pattern or a reference. */
const DATA_KEYWORDS = new Set(['enum', 'const', 'default', 'examples']);
/** Keywords whose value maps names to schemas: the names are not keywords. */
const SCHEMA_MAP_KEYWORDS = new Set(['properties', 'patternProperties', '$defs', 'definitions', 'dependentSchemas', 'dependencies']);
/** ajv's rule for anchor names (compile/resolve.ts), checked when it compiles. */
const ANCHOR_NAME = /^[a-z_][-a-z0-9._]*$/i;

/**
 * Why ajv could not compile `parameters`, found without compiling them: the dialect's meta-schema
 * (ajv's validateSchema), every regular expression (`pattern`, `patternProperties`, with the `u`
 * flag ajv uses), anchors (ajv's naming rule, each once), and every `$ref`, which must point into
 * the schema itself (`#`, `#/…`, a declared anchor, or the same through the root's `$id`).
 * `$id` is accepted at the root only: a nested one moves the base that references resolve
 * against, and ajv would keep it registered after the compile.
 *
 * Compiling generates and evaluates code, and costs about a hundred times as much: an
 * adversarial 60 KB schema took about 1 s (measured), and 128 of them in one request stalled
 * the api's event loop for 3 s. So the api checks this way, in time linear in the schema's size,
 * and the worker that runs the task compiles it first thing (see toolSpecsFor), failing the task
 * at once in the rare case this check lets through a schema ajv refuses.
 */
function parametersProblem(parameters: JsonSchema): string | undefined {
  const ajv = ajvFor(parameters);
  try {
    if (!ajv.validateSchema(parameters)) return `schema is invalid: ${ajv.errorsText(ajv.errors)}`;
  } catch (error) {
    // An unknown or malformed `$schema` (ajv knows draft-07, 2019-09 and 2020-12) throws.
    return `schema is invalid: ${(error as Error).message}`;
  }
  const rootId = typeof parameters.$id === 'string' ? parameters.$id : undefined;
  if (rootId !== undefined && /^https?:\/\/json-schema\.org\//.test(rootId)) return `$id ${quote(rootId)} names a JSON Schema meta-schema`;
  const anchors = new Set<string>();
  const references: string[] = [];
  const regExps: string[] = [];
  let problem: string | undefined;
  const addAnchor = (name: string) => {
    if (!ANCHOR_NAME.test(name)) problem ??= `anchor ${quote(name)} is not a valid anchor name`;
    else if (anchors.has(name)) problem ??= `anchor ${quote(name)} is declared more than once`;
    anchors.add(name);
  };
  const visitSchema = (node: unknown, isRoot: boolean): void => {
    if (Array.isArray(node)) {
      for (const item of node) visitSchema(item, false);
      return;
    }
    if (node === null || typeof node !== 'object') return;
    for (const [key, value] of Object.entries(node)) {
      if (DATA_KEYWORDS.has(key)) continue;
      if (SCHEMA_MAP_KEYWORDS.has(key) && value !== null && typeof value === 'object' && !Array.isArray(value)) {
        if (key === 'patternProperties') regExps.push(...Object.keys(value));
        for (const schema of Object.values(value)) visitSchema(schema, false);
        continue;
      }
      if (typeof value === 'string') {
        if (key === '$ref') references.push(value);
        else if (key === 'pattern') regExps.push(value);
        else if (key === '$anchor' || key === '$dynamicAnchor') addAnchor(value);
        else if (key === '$id' && value.startsWith('#')) addAnchor(value.slice(1));
        else if (key === '$id' && !isRoot) problem ??= `$id ${quote(value)} below the root (only the schema's root may have one)`;
        continue;
      }
      visitSchema(value, false);
    }
  };
  visitSchema(parameters, true);
  if (problem !== undefined) return problem;
  for (const source of regExps) {
    try {
      new RegExp(source, 'u');
    } catch {
      return `pattern "${quote(source)}" is not a valid regular expression`;
    }
  }
  for (const reference of references) {
    if (!resolvesWithin(parameters, reference, rootId, anchors)) {
      return `can't resolve reference ${quote(reference)} (only references into the schema itself: #, #/… or a declared anchor)`;
    }
  }
  return undefined;
}

/**
 * parametersProblem, remembered for the last schemas seen: clients send the same tools again and
 * again, and the OpenAI facade checks a request's tools twice (its own error shape first, then the
 * task's).
 */
const problemCache = new Map<string, string | null>();
function cachedParametersProblem(parameters: JsonSchema): string | undefined {
  // A digest, not the schema's text, as the key: the cache holds 256 small strings, whatever the schemas' size.
  const key = hash('sha256', JSON.stringify(parameters), 'base64');
  let problem = problemCache.get(key);
  if (problem === undefined) {
    problem = parametersProblem(parameters) ?? null;
    problemCache.set(key, problem);
    if (problemCache.size > VALIDATOR_CACHE_LIMIT) problemCache.delete(problemCache.keys().next().value as string);
  } else {
    // Re-inserting keeps the map in least-recently-used order.
    problemCache.delete(key);
    problemCache.set(key, problem);
  }
  return problem ?? undefined;
}

/**
 * Whether a reference points into `root`: `#` (or nothing), a JSON pointer `#/a/b`, or `#name` of
 * a declared anchor; directly, or through a URI that resolves against the root's `$id` to itself.
 */
function resolvesWithin(root: JsonSchema, reference: string, rootId: string | undefined, anchors: ReadonlySet<string>): boolean {
  const fragment = localFragment(reference, rootId);
  if (fragment === undefined) return false;
  if (fragment === '') return true;
  if (!fragment.startsWith('/')) return anchors.has(fragment);
  let node: unknown = root;
  for (const raw of fragment.slice(1).split('/')) {
    let segment: string;
    try {
      segment = decodeURIComponent(raw).replaceAll('~1', '/').replaceAll('~0', '~');
    } catch {
      return false;
    }
    if (node === null || typeof node !== 'object' || !Object.hasOwn(node, segment)) return false;
    node = (node as Record<string, unknown>)[segment];
  }
  return true;
}

/** The fragment of a reference into the schema itself (`''` for the root), else undefined. */
function localFragment(reference: string, rootId: string | undefined): string | undefined {
  if (reference === '') return '';
  if (reference.startsWith('#')) return reference.slice(1);
  if (rootId === undefined) return undefined;
  try {
    const base = new URL(rootId);
    const target = new URL(reference, base);
    if (target.href.split('#')[0] !== base.href.split('#')[0]) return undefined;
    return target.hash.slice(1);
  } catch {
    return undefined;
  }
}

/**
 * What is wrong with a request's tools, for the API to answer 400 before queueing a task that
 * could not run: parameters ajv cannot compile, duplicate names, a toolChoice naming no
 * available tool, or `required` with an empty `tools`. Empty when the request is fine.
 */
export function checkToolRequest(tools?: ToolDefinition[], toolChoice?: ToolChoice): ToolRequestProblem[] {
  const problems: ToolRequestProblem[] = [];
  const firstIndexByName = new Map<string, number>();
  tools?.forEach((tool, index) => {
    const { name, parameters } = tool.function;
    const firstIndex = firstIndexByName.get(name);
    if (firstIndex === undefined) firstIndexByName.set(name, index);
    else problems.push({ path: `tools.${index}.function.name`, message: `duplicate tool name "${name}" (also tools.${firstIndex})` });
    if (parameters === undefined) return;
    const problem = cachedParametersProblem(parameters);
    if (problem !== undefined) {
      problems.push({ path: `tools.${index}.function.parameters`, message: `tool "${name}": parameters are not a usable JSON Schema: ${problem}` });
    }
  });
  if (typeof toolChoice === 'object') {
    const wanted = toolChoice.function.name;
    const available = tools === undefined ? BUILT_IN_TOOL_SPECS.map((spec) => spec.name) : [...firstIndexByName.keys()];
    if (!available.includes(wanted)) {
      const where = tools === undefined ? `not a built-in tool (${available.join(', ')})` : 'not in tools';
      problems.push({ path: 'toolChoice.function.name', message: `toolChoice names "${wanted}", which is ${where}` });
    }
  } else if (toolChoice === 'required' && tools?.length === 0) {
    problems.push({ path: 'toolChoice', message: 'toolChoice "required" needs at least one tool in tools' });
  }
  return problems;
}
