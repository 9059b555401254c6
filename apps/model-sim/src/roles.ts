import {
  AGGREGATE_INSTRUCTION,
  AGGREGATE_REFERENCES_HEADING,
  CRITIQUE_INSTRUCTION,
  JUDGE_INSTRUCTION,
  PREVIOUS_CRITIQUE_HEADING,
  PREVIOUS_REVIEW_HEADING,
  REVIEW_INSTRUCTION,
  ROUTER_INSTRUCTION,
  SELECT_INSTRUCTION,
  TOOLS_INSTRUCTION,
  TOOLS_RETRY_LEAD,
} from '@mageagent/patterns';
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
export type CallRole = 'reviewer' | 'judge' | 'tools' | 'router' | 'aggregator' | 'selector' | 'critic';

/** Each role's contract sentence (packages/patterns/src/prompts.ts), as the step prompts state it verbatim. */
const CONTRACT_SENTENCES: ReadonlyArray<readonly [CallRole, string]> = [
  ['tools', TOOLS_INSTRUCTION],
  ['reviewer', REVIEW_INSTRUCTION],
  ['judge', JUDGE_INSTRUCTION],
  ['router', ROUTER_INSTRUCTION],
  ['aggregator', AGGREGATE_INSTRUCTION],
  ['selector', SELECT_INSTRUCTION],
  ['critic', CRITIQUE_INSTRUCTION],
];

/**
 * The role a system prompt asks for, or undefined for an ordinary answer. When several contract
 * sentences turn up, the earliest wins: every step states its instruction before whatever it
 * quotes, and quoted text (a tool's description, an aggregator's references, which are other
 * models' answers) is the one place another role's sentence could appear.
 */
export function detectCallRole(systemText: string): CallRole | undefined {
  if (systemText === '') return undefined;
  let found: CallRole | undefined;
  let foundAt = Number.POSITIVE_INFINITY;
  for (const [role, sentence] of CONTRACT_SENTENCES) {
    const at = systemText.indexOf(sentence);
    if (at !== -1 && at < foundAt) {
      found = role;
      foundAt = at;
    }
  }
  return found;
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
    case 'aggregator':
      return aggregateAnswer(request, directives, model, systemText);
    case 'selector':
      return stop(selectAnswer(request, directives));
    case 'critic':
      return stop(critiqueAnswer(request, directives));
    default:
      return structured(request, generateProse(request, directives, model));
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

/**
 * The texts `quote()`d one after another under `label(1)`, `label(2)`, … in `text`, in order. A
 * quote ends at the last closing line before the next one opens, so a quoted answer that itself
 * contains a `>>>` line is not cut short (except for the last).
 */
function numberedQuotes(text: string, label: (index: number) => string): string[] {
  const quotes: string[] = [];
  const opening = (index: number): string => `${label(index)}\n<<<\n`;
  let start = text.indexOf(opening(1));
  for (let index = 1; start !== -1; index += 1) {
    const from = start + opening(index).length;
    const next = text.indexOf(`\n${opening(index + 1)}`, from);
    const end = next === -1 ? text.indexOf('\n>>>', from) : text.lastIndexOf('\n>>>', next);
    quotes.push(end === -1 ? text.slice(from) : text.slice(from, Math.max(from, end)));
    start = next === -1 ? -1 : next + 1;
  }
  return quotes;
}

/** Words quoted from the start of a text, so an answer can show which text it drew on. */
const EXCERPT_WORDS = 6;

/**
 * The start of a text as the simulator quotes it (the first six words, directives left out, `…`
 * when there is more), so a test can check which references an aggregator saw, or which answer a
 * critic read.
 */
export function excerptOf(text: string): string {
  const words = stripDirectives(text).split(/\s+/).filter(Boolean);
  const excerpt = words.slice(0, EXCERPT_WORDS).join(' ');
  return words.length > EXCERPT_WORDS ? `${excerpt}…` : excerpt;
}

/** A seed for a role answer's choices: the same for the same text, another for each sample of it. */
function choiceSeed(text: string, request: SimulatedChatRequest): number {
  const variant = request.variant ?? 0;
  return variant === 0 ? fnv1a(text) : fnv1a(`${text}\u0000${variant}`);
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
    value === undefined || value === 'low' ? classify(quotedRequest(request), routes) : (routes.find((listed) => listed.toLowerCase() === value) ?? value);
  const reason = ROUTE_REASONS[route.toLowerCase()] ?? `The request fits the ${route} route best.`;
  return modelStyleJson({ route, confidence: value === 'low' ? 0.2 : 0.9, reason });
}

// ---------------------------------------------------------------------------------------------
// Aggregator (and the proposers of a later Mixture-of-Agents layer)

/**
 * A synthesis that shows what it drew on: a line saying how many responses it combined, a line
 * quoting the start of each (`[n] "…"`, numbered as the prompt numbers them), then prose, whose
 * length `tokens=` sets as for any answer. It is deterministic for the same prompt; sampled calls
 * vary the prose. Under a response format the whole synthesis is the answer's prose.
 */
function aggregateAnswer(request: SimulatedChatRequest, directives: Directives, model: SimulatedModel, systemText: string): GeneratedAnswer {
  const headingAt = systemText.indexOf(AGGREGATE_REFERENCES_HEADING);
  const references = headingAt === -1 ? [] : numberedQuotes(systemText.slice(headingAt), (index) => `[${index}]`);
  const synthesis = [
    `Synthesised from ${references.length} response${references.length === 1 ? '' : 's'}:`,
    ...references.map((reference, index) => `[${index + 1}] "${excerptOf(reference)}"`),
    '',
    generateProse(request, directives, model).text,
  ].join('\n');
  return structured(request, stop(synthesis));
}

// ---------------------------------------------------------------------------------------------
// Selector

/** The confidence of a selection the directive dictates. */
const DICTATED_CONFIDENCE = 0.8;

/** Not a selection: no `SELECTED:` line, and no candidate number a loose reader could take for one. */
const UNREADABLE_SELECTION = 'Most of the candidates agree on the main point, though they word it differently.';

function wordSet(text: string): Set<string> {
  return new Set(
    stripDirectives(text)
      .toLowerCase()
      .match(/[\p{L}\p{N}]+/gu) ?? [],
  );
}

/** Jaccard similarity: shared words over all words of the two. */
function similarity(one: Set<string>, other: Set<string>): number {
  let shared = 0;
  for (const word of one) if (other.has(word)) shared += 1;
  const all = one.size + other.size - shared;
  return all === 0 ? 1 : shared / all;
}

/**
 * A real "most consistent": the candidate whose words overlap most with the others' (mean Jaccard
 * similarity), the first on a tie; with fewer than two candidates, the first, agreement 0.
 */
function mostConsistent(candidates: string[]): { chosen: number; agreement: number } {
  const sets = candidates.map(wordSet);
  let best = { chosen: 1, agreement: 0 };
  if (sets.length < 2) return best;
  sets.forEach((words, index) => {
    const agreement = sets.reduce((sum, other, otherIndex) => (otherIndex === index ? sum : sum + similarity(words, other)), 0) / (sets.length - 1);
    if (index === 0 || agreement > best.agreement) best = { chosen: index + 1, agreement };
  });
  return best;
}

function selectAnswer(request: SimulatedChatRequest, directives: Directives): string {
  const value = textDirective(directives, 'select');
  if (value === 'garbage') return UNREADABLE_SELECTION;
  // A number is answered as given, even past the last candidate, so the pattern's handling of an impossible pick can be tested.
  if (value !== undefined && /^\d+$/.test(value)) {
    return `SELECTED: ${value}\nCONFIDENCE: ${DICTATED_CONFIDENCE}\nCandidate ${value} agrees best with what the other candidates say.`;
  }
  const { chosen, agreement } = mostConsistent(numberedQuotes(lastUserMessage(request), (index) => `Candidate ${index}:`));
  // Half-way between a coin toss and certainty, by how much the chosen candidate agrees with the rest.
  const confidence = Math.round((0.5 + agreement / 2) * 100) / 100;
  return `SELECTED: ${chosen}\nCONFIDENCE: ${confidence}\nCandidate ${chosen} shares the most words with the other candidates.`;
}

// ---------------------------------------------------------------------------------------------
// Critic

/**
 * `issues-once` is the default: it exercises one revision and then lets the loop stop, as a
 * useful critic would; `none` would never revise, and `issues` always runs out of rounds.
 */
const CRITIC_MODES = ['issues-once', 'issues', 'none', 'garbage'] as const;
type CriticMode = (typeof CRITIC_MODES)[number];

function criticMode(directives: Directives): CriticMode {
  const value = textDirective(directives, 'critic');
  return CRITIC_MODES.find((mode) => mode === value) ?? 'issues-once';
}

/** The heading under which `critiqueUserPrompt` quotes the answer to critique. */
const CRITIQUED_ANSWER_HEADING = 'Answer to critique:';

/** Deliberately no verdict line and no `- ` list, so the pattern's handling of an unreadable critique is exercised. */
const UNREADABLE_CRITIQUE = 'On the whole the answer reads well, though some parts could be tighter and a few points are unclear.';

const GENERAL_ISSUES = [
  'It does not handle invalid or empty input.',
  'It gives no example of the result.',
  'It does not say how the result was checked.',
  'It leaves out the edge cases the request implies.',
  'It uses terms before it defines them.',
  'Its steps are not in the order they have to run.',
] as const;

/**
 * Two or three issues, derived from the answer: the first names its opening (so a test can see
 * which answer the critic read), the others come from a fixed list and the answer's length and
 * code, chosen by a hash of the answer (and of the sample, for sampled calls).
 */
function issuesIn(answer: string, request: SimulatedChatRequest): string[] {
  const words = answer.split(/\s+/).filter(Boolean).length;
  const pool: string[] = [
    ...GENERAL_ISSUES,
    words < 40
      ? `At ${words} words it is too short to cover the whole request.`
      : `At ${words} words it is longer than it needs to be; cut what does not serve the request.`,
    ...(answer.includes('```') ? ['The code has no comments on the edge cases it handles.'] : []),
  ];
  const seed = choiceSeed(answer, request);
  const first = words === 0 ? 'The answer is empty.' : `The opening ("${excerptOf(answer)}") does not say what the answer will do.`;
  const more = 1 + (seed % 2);
  const start = (seed >>> 1) % pool.length;
  return [first, ...Array.from({ length: more }, (_unused, index) => pool[(start + index) % pool.length] ?? '')];
}

function critiqueAnswer(request: SimulatedChatRequest, directives: Directives): string {
  const mode = criticMode(directives);
  if (mode === 'garbage') return UNREADABLE_CRITIQUE;
  // A later round quotes the earlier critique, so issues-once can tell the first critique from the next.
  const laterRound = lastUserMessage(request).includes(PREVIOUS_CRITIQUE_HEADING);
  if (mode === 'none' || (mode === 'issues-once' && laterRound)) return 'ISSUES_FOUND: NO';
  const answer = stripDirectives(quotedSection(request, CRITIQUED_ANSWER_HEADING) ?? '').trim();
  return ['ISSUES_FOUND: YES', ...issuesIn(answer, request).map((issue) => `- ${issue}`)].join('\n');
}

// ---------------------------------------------------------------------------------------------
// Ordinary answers

/** Property names that want the answer itself rather than a detail of it. */
const ANSWER_PROPERTY = /^(?:answer|response|content|text|result|output|summary|explanation|message|reply|reason|description)$/i;

/** The prose as is, or JSON when the call asks for it: `{"answer": <prose>}` for json_object, a value fitting the schema for json_schema. */
function structured(request: SimulatedChatRequest, prose: GeneratedAnswer): GeneratedAnswer {
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
