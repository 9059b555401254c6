import { TOOLS_LIST_HEADING } from '@mageagent/patterns';
import { identifierWords, isRecord, modelStyleJson, schemaTypes, synthesiseValue, type JsonSchema, type JsonValue, type PropertyHint } from './schema-values';

/**
 * The tool extractor's side of the simulator: which calls a request needs, by keyword heuristics
 * rather than understanding, and the ways a real extractor model gets the reply wrong.
 */

/** A tool as the extractor's system prompt lists it. */
export interface ListedTool {
  name: string;
  description: string;
  /** JSON Schema of the arguments; `{}` when the tool declared none. */
  parameters: JsonSchema;
}

/** One call in the extractor's reply, in the `{"tool": ..., "arguments": ...}` form the prompt asks for. */
export interface SimulatedToolCall {
  tool: string;
  /** An object for a well-formed call; `tools=invalid` may put something else here. */
  arguments: JsonValue;
}

/** How the reply is written, chosen by `tools=`. */
export type ToolsReplyStyle = 'bare' | 'fenced' | 'prose';

/** The tool list of an extractor's system prompt: the ```json fence after TOOLS_LIST_HEADING. */
export function parseToolList(systemText: string): ListedTool[] {
  const heading = systemText.indexOf(TOOLS_LIST_HEADING);
  if (heading === -1) return [];
  const fence = systemText.indexOf('```json', heading);
  if (fence === -1) return [];
  const start = systemText.indexOf('\n', fence) + 1;
  // The last fence, not the next: a tool description may itself contain backticks.
  const end = systemText.lastIndexOf('```');
  if (start === 0 || end < start) return [];
  let entries: unknown;
  try {
    entries = JSON.parse(systemText.slice(start, end));
  } catch {
    return [];
  }
  if (!Array.isArray(entries)) return [];
  return entries.flatMap((entry: unknown) =>
    isRecord(entry) && typeof entry.name === 'string'
      ? [
          {
            name: entry.name,
            description: typeof entry.description === 'string' ? entry.description : '',
            parameters: isRecord(entry.parameters) ? entry.parameters : {},
          },
        ]
      : [],
  );
}

// ---------------------------------------------------------------------------------------------
// What the request says

interface Located {
  value: string;
  /** Offset in the request-then-answer text, so calls come out in the order the text asks for them. */
  position: number;
}

interface RequestFacts {
  text: string;
  /** The request's first sentence, for `query`- or `title`-like properties. */
  subject: string;
  answer: string;
  path?: Located;
  command?: Located;
  searchTerm?: Located;
  glob?: Located;
  url?: string;
  email?: string;
  place?: string;
  replacement?: { old: string; new: string };
  /** The first fenced code block of the answer, else of the request. */
  code?: string;
}

const TRAILING_PUNCTUATION = /[.,;:!?)\]}'"`]+$/;
const LEADING_PUNCTUATION = /^[(['"`]+/;
/** Words a search verb is often followed by that are not what to search for. */
const NOT_SEARCH_TERMS = new Set(['file', 'files', 'where', 'out', 'me', 'all', 'a', 'an', 'it', 'them', 'which', 'what', 'how', 'why', 'the', 'in', 'and']);

type PathlikeKind = 'path' | 'glob' | 'url' | undefined;

function classifyToken(token: string): PathlikeKind {
  if (token.includes('://')) return 'url';
  if (token.includes('*')) return 'glob';
  if (!/^[\w.@~/-]+$/.test(token)) return undefined;
  const hasExtension = /[\w@-]\.[a-z][a-z0-9]{0,7}$/i.test(token.split('/').at(-1) ?? '');
  // Without a slash, a one-letter stem is an abbreviation ("e.g", "i.e"), not a file.
  if (!token.includes('/')) return hasExtension && /[\w@-]{2}\.[a-z][a-z0-9]{0,7}$/i.test(token) ? 'path' : undefined;
  if (token.includes('//') || token === '/') return undefined;
  const anchored = /^(\/|\.{1,2}\/|~\/)/.test(token);
  const slashes = token.split('/').length - 1;
  // One slash between two words ("and/or", "read/write") is more often prose than a directory.
  return anchored || hasExtension || slashes >= 2 || token.endsWith('/') ? 'path' : undefined;
}

const CODE_SPAN = /(?<!`)`([^`\n]+)`(?!`)/g;
const CODE_BLOCKS = /```[\w+-]*\n([\s\S]*?)```/g;
/** "run" as an instruction ("Please run ...", "and then run ..."), not as in "the server will run faster". */
const RUN_COMMAND =
  /(?:^|[.!?;:,\n]\s*|\b(?:please|and|then|to|you|just|now|also|first|next)\s+)run\s+(?!(?:and|then|so|to)\b)(?:the\s+command\s+)?([^\s`,;!?][^\n,;!?`]*?)(?=\s+(?:and|then|so|to)\s|[,;!?\n`]|\.(?:\s|$)|$)/i;
const RUN_BEFORE_SPAN = /\brun\s+(?:the\s+command\s+)?$/i;
const SEARCH =
  /\b(?:search|grep|find|look\s+for|look\s+up)\s+(?:for\s+)?(?:(?:all|the|every|any)\s+)?(?:(?:occurrences|uses|usages|references|mentions|instances|calls)\s+(?:of|to)\s+)?(?:"([^"\n]+)"|'([^'\n]+)'|`([^`\n]+)`|([^\s,;!?`]+))/i;
const REPLACEMENT = /\breplace\s+(?:"([^"\n]+)"|'([^'\n]+)'|`([^`\n]+)`|(\S+))\s+with\s+(?:"([^"\n]+)"|'([^'\n]+)'|`([^`\n]+)`|([^\s,;!?]+))/i;
const PLACE = /\b(?:in|at|for|near)\s+([A-Z][a-z]+(?:\s+[A-Z][a-z]+)?)\b/;
const EMAIL = /[^\s@<>()"'`]+@[^\s@<>()"'`]+\.[a-z]{2,}/i;

function firstGroup(groups: Array<string | undefined>): string | undefined {
  return groups.find((group) => group !== undefined);
}

/** The text with each match blanked out, so offsets still point into the original. */
function blankOut(text: string, pattern: RegExp): string {
  return text.replace(pattern, (match) => ' '.repeat(match.length));
}

function readFacts(request: string, answer: string): RequestFacts {
  const text = answer === '' ? request : `${request}\n\n${answer}`;
  const subject = (request.trim().split(/(?<=[.!?])\s|\n/)[0] ?? '').slice(0, 120).trim();
  const facts: RequestFacts = { text, subject, answer: answer.trim() };
  const remember = (key: 'path' | 'command' | 'glob' | 'searchTerm', value: string, position: number): void => {
    if (facts[key] === undefined && value !== '') facts[key] = { value, position };
  };
  // Code blocks hold imports and literals, not instructions; inline code spans are read whole.
  const outsideBlocks = blankOut(text, CODE_BLOCKS);
  const prose = blankOut(outsideBlocks, CODE_SPAN);

  // Searches and replacements first: their quoted words are not commands to run.
  const search = SEARCH.exec(outsideBlocks);
  const term = firstGroup(search?.slice(1) ?? [])?.replace(TRAILING_PUNCTUATION, '');
  if (search !== null && term !== undefined && !NOT_SEARCH_TERMS.has(term.toLowerCase())) {
    const kind = classifyToken(term);
    if (kind === 'glob') remember('glob', term, search.index);
    else if (kind === undefined) remember('searchTerm', term, search.index);
  }
  const replacement = REPLACEMENT.exec(outsideBlocks);
  if (replacement !== null) {
    const old = firstGroup(replacement.slice(1, 5));
    const replacementText = firstGroup(replacement.slice(5, 9));
    if (old !== undefined && replacementText !== undefined) facts.replacement = { old, new: replacementText };
  }
  const quotedElsewhere = new Set([term, facts.replacement?.old, facts.replacement?.new]);

  for (const match of outsideBlocks.matchAll(CODE_SPAN)) {
    const content = (match[1] ?? '').trim();
    if (quotedElsewhere.has(content)) continue;
    const kind = classifyToken(content);
    if (RUN_BEFORE_SPAN.test(outsideBlocks.slice(0, match.index)) || kind === undefined) remember('command', content, match.index);
    else if (kind === 'path' || kind === 'glob') remember(kind, content, match.index);
  }
  for (const match of prose.matchAll(/\S+/g)) {
    const token = match[0].replace(LEADING_PUNCTUATION, '').replace(TRAILING_PUNCTUATION, '');
    const kind = classifyToken(token);
    if (kind === 'url') facts.url ??= token;
    else if (kind !== undefined) remember(kind, token, match.index);
  }
  const run = RUN_COMMAND.exec(prose);
  if (run !== null) remember('command', (run[1] ?? '').replace(/^(?:the|a)\s+/i, '').trim(), run.index);
  facts.place = PLACE.exec(request)?.[1];
  facts.email = EMAIL.exec(prose)?.[0];
  facts.code = firstCodeBlock(answer) ?? firstCodeBlock(request);
  return facts;
}

function firstCodeBlock(text: string): string | undefined {
  for (const match of text.matchAll(CODE_BLOCKS)) return match[1];
  return undefined;
}

/** A value for a property whose name says what it wants, from what the request says. */
function hintFromFacts(facts: RequestFacts, propertyName: string): string | undefined {
  const words = identifierWords(propertyName);
  const named = (...candidates: string[]): boolean => candidates.some((candidate) => words.includes(candidate));
  if (named('url', 'uri', 'link', 'href', 'website')) return facts.url;
  if (named('email', 'mail')) return facts.email;
  if (named('old')) return facts.replacement?.old;
  if (named('new')) return facts.replacement?.new ?? facts.code;
  if (named('path', 'file', 'filename', 'filepath', 'dir', 'directory', 'folder')) return facts.path?.value;
  if (named('command', 'cmd', 'script', 'shell')) return facts.command?.value;
  if (named('glob')) return facts.glob?.value;
  if (named('pattern', 'regex', 'regexp')) return facts.searchTerm?.value ?? facts.glob?.value;
  if (named('city', 'location', 'place', 'country', 'region', 'town', 'destination')) return facts.place;
  if (named('query', 'search', 'keyword', 'keywords', 'term', 'topic', 'question', 'prompt', 'q', 'title', 'subject', 'summary')) {
    return facts.searchTerm?.value ?? (facts.subject === '' ? undefined : facts.subject);
  }
  if (named('content', 'contents', 'text', 'body', 'code', 'source')) return facts.code ?? (facts.answer === '' ? undefined : facts.answer);
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Choosing calls

type BuiltInTool = 'read' | 'write' | 'edit' | 'bash' | 'glob' | 'grep';

interface Intent {
  tool: BuiltInTool;
  position: number;
  /** Property values this intent decides over the generic hints (Glob's `pattern` is the glob). */
  overrides: Record<string, string>;
}

const FILE_VERBS: Array<[RegExp, BuiltInTool]> = [
  [/\b(?:write|create|save|generate)\b/gi, 'write'],
  [/\b(?:edit|change|modify|update|replace|fix|rename|refactor|add|remove|delete|append|insert)\b/gi, 'edit'],
  [/\b(?:read|open|show|view|cat|print|display|inspect|summari[sz]e)\b/gi, 'read'],
];

/** The file tool named by the last verb before the path (else the first after it); Read when none is. */
function fileTool(text: string, pathPosition: number): { tool: BuiltInTool; explicit: boolean } {
  let lastBefore: { tool: BuiltInTool; position: number } | undefined;
  let firstAfter: { tool: BuiltInTool; position: number } | undefined;
  for (const [verbs, tool] of FILE_VERBS) {
    for (const match of text.matchAll(verbs)) {
      if (match.index < pathPosition) {
        if (lastBefore === undefined || match.index > lastBefore.position) lastBefore = { tool, position: match.index };
      } else if (firstAfter === undefined || match.index < firstAfter.position) {
        firstAfter = { tool, position: match.index };
      }
    }
  }
  const chosen = lastBefore ?? firstAfter;
  return chosen === undefined ? { tool: 'read', explicit: false } : { tool: chosen.tool, explicit: true };
}

function builtInIntents(facts: RequestFacts): Intent[] {
  const intents: Intent[] = [];
  if (facts.command !== undefined) intents.push({ tool: 'bash', position: facts.command.position, overrides: {} });
  if (facts.searchTerm !== undefined) {
    intents.push({ tool: 'grep', position: facts.searchTerm.position, overrides: { pattern: facts.searchTerm.value } });
  }
  if (facts.glob !== undefined) intents.push({ tool: 'glob', position: facts.glob.position, overrides: { pattern: facts.glob.value } });
  if (facts.path !== undefined) {
    const file = fileTool(facts.text, facts.path.position);
    // "search for TODO in src/": the path says where to search, not what to open.
    if (file.explicit || intents.length === 0) intents.push({ tool: file.tool, position: facts.path.position, overrides: {} });
  }
  return intents.sort((first, second) => first.position - second.position);
}

/** A listed tool for a built-in intent; a file intent falls back to whichever file tool is listed. */
function listedBuiltIn(tools: ListedTool[], tool: BuiltInTool): ListedTool | undefined {
  const byName = (name: string) => tools.find((listed) => listed.name.toLowerCase() === name);
  const fileFallbacks: BuiltInTool[] = tool === 'read' || tool === 'write' || tool === 'edit' ? [tool, 'read', 'edit', 'write'] : [tool];
  for (const name of fileFallbacks) {
    const listed = byName(name);
    if (listed !== undefined) return listed;
  }
  return undefined;
}

const STOP_WORDS = new Set([
  'the',
  'and',
  'for',
  'with',
  'that',
  'this',
  'from',
  'into',
  'what',
  'when',
  'where',
  'which',
  'please',
  'can',
  'could',
  'would',
  'you',
  'your',
  'are',
  'was',
  'use',
  'given',
  'get',
  'all',
  'any',
  'its',
  'about',
  'how',
  'tool',
]);

function contentWords(text: string): string[] {
  return identifierWords(text)
    .filter((word) => word.length >= 3 && !STOP_WORDS.has(word))
    .map((word) => (word.length > 3 && word.endsWith('s') && !word.endsWith('ss') ? word.slice(0, -1) : word));
}

/** Equal, or sharing five leading letters ("create" and "creating"): stemming enough for keyword matching. */
function wordsMatch(first: string, second: string): boolean {
  return first === second || (first.length >= 5 && second.length >= 5 && first.slice(0, 5) === second.slice(0, 5));
}

/** The listed tool whose name (counted twice) and description share most words with the request. */
function bestMatchingTool(tools: ListedTool[], request: string): ListedTool | undefined {
  const requestWords = [...new Set(contentWords(request))];
  let best: { tool: ListedTool; score: number } | undefined;
  for (const tool of tools) {
    const nameWords = contentWords(tool.name);
    const descriptionWords = contentWords(tool.description);
    let score = 0;
    for (const word of requestWords) {
      if (nameWords.some((candidate) => wordsMatch(candidate, word))) score += 2;
      else if (descriptionWords.some((candidate) => wordsMatch(candidate, word))) score += 1;
    }
    if (score > 0 && (best === undefined || score > best.score)) best = { tool, score };
  }
  return best?.tool;
}

function callWithArguments(tool: ListedTool, facts: RequestFacts, overrides: Record<string, string>): SimulatedToolCall {
  const hint: PropertyHint = (propertyName) => overrides[propertyName] ?? hintFromFacts(facts, propertyName);
  return { tool: tool.name, arguments: synthesiseValue(tool.parameters, hint) };
}

/**
 * The calls that carry out the request: Read/Write/Edit/Bash/Glob/Grep (when listed) for the paths,
 * commands, searches and globs the request or answer names; otherwise the listed tool that best
 * matches the request's words; otherwise the first tool. Arguments fit each tool's schema. Empty
 * only when no tool is listed.
 */
export function chooseToolCalls(tools: ListedTool[], request: string, answer: string): SimulatedToolCall[] {
  if (tools.length === 0) return [];
  const facts = readFacts(request, answer);
  const calls: SimulatedToolCall[] = [];
  const used = new Set<string>();
  for (const intent of builtInIntents(facts)) {
    const tool = listedBuiltIn(tools, intent.tool);
    if (tool === undefined || used.has(tool.name)) continue;
    used.add(tool.name);
    calls.push(callWithArguments(tool, facts, intent.overrides));
  }
  if (calls.length > 0) return calls;
  const tool = bestMatchingTool(tools, request) ?? tools[0];
  return tool === undefined ? [] : [callWithArguments(tool, facts, {})];
}

// ---------------------------------------------------------------------------------------------
// Getting it wrong on purpose

/** A value of a JSON type the property does not allow, or undefined when it allows any. */
function wrongTypeValue(property: unknown): JsonValue | undefined {
  if (!isRecord(property)) return undefined;
  const types = schemaTypes(property);
  if (types.length === 0) return Array.isArray(property.enum) ? 'not-one-of-the-allowed-values' : undefined;
  const allows = (type: string): boolean => types.includes(type) || (type === 'integer' && types.includes('number'));
  const candidates: Array<[string, JsonValue]> = [
    ['integer', 12345],
    ['string', 'wrong type'],
    ['boolean', true],
    ['object', {}],
    ['array', []],
  ];
  return candidates.find(([type]) => !allows(type))?.[1];
}

/**
 * The call made to break its tool's schema: a required argument dropped, else an argument of the
 * wrong type, else an argument the schema forbids, else arguments that are not an object (which a
 * schema without `type: "object"` would still accept; the extractor's own object check does not).
 */
export function breakCall(call: SimulatedToolCall, tool: ListedTool | undefined): SimulatedToolCall {
  const schema = tool?.parameters ?? {};
  const argumentsObject = isRecord(call.arguments) ? { ...call.arguments } : {};
  const required = Array.isArray(schema.required) ? schema.required.filter((name): name is string => typeof name === 'string') : [];
  const dropped = required.find((name) => name in argumentsObject);
  if (dropped !== undefined) {
    delete argumentsObject[dropped];
    return { tool: call.tool, arguments: argumentsObject };
  }
  const properties = isRecord(schema.properties) ? schema.properties : {};
  for (const [name, property] of Object.entries(properties)) {
    const wrong = wrongTypeValue(property);
    if (wrong !== undefined) return { tool: call.tool, arguments: { ...argumentsObject, [name]: wrong } };
  }
  if (schema.additionalProperties === false) {
    return { tool: call.tool, arguments: { ...argumentsObject, unexpected_argument: 'not in the schema' } };
  }
  return { tool: call.tool, arguments: 'not an object' };
}

/** The calls with the first one broken; with no tool listed, a call to a tool that does not exist. */
export function invalidToolCalls(tools: ListedTool[], calls: SimulatedToolCall[]): SimulatedToolCall[] {
  const [first, ...rest] = calls;
  if (first === undefined) return [{ tool: 'unlisted_tool', arguments: {} }];
  return [
    breakCall(
      first,
      tools.find((tool) => tool.name === first.tool),
    ),
    ...rest,
  ];
}

// ---------------------------------------------------------------------------------------------
// Writing the reply

/**
 * The reply text: a bare array (or `{"tool_calls": [...]}` when the call asked for a JSON schema
 * response), inside a ```json fence with a trailing comma, or wrapped in prose.
 */
export function renderToolCalls(calls: SimulatedToolCall[], style: ToolsReplyStyle, asObject: boolean): string {
  const items = calls.map((call) => modelStyleJson({ tool: call.tool, arguments: call.arguments }));
  // The trailing comma before `]` is the slip real models make that the extractor's parser repairs.
  const list = style === 'fenced' && items.length > 0 ? `[\n${items.map((item) => `  ${item},`).join('\n')}\n]` : `[${items.join(', ')}]`;
  const json = asObject ? `{"tool_calls": ${list}}` : list;
  if (style === 'fenced') return `\`\`\`json\n${json}\n\`\`\``;
  if (style === 'prose') return `Here are the calls you need: ${json} Let me know if you need anything else.`;
  return json;
}
