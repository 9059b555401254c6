import {
  JUDGE_INSTRUCTION,
  PREVIOUS_REVIEW_HEADING,
  REVIEW_INSTRUCTION,
  ROUTER_INSTRUCTION,
  TOOLS_INSTRUCTION,
  TOOLS_RETRY_LEAD,
} from '@mageagent/patterns/src/prompts';
import { stripDirectives, textDirective, type Directives } from './directives';
import { isRecord, modelStyleJson, synthesiseValue, type JsonValue, type PropertyHint } from './schema-values';
import type { AnswerGenerator, GeneratedAnswer, SimulatedChatRequest, SimulatedModel } from './simulator';
import { fnv1a, generateProse } from './text';
import { chooseToolCalls, invalidToolCalls, parseToolList, renderToolCalls, type ToolsReplyStyle } from './tool-calls';

/**
 * Answers in role: a pattern step's prompt says what the call is for (the "contract" sentences of
 * the pattern prompts), and directives in the user's request say how the simulated model should
 * behave in that role, so tests and benchmarks can drive every branch of a pattern on purpose.
 */

/** What a call is for, read from its system prompt. */
export type CallRole = 'reviewer' | 'judge' | 'tools' | 'router';

/**
 * The role a system prompt asks for, or undefined for an ordinary answer. The tool extractor is
 * checked first because its prompt quotes tool descriptions, the one place another role's
 * sentence could turn up.
 */
export function detectCallRole(systemText: string): CallRole | undefined {
  if (systemText === '') return undefined;
  if (systemText.includes(TOOLS_INSTRUCTION)) return 'tools';
  if (systemText.includes(REVIEW_INSTRUCTION)) return 'reviewer';
  if (systemText.includes(JUDGE_INSTRUCTION)) return 'judge';
  if (systemText.includes(ROUTER_INSTRUCTION)) return 'router';
  return undefined;
}

/** The system (and developer) messages of a call, where a step states what the call is for. */
export function systemTextOf(request: SimulatedChatRequest): string {
  return request.messages
    .filter((message) => message.role === 'system' || message.role === 'developer')
    .map((message) => message.content)
    .join('\n');
}

/** The simulator's default generator: a role's answer when the prompt asks for one, else prose (or JSON when asked). */
export const generateInRole: AnswerGenerator = (request, directives, model) => {
  const systemText = systemTextOf(request);
  switch (detectCallRole(systemText)) {
    case 'reviewer':
      return stop(reviewAnswer(request, directives));
    case 'judge':
      return stop(judgeAnswer(request, directives));
    case 'tools':
      return stop(toolsAnswer(request, directives, systemText));
    case 'router':
      return stop(routerAnswer(request, directives, systemText));
    default:
      return structuredOrProse(request, directives, model);
  }
};

function stop(text: string): GeneratedAnswer {
  return { text, finishReason: 'stop' };
}

// ---------------------------------------------------------------------------------------------
// Reading the prompt

function lastUserMessage(request: SimulatedChatRequest): string {
  for (let index = request.messages.length - 1; index >= 0; index -= 1) {
    const message = request.messages[index];
    if (message?.role === 'user') return message.content;
  }
  return '';
}

/** The text of `quote(heading, text)` from the pattern prompts, in the first user message that has one. */
function quotedSection(request: SimulatedChatRequest, heading: string): string | undefined {
  const opening = `${heading}\n<<<\n`;
  for (const message of request.messages) {
    if (message.role !== 'user') continue;
    const start = message.content.indexOf(opening);
    if (start === -1) continue;
    const from = start + opening.length;
    const end = message.content.indexOf('\n>>>', from);
    return message.content.slice(from, end === -1 ? undefined : end);
  }
  return undefined;
}

/** The user's request as the step quotes it, without directives; the last user message when nothing is quoted. */
function quotedRequest(request: SimulatedChatRequest): string {
  return stripDirectives(quotedSection(request, 'Request:') ?? lastUserMessage(request)).trim();
}

/** One of the sentences, the same one every time for the same conversation. */
function pick(request: SimulatedChatRequest, sentences: readonly string[]): string {
  return sentences[fnv1a(lastUserMessage(request)) % sentences.length] ?? sentences[0] ?? '';
}

// ---------------------------------------------------------------------------------------------
// Reviewer

const PASS_REASONS = [
  'The answer addresses every part of the request and the details are correct.',
  'The answer is correct and complete, and it handles the edge cases the request implies.',
  'The answer does what the request asks, and nothing important is missing.',
] as const;

const FAIL_REASONS = [
  'The answer is missing error handling for invalid input.\nIt also leaves out the edge case of an empty input.',
  'The answer does not cover every part of the request.\nOne of the steps it describes is wrong.',
  'The answer skips validation of its inputs.\nIt also gives no example of the result.',
] as const;

/** Deliberately neither verdict, so the pattern's handling of an unreadable review is exercised. */
const UNREADABLE_REVIEW = 'I looked over the answer and have some thoughts about its structure and naming.';

function reviewAnswer(request: SimulatedChatRequest, directives: Directives): string {
  const mode = textDirective(directives, 'validator');
  if (mode === 'garbage') return UNREADABLE_REVIEW;
  // A re-review quotes the earlier review, so fail-once can tell the first review from the next.
  const firstReview = !lastUserMessage(request).includes(PREVIOUS_REVIEW_HEADING);
  const fails = mode === 'fail' || (mode === 'fail-once' && firstReview);
  return fails ? `FAIL\n${pick(request, FAIL_REASONS)}` : `PASS\n${pick(request, PASS_REASONS)}`;
}

// ---------------------------------------------------------------------------------------------
// Judge

const JUDGE_REASONS = [
  'it is more complete and handles the edge cases more carefully.',
  'it answers the request more directly and its code is easier to follow.',
  'it is correct where the other solution is vague.',
] as const;

/** Not a verdict: a sentence rather than a lone letter, and not starting with A or B, so a loose parser cannot read one into it. */
const UNREADABLE_JUDGEMENT = 'Hard to say: both solutions have merit.';

function judgeAnswer(request: SimulatedChatRequest, directives: Directives): string {
  const value = textDirective(directives, 'judge');
  if (value === 'garbage') return UNREADABLE_JUDGEMENT;
  const letter = value !== undefined && /^[a-z]$/.test(value) ? value.toUpperCase() : 'A';
  return `${letter}\nSolution ${letter} is better because ${pick(request, JUDGE_REASONS)}`;
}

// ---------------------------------------------------------------------------------------------
// Tool extractor

const TOOLS_MODES = ['valid', 'fenced', 'prose', 'invalid', 'invalid-once', 'none'] as const;
type ToolsMode = (typeof TOOLS_MODES)[number];

function toolsMode(directives: Directives): ToolsMode {
  const value = textDirective(directives, 'tools');
  return TOOLS_MODES.find((mode) => mode === value) ?? 'valid';
}

function responseFormatType(request: SimulatedChatRequest): string | undefined {
  const format = request.body.response_format;
  return isRecord(format) && typeof format.type === 'string' ? format.type : undefined;
}

function toolsAnswer(request: SimulatedChatRequest, directives: Directives, systemText: string): string {
  const mode = toolsMode(directives);
  const asObject = responseFormatType(request) === 'json_schema';
  if (mode === 'none') return renderToolCalls([], 'bare', asObject);
  const tools = parseToolList(systemText);
  const calls = chooseToolCalls(tools, quotedRequest(request), stripDirectives(quotedSection(request, 'Answer:') ?? ''));
  const retrying = lastUserMessage(request).startsWith(TOOLS_RETRY_LEAD);
  if (mode === 'invalid' || (mode === 'invalid-once' && !retrying)) {
    return renderToolCalls(invalidToolCalls(tools, calls), 'bare', asObject);
  }
  const style: ToolsReplyStyle = mode === 'fenced' ? 'fenced' : mode === 'prose' ? 'prose' : 'bare';
  return renderToolCalls(calls, style, asObject);
}

// ---------------------------------------------------------------------------------------------
// Router

/** Used when the router prompt lists no route this simulator can read. */
const DEFAULT_ROUTES = ['coding', 'reasoning', 'general'] as const;

const CODING_REQUEST =
  /\b(?:implement(?:s|ed|ing|ation)?|functions?|class(?:es)?|refactor(?:s|ed|ing)?|fix(?:es|ed|ing)?\s+(?:(?:a|the|this|that|my)\s+)?bugs?)\b|```/i;
const REASONING_REQUEST =
  /\b(?:explain(?:s|ed|ing)?|analy[sz](?:e|es|ed|ing|is)|plan(?:s|ned|ning)?|design(?:s|ed|ing)?|architecture|compar(?:e|es|ed|ing|ison))\b/i;

const ROUTE_REASONS: Record<string, string> = {
  coding: 'The request asks for code to be written or changed.',
  reasoning: 'The request asks for explanation, analysis or a plan.',
  general: 'The request is a general question without code or deep analysis.',
};

/** Route names from "Classify the request into one route: coding, reasoning, general." */
function listedRoutes(systemText: string): string[] {
  const start = systemText.indexOf(ROUTER_INSTRUCTION) + ROUTER_INSTRUCTION.length;
  const lineEnd = systemText.indexOf('\n', start);
  const line = systemText.slice(start, lineEnd === -1 ? undefined : lineEnd);
  const routes = line
    .slice(line.lastIndexOf(':') + 1)
    .replace(/\.\s*$/, '')
    .split(',')
    .map((route) => route.trim())
    .filter((route) => /^[\w-]+$/.test(route));
  return routes.length > 0 ? routes : [...DEFAULT_ROUTES];
}

/** What keywords say the request is; a category the prompt does not list becomes its last route. */
function classify(request: string, routes: string[]): string {
  const category = CODING_REQUEST.test(request) ? 'coding' : REASONING_REQUEST.test(request) ? 'reasoning' : 'general';
  return routes.find((route) => route.toLowerCase() === category) ?? routes.at(-1) ?? category;
}

/** Deliberately not JSON, and without braces, so even a lenient parser finds no object. */
const UNREADABLE_ROUTE = 'I think this request could go several ways, depending on what you need.';

function routerAnswer(request: SimulatedChatRequest, directives: Directives, systemText: string): string {
  const value = textDirective(directives, 'router');
  if (value === 'garbage') return UNREADABLE_ROUTE;
  const routes = listedRoutes(systemText);
  // A named route is answered even when not listed, so the pattern's handling of an unknown route can be tested.
  const route =
    value === undefined || value === 'low'
      ? classify(quotedRequest(request), routes)
      : (routes.find((listed) => listed.toLowerCase() === value) ?? value);
  const reason = ROUTE_REASONS[route.toLowerCase()] ?? `The request fits the ${route} route best.`;
  return modelStyleJson({ route, confidence: value === 'low' ? 0.2 : 0.9, reason });
}

// ---------------------------------------------------------------------------------------------
// Ordinary answers

/** Property names that want the answer itself rather than a detail of it. */
const ANSWER_PROPERTY = /^(?:answer|response|content|text|result|output|summary|explanation|message|reply|reason|description)$/i;

/** Prose, or JSON when the call asks for it: `{"answer": <prose>}` for json_object, a value fitting the schema for json_schema. */
function structuredOrProse(request: SimulatedChatRequest, directives: Directives, model: SimulatedModel): GeneratedAnswer {
  const prose = generateProse(request, directives, model);
  const formatType = responseFormatType(request);
  if (formatType === 'json_object') return stop(modelStyleJson({ answer: prose.text }));
  if (formatType !== 'json_schema') return prose;
  const format = request.body.response_format as Record<string, unknown>;
  const schema = isRecord(format.json_schema) ? format.json_schema.schema : undefined;
  if (!isRecord(schema)) return stop(modelStyleJson({ answer: prose.text }));
  const hint: PropertyHint = (propertyName) => (ANSWER_PROPERTY.test(propertyName) ? prose.text : undefined);
  const value: JsonValue = synthesiseValue(schema, hint);
  return stop(modelStyleJson(value));
}
