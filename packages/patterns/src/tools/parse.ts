import { jsonrepair } from 'jsonrepair';

/** A tool call as the model wrote it, before its tool and arguments are checked. */
export interface RawToolCall {
  tool: string;
  /** Usually an object; whatever the model wrote when it is not (validation reports it). */
  arguments: unknown;
}

/** The tool calls found in a reply and the text around them, or why none could be read. */
export type ToolCallsParse = { ok: true; calls: RawToolCall[]; prose: string } | { ok: false; error: string };

const EXPECTED_SHAPE = 'expected a JSON array [{"tool": "<name>", "arguments": {...}}]';

/**
 * Reads tool calls out of a model's reply. Accepts what small models actually write: reasoning
 * in `<think>` blocks, ``` fences, prose around the JSON, near-JSON (trailing commas, single
 * quotes, ...), Hermes `<tool_call>` blocks, a bare array, `{"tool_calls": [...]}` or
 * `{"calls": [...]}`, or a single call; each call as `{tool, arguments}`, `{name, arguments}` or
 * OpenAI's `{function: {name, arguments}}`, with arguments as an object or a JSON string.
 * `prose` is the reply outside the JSON (and outside any reasoning).
 */
export function parseToolCalls(text: string): ToolCallsParse {
  if (text.trim() === '') return { ok: false, error: 'the reply was empty' };
  const visible = withoutReasoning(text);
  if (visible.trim() === '') return { ok: false, error: 'the reply has nothing but reasoning' };
  return parseHermesBlocks(visible) ?? parseEmbeddedJson(visible);
}

/** Drops `<think>` blocks, and everything before a lone `</think>` (the template opened it). */
function withoutReasoning(text: string): string {
  const closed = text.replace(/<think>[\s\S]*?<\/think>/gi, '');
  const loneClose = closed.search(/<\/think>/i);
  const afterLoneClose = loneClose < 0 ? closed : closed.slice(loneClose + '</think>'.length);
  // An unclosed <think> means the reply was cut off while reasoning: nothing after it counts.
  const unclosed = afterLoneClose.search(/<think>/i);
  return unclosed < 0 ? afterLoneClose : afterLoneClose.slice(0, unclosed);
}

/** Hermes-3's native format, one `<tool_call>{...}</tool_call>` per call. */
function parseHermesBlocks(text: string): ToolCallsParse | undefined {
  const blocks = [...text.matchAll(/<tool_call>([\s\S]*?)<\/tool_call>/gi)];
  if (blocks.length === 0) return undefined;
  const calls: RawToolCall[] = [];
  for (const [index, block] of blocks.entries()) {
    const found = findToolCalls(block[1] ?? '');
    if (!found.ok) return { ok: false, error: `<tool_call> block ${index + 1}: ${found.error}` };
    calls.push(...found.calls);
  }
  return { ok: true, calls, prose: tidyProse(text.replace(/<tool_call>[\s\S]*?<\/tool_call>/gi, '\n')) };
}

function parseEmbeddedJson(text: string): ToolCallsParse {
  // A fenced block is where the model meant its answer to be, so it wins over brackets in prose.
  for (const fence of text.matchAll(/```[\w-]*[^\S\n]*\n?([\s\S]*?)```/g)) {
    const found = findToolCalls(fence[1] ?? '');
    if (found.ok) return { ok: true, calls: found.calls, prose: cutOut(text, fence.index, fence.index + fence[0].length) };
  }
  const found = findToolCalls(text);
  if (!found.ok) return found;
  return { ok: true, calls: found.calls, prose: cutOut(text, found.start, found.end) };
}

type Found = { ok: true; calls: RawToolCall[]; start: number; end: number } | { ok: false; error: string };

/** Bounds the work on pathological replies: every try scans to the end of the text at most. */
const MAX_CANDIDATES = 200;

/**
 * The first JSON value in the text that holds tool calls. Candidates are found by bracket
 * matching that skips over strings, so brackets inside arguments (code, regexes) and brackets
 * in the prose before the JSON do not confuse it the way a greedy regex would.
 */
function findToolCalls(text: string): Found {
  let sawJson = false;
  let sawBrokenJson = false;
  let sawUnclosed = false;
  let position = 0;
  for (let tries = 0; tries < MAX_CANDIDATES; tries += 1) {
    const start = text.slice(position).search(/[[{]/);
    if (start < 0) break;
    const absoluteStart = position + start;
    const end = matchingBracketEnd(text, absoluteStart);
    if (end === undefined) {
      sawUnclosed = true;
      position = absoluteStart + 1;
      continue;
    }
    const value = parseLenientJson(text.slice(absoluteStart, end));
    if (value === undefined) {
      sawBrokenJson = true;
      position = absoluteStart + 1;
      continue;
    }
    const reading = readCalls(value);
    if (reading.kind === 'calls') return { ok: true, calls: reading.calls, start: absoluteStart, end };
    if (reading.kind === 'malformed') return { ok: false, error: reading.error };
    sawJson = true;
    // Not tool calls: skip the whole value, so arrays nested in it are not mistaken for them.
    position = end;
  }
  if (sawJson) return { ok: false, error: `the reply has JSON but no tool calls; ${EXPECTED_SHAPE}` };
  if (sawBrokenJson) return { ok: false, error: `the JSON in the reply could not be parsed; ${EXPECTED_SHAPE}` };
  if (sawUnclosed) return { ok: false, error: 'the JSON in the reply is not closed (was the reply cut off?)' };
  return { ok: false, error: `the reply contains no JSON; ${EXPECTED_SHAPE}` };
}

const CLOSER: Record<string, string> = { '[': ']', '{': '}' };

/** Index just past the bracket closing the one at `start`; undefined if it never closes or closes wrong. */
function matchingBracketEnd(text: string, start: number): number | undefined {
  const expected: string[] = [];
  let quote: string | undefined;
  let previous = '';
  for (let index = start; index < text.length; index += 1) {
    const character = text[index] ?? '';
    if (quote !== undefined) {
      if (character === '\\') index += 1;
      else if (character === quote) quote = undefined;
      continue;
    }
    // Single quotes open a string only where a value or key may start, so an apostrophe in
    // unquoted near-JSON text does not swallow the rest of the reply.
    if (character === '"' || (character === "'" && '[{,:'.includes(previous))) quote = character;
    else if (character === '[' || character === '{') expected.push(CLOSER[character] ?? '');
    else if (character === ']' || character === '}') {
      if (expected.pop() !== character) return undefined;
      if (expected.length === 0) return index + 1;
    }
    if (!/\s/.test(character)) previous = character;
  }
  return undefined;
}

/** Parses JSON, repairing near-JSON; undefined when even jsonrepair cannot make sense of it. */
function parseLenientJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    try {
      return JSON.parse(jsonrepair(text));
    } catch {
      return undefined;
    }
  }
}

type CallsReading = { kind: 'calls'; calls: RawToolCall[] } | { kind: 'malformed'; error: string } | { kind: 'other' };

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function callName(value: unknown): string | undefined {
  if (!isObject(value)) return undefined;
  const name = isObject(value.function) ? value.function.name : (value.tool ?? value.name);
  return typeof name === 'string' && name.trim() !== '' ? name.trim() : undefined;
}

function readCalls(value: unknown): CallsReading {
  if (Array.isArray(value)) return readCallArray(value, false);
  if (!isObject(value)) return { kind: 'other' };
  const list = value.tool_calls ?? value.calls;
  // The key says these are tool calls, so anything else in the list is a mistake to report.
  if (Array.isArray(list)) return readCallArray(list, true);
  const name = callName(value);
  return name === undefined ? { kind: 'other' } : { kind: 'calls', calls: [toRawCall(value, name)] };
}

function readCallArray(items: unknown[], declared: boolean): CallsReading {
  const names = items.map(callName);
  if (!declared && items.length > 0 && names.every((name) => name === undefined)) return { kind: 'other' };
  const calls: RawToolCall[] = [];
  for (const [index, item] of items.entries()) {
    const name = names[index];
    if (name === undefined || !isObject(item)) {
      return { kind: 'malformed', error: `item ${index + 1} of the array is not a tool call; ${EXPECTED_SHAPE}` };
    }
    calls.push(toRawCall(item, name));
  }
  return { kind: 'calls', calls };
}

const CALL_KEYS = new Set(['tool', 'name', 'id', 'type']);

function toRawCall(item: Record<string, unknown>, tool: string): RawToolCall {
  const source = isObject(item.function) ? item.function : item;
  if ('arguments' in source) return { tool, arguments: readArguments(source.arguments) };
  // Small models sometimes write the arguments beside the name: {"tool": "Read", "file_path": "a"}.
  const flat = Object.fromEntries(Object.entries(source).filter(([key]) => !CALL_KEYS.has(key)));
  return { tool, arguments: flat };
}

/** OpenAI sends arguments as a JSON string; an unreadable one is passed on for validation to reject. */
function readArguments(value: unknown): unknown {
  if (typeof value !== 'string') return value ?? {};
  if (value.trim() === '') return {};
  const parsed = parseLenientJson(value);
  return isObject(parsed) ? parsed : value;
}

function cutOut(text: string, start: number, end: number): string {
  return tidyProse(`${text.slice(0, start)}\n${text.slice(end)}`);
}

/** Stray fence lines (an unclosed fence) and blank runs are left-overs of the cut, not prose. */
function tidyProse(text: string): string {
  return text
    .replace(/^[^\S\n]*```[\w-]*[^\S\n]*$/gm, '')
    .replace(/\n{3,}/g, '\n\n')
    .trim();
}
