/**
 * JSON values the simulator makes up to fit a JSON Schema: tool-call arguments and structured
 * answers. It aims at the schemas tools and response formats really use, not at all of JSON Schema:
 * a value that cannot be made to fit (an unsatisfiable `pattern`, say) comes out plausible instead.
 */

/** A value as JSON.parse returns it. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** A JSON Schema object, as tool definitions and response formats carry them. */
export type JsonSchema = Record<string, unknown>;

/**
 * Suggests a string for a property from what the prompt says (a path for `file_path`, a city for
 * `city`). Undefined leaves the value to the synthesiser; a suggestion that breaks the property's
 * constraints is passed over.
 */
export type PropertyHint = (propertyName: string, schema: JsonSchema) => string | undefined;

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * JSON the way chat models write it, with a space after each `:` and `,`. Besides looking right,
 * the spaces split the text into several tokens, so a structured answer streams at the model's pace.
 */
export function modelStyleJson(value: JsonValue): string {
  if (Array.isArray(value)) return `[${value.map(modelStyleJson).join(', ')}]`;
  if (isRecord(value)) {
    return `{${Object.entries(value)
      .map(([key, item]) => `${JSON.stringify(key)}: ${modelStyleJson(item)}`)
      .join(', ')}}`;
  }
  return JSON.stringify(value);
}

/** Lower-case words of an identifier: `file_path`, `filePath` and `file-path` all give ["file", "path"]. */
export function identifierWords(name: string): string[] {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter((word) => word !== '');
}

/** Types a schema allows, in its order; inferred from its keywords when `type` is absent. */
export function schemaTypes(schema: JsonSchema): string[] {
  if (typeof schema.type === 'string') return [schema.type];
  if (Array.isArray(schema.type)) return schema.type.filter((type): type is string => typeof type === 'string');
  if (isRecord(schema.properties) || Array.isArray(schema.required)) return ['object'];
  if (schema.items !== undefined || Array.isArray(schema.prefixItems)) return ['array'];
  if (['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf'].some((key) => key in schema)) {
    return ['number'];
  }
  return [];
}

/** Examples of the string formats tools use, with a check so a hint can be tested against the format. */
const FORMAT_EXAMPLES: Record<string, { example: string; test: RegExp }> = {
  'date-time': { example: '2024-01-01T00:00:00Z', test: /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/ },
  date: { example: '2024-01-01', test: /^\d{4}-\d{2}-\d{2}$/ },
  time: { example: '12:00:00Z', test: /^\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?$/ },
  email: { example: 'user@example.com', test: /^[^\s@]+@[^\s@]+\.[^\s@]+$/ },
  uri: { example: 'https://example.com', test: /^[a-z][a-z0-9+.-]*:\S+$/i },
  url: { example: 'https://example.com', test: /^[a-z][a-z0-9+.-]*:\S+$/i },
  'uri-reference': { example: 'https://example.com', test: /^\S+$/ },
  uuid: { example: '00000000-0000-4000-8000-000000000000', test: /^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$/i },
  hostname: { example: 'example.com', test: /^[a-z0-9.-]+$/i },
  ipv4: { example: '127.0.0.1', test: /^(\d{1,3}\.){3}\d{1,3}$/ },
  ipv6: { example: '::1', test: /^[0-9a-f:]+$/i },
};

/** Tried in turn when neither the hint nor the plain example fits a string's pattern. */
const FALLBACK_STRINGS = ['example', 'a', 'A', '0', 'a1', 'example-1', 'EXAMPLE', 'example_1'];

/** How deep nested schemas are followed; recursive `$ref`s stop here. */
const MAX_DEPTH = 12;

interface SynthesisContext {
  root: JsonSchema;
  hint: PropertyHint | undefined;
  depth: number;
}

/**
 * A value valid against `schema`: required properties only (plus optional ones the hint has a value
 * for), strings from the hint or a plausible example, numbers 1 moved into range, booleans true, the
 * first `enum` member, `const` as given, and arrays of one item (or `minItems`). Local `$ref`s
 * (`#/$defs/...`, `#/definitions/...`) are followed; `anyOf`/`oneOf` take their first non-null
 * branch and `allOf` merges its branches' properties.
 */
export function synthesiseValue(schema: unknown, hint?: PropertyHint): JsonValue {
  return synthesise(schema, { root: isRecord(schema) ? schema : {}, hint, depth: 0 }, undefined);
}

function synthesise(schema: unknown, context: SynthesisContext, propertyName: string | undefined): JsonValue {
  // `true` and `{}` accept anything; a string is as plausible as any value there.
  if (!isRecord(schema)) return plausibleString(propertyName);
  if ('const' in schema) return schema.const as JsonValue;
  if (Array.isArray(schema.enum) && schema.enum.length > 0) return schema.enum[0] as JsonValue;
  if (context.depth > MAX_DEPTH) return minimalValue(schema);
  const deeper: SynthesisContext = { ...context, depth: context.depth + 1 };

  if (typeof schema.$ref === 'string') {
    const target = resolveLocalReference(context.root, schema.$ref);
    if (target !== undefined) return synthesise({ ...withoutKeys(schema, ['$ref']), ...target }, deeper, propertyName);
  }
  if (Array.isArray(schema.allOf)) {
    return synthesise(mergeAllOf(schema, context.root), deeper, propertyName);
  }
  const branches = Array.isArray(schema.anyOf) ? schema.anyOf : Array.isArray(schema.oneOf) ? schema.oneOf : undefined;
  if (branches !== undefined && branches.length > 0) {
    const branch = branches.find((candidate) => !(isRecord(candidate) && candidate.type === 'null')) ?? branches[0];
    const base = withoutKeys(schema, ['anyOf', 'oneOf']);
    return synthesise(isRecord(branch) ? { ...base, ...branch } : base, deeper, propertyName);
  }

  const types = schemaTypes(schema);
  // A nullable property gets a real value: null is the least telling example of it.
  const type = types.find((candidate) => candidate !== 'null') ?? types[0] ?? 'string';
  switch (type) {
    case 'object':
      return synthesiseObject(schema, deeper);
    case 'array':
      return synthesiseArray(schema, deeper, propertyName);
    case 'integer':
      return numberInRange(schema, true);
    case 'number':
      return numberInRange(schema, false);
    case 'boolean':
      return true;
    case 'null':
      return null;
    default:
      return stringFor(schema, context, propertyName);
  }
}

function synthesiseObject(schema: JsonSchema, context: SynthesisContext): JsonValue {
  const properties = isRecord(schema.properties) ? schema.properties : {};
  const required = Array.isArray(schema.required) ? schema.required.filter((name): name is string => typeof name === 'string') : [];
  const result: { [key: string]: JsonValue } = {};
  for (const name of required) result[name] = synthesise(properties[name], context, name);
  const minimumProperties = typeof schema.minProperties === 'number' ? schema.minProperties : 0;
  for (const [name, propertySchema] of Object.entries(properties)) {
    if (name in result) continue;
    const wanted = Object.keys(result).length < minimumProperties;
    const hinted = isRecord(propertySchema) && fittingHint(propertySchema, context, name) !== undefined;
    if (wanted || hinted) result[name] = synthesise(propertySchema, context, name);
  }
  return result;
}

function synthesiseArray(schema: JsonSchema, context: SynthesisContext, propertyName: string | undefined): JsonValue {
  const tuple = Array.isArray(schema.prefixItems) ? schema.prefixItems : Array.isArray(schema.items) ? schema.items : undefined;
  if (tuple !== undefined) return tuple.map((item) => synthesise(item, context, propertyName));
  const minimum = typeof schema.minItems === 'number' ? schema.minItems : 0;
  const maximum = typeof schema.maxItems === 'number' ? schema.maxItems : Number.POSITIVE_INFINITY;
  const count = Math.min(Math.max(minimum, 1), maximum);
  const item = synthesise(schema.items, context, propertyName);
  return Array.from({ length: count }, () => item);
}

/** 1, moved into [minimum, maximum] and onto multipleOf. */
function numberInRange(schema: JsonSchema, integer: boolean): number {
  const step = integer ? 1 : 0.5;
  // Draft 4 writes exclusive bounds as booleans beside minimum/maximum.
  const minimum = typeof schema.minimum === 'number' ? schema.minimum : undefined;
  const maximum = typeof schema.maximum === 'number' ? schema.maximum : undefined;
  const exclusiveMinimum = typeof schema.exclusiveMinimum === 'number' ? schema.exclusiveMinimum : schema.exclusiveMinimum === true ? minimum : undefined;
  const exclusiveMaximum = typeof schema.exclusiveMaximum === 'number' ? schema.exclusiveMaximum : schema.exclusiveMaximum === true ? maximum : undefined;
  let value = 1;
  if (minimum !== undefined && value < minimum) value = minimum;
  if (exclusiveMinimum !== undefined && value <= exclusiveMinimum) value = exclusiveMinimum + step;
  if (maximum !== undefined && value > maximum) value = maximum;
  if (exclusiveMaximum !== undefined && value >= exclusiveMaximum) value = exclusiveMaximum - step;
  if (integer) value = Math.ceil(value);
  const multipleOf = typeof schema.multipleOf === 'number' && schema.multipleOf > 0 ? schema.multipleOf : undefined;
  if (multipleOf !== undefined) {
    const upward = Math.ceil(value / multipleOf) * multipleOf;
    const upperBound = Math.min(maximum ?? Number.POSITIVE_INFINITY, exclusiveMaximum ?? Number.POSITIVE_INFINITY);
    value = upward > upperBound || upward === exclusiveMaximum ? Math.floor(value / multipleOf) * multipleOf : upward;
  }
  return value;
}

function stringFor(schema: JsonSchema, context: SynthesisContext, propertyName: string | undefined): string {
  const hinted = propertyName === undefined ? undefined : fittingHint(schema, context, propertyName);
  if (hinted !== undefined) return hinted;
  const format = typeof schema.format === 'string' ? FORMAT_EXAMPLES[schema.format] : undefined;
  const candidates = [format?.example ?? plausibleString(propertyName), ...FALLBACK_STRINGS];
  for (const candidate of candidates) {
    const fitted = fitLength(candidate, schema);
    if (matchesPattern(fitted, schema)) return fitted;
  }
  return fitLength(candidates[0] ?? 'example', schema);
}

/** The hint for a property when it satisfies the property's string constraints. */
function fittingHint(schema: JsonSchema, context: SynthesisContext, propertyName: string): string | undefined {
  if (context.hint === undefined) return undefined;
  const types = schemaTypes(schema);
  if (types.length > 0 && !types.includes('string')) return undefined;
  if ('const' in schema || 'enum' in schema) return undefined;
  const hint = context.hint(propertyName, schema);
  if (hint === undefined || hint === '') return undefined;
  if (typeof schema.minLength === 'number' && hint.length < schema.minLength) return undefined;
  if (typeof schema.maxLength === 'number' && hint.length > schema.maxLength) return undefined;
  const format = typeof schema.format === 'string' ? FORMAT_EXAMPLES[schema.format] : undefined;
  if (format !== undefined && !format.test.test(hint)) return undefined;
  return matchesPattern(hint, schema) ? hint : undefined;
}

function plausibleString(propertyName: string | undefined): string {
  const words = propertyName === undefined ? [] : identifierWords(propertyName);
  return words.length === 0 ? 'example' : `example ${words.join(' ')}`;
}

function fitLength(text: string, schema: JsonSchema): string {
  let fitted = text;
  if (typeof schema.minLength === 'number' && fitted.length < schema.minLength) {
    fitted = fitted.padEnd(schema.minLength, 'x');
  }
  if (typeof schema.maxLength === 'number' && fitted.length > schema.maxLength) {
    fitted = fitted.slice(0, schema.maxLength);
  }
  return fitted;
}

function matchesPattern(text: string, schema: JsonSchema): boolean {
  if (typeof schema.pattern !== 'string') return true;
  try {
    return new RegExp(schema.pattern, 'u').test(text);
  } catch {
    // A pattern JavaScript cannot compile cannot be checked here; the validator will say.
    return true;
  }
}

/** The smallest value of the schema's type, where recursion has to stop. */
function minimalValue(schema: JsonSchema): JsonValue {
  const type = schemaTypes(schema)[0];
  if (type === 'object') return {};
  if (type === 'array') return [];
  if (type === 'integer' || type === 'number') return numberInRange(schema, type === 'integer');
  if (type === 'boolean') return true;
  if (type === 'null') return null;
  return 'example';
}

function resolveLocalReference(root: JsonSchema, reference: string): JsonSchema | undefined {
  if (!reference.startsWith('#')) return undefined;
  let target: unknown = root;
  for (const segment of reference
    .slice(1)
    .split('/')
    .filter((part) => part !== '')) {
    if (!isRecord(target)) return undefined;
    target = target[decodeURIComponent(segment).replace(/~1/g, '/').replace(/~0/g, '~')];
  }
  return isRecord(target) ? target : undefined;
}

function mergeAllOf(schema: JsonSchema, root: JsonSchema): JsonSchema {
  const merged: JsonSchema = withoutKeys(schema, ['allOf']);
  const properties: Record<string, unknown> = isRecord(schema.properties) ? { ...schema.properties } : {};
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);
  for (const part of schema.allOf as unknown[]) {
    const branch = isRecord(part) && typeof part.$ref === 'string' ? resolveLocalReference(root, part.$ref) : part;
    if (!isRecord(branch)) continue;
    for (const [key, value] of Object.entries(branch)) {
      if (key === 'properties' && isRecord(value)) Object.assign(properties, value);
      else if (key === 'required' && Array.isArray(value)) for (const name of value) required.add(name);
      else if (!(key in merged)) merged[key] = value;
    }
  }
  if (Object.keys(properties).length > 0) merged.properties = properties;
  if (required.size > 0) merged.required = [...required];
  return merged;
}

function withoutKeys(schema: JsonSchema, keys: string[]): JsonSchema {
  const copy: JsonSchema = { ...schema };
  for (const key of keys) delete copy[key];
  return copy;
}
