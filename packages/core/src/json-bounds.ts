import type { z } from 'zod';

/** How big and how deep a free-form JSON value may be. */
export interface JsonBounds {
  /** Nesting of objects and arrays: `{}` is depth 1, `{"a": []}` depth 2. */
  maxDepth: number;
  /** Approximate size of the value written as JSON, in characters. */
  maxChars: number;
}

/** What is wrong with a value, or undefined when it fits its bounds. */
export function checkJsonBounds(value: unknown, bounds: JsonBounds): string | undefined {
  // Iterative on purpose: the point is to refuse values whose nesting would overflow the stack of
  // the recursive code that reads them later (JSON.stringify, ajv, loggers), so this must not.
  const stack: Array<{ value: unknown; depth: number }> = [{ value, depth: 0 }];
  let chars = 0;
  while (stack.length > 0) {
    const { value: current, depth } = stack.pop() as { value: unknown; depth: number };
    if (current === null || typeof current !== 'object') {
      chars += typeof current === 'string' ? current.length + 2 : String(current).length;
    } else {
      if (depth + 1 > bounds.maxDepth) return `is nested deeper than ${bounds.maxDepth} levels`;
      chars += 2;
      if (Array.isArray(current)) {
        for (const item of current) stack.push({ value: item, depth: depth + 1 });
        chars += current.length;
      } else {
        for (const [key, item] of Object.entries(current)) {
          chars += key.length + 4;
          stack.push({ value: item, depth: depth + 1 });
        }
      }
    }
    if (chars > bounds.maxChars) return `is larger than ${bounds.maxChars} characters as JSON`;
  }
  return undefined;
}

/**
 * A schema refined with depth and size bounds, checked at validation time so an oversized or
 * pathologically nested field is a 400 naming the field, never a failure further down.
 */
export function boundedJson<Schema extends z.ZodType>(schema: Schema, bounds: JsonBounds): Schema {
  return schema.superRefine((value, context) => {
    const problem = checkJsonBounds(value, bounds);
    if (problem !== undefined) context.addIssue({ code: 'custom', message: `${problem}`, input: undefined });
  }) as unknown as Schema;
}

/** Free-form metadata stored with a task: small, shallow. */
export const METADATA_BOUNDS: JsonBounds = { maxDepth: 8, maxChars: 16_384 };
/** A JSON Schema (tool parameters, response formats): schemas nest, but not without end. */
export const JSON_SCHEMA_BOUNDS: JsonBounds = { maxDepth: 32, maxChars: 65_536 };
