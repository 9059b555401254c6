/**
 * Whether a request's text suggests tool use, for `extractTools: auto` on requests that bring no
 * tools. Errs towards yes: a needless extraction costs one small-model call that answers `[]`,
 * while a missed one loses the calls. Verbs are matched in their plain (imperative) form, and a
 * creative "write a poem" or "create a plan" does not count: writing needs a file, a directory
 * or a path as its object.
 */

const FILE_VERBS = 'read|write|create|edit|modify|update|change|delete|remove|rename|move|copy|save|open|append|overwrite|list|show|find|search|locate';
const FILE_NOUNS = 'files?|director(?:y|ies)|folders?|disk|filesystem|file system';
/** Something that looks like a path: has a slash, or ends in a short extension (app.ts, README.md). */
const PATH = String.raw`(?:[\w.~-]*\/[\w./~-]+|[\w-]+\.[A-Za-z][A-Za-z0-9]{0,4})\b`;
const DETERMINERS = '(?:the|a|an|this|that|my|our|your|new|file|files)';
const RUN_VERBS = 'run|execute|exec|launch';
const RUNNABLES =
  'commands?|scripts?|tests?|test suite|builds?|linters?|programs?|binar(?:y|ies)|migrations?|npm|npx|yarn|pnpm|make|pytest|cargo|git|docker|python3?|node|pip|bash|sh';
const CODE_PLACES = 'files?|codebase|code base|repo|repository|project|director(?:y|ies)|folders?|source(?: code)?|src';

/** `first`, then up to `gap` more words, then `second`, all on word boundaries. */
function near(first: string, second: string, gap: number): RegExp {
  return new RegExp(String.raw`\b(?:${first})\b(?:\W+\w+){0,${gap}}?\W+(?:${second})\b`, 'i');
}

const TOOL_NEED_PATTERNS: readonly RegExp[] = [
  // read / write / create / edit / delete / save ... a file, list a directory
  near(FILE_VERBS, FILE_NOUNS, 5),
  // read src/app.ts, edit the package.json
  new RegExp(String.raw`\b(?:${FILE_VERBS}|cat)\s+(?:${DETERMINERS}\s+){0,3}${PATH}`, 'i'),
  // run the tests, execute this script, run npm install, run `ls -la`
  near(RUN_VERBS, RUNNABLES, 3),
  new RegExp(String.raw`\b(?:${RUN_VERBS})\s+\``, 'i'),
  // search / find ... in the codebase
  new RegExp(String.raw`\b(?:search|find|look|grep|locate)\b(?:\W+\w+){0,6}?\W+(?:in|across|through|within|under)\s+(?:\w+\s+){0,2}?(?:${CODE_PLACES})\b`, 'i'),
  // tools named outright
  /\b(?:glob|grep|bash|shell|terminal|command[- ]line|cli)\b/i,
  // an API or function call
  /\b(?:api|function|tool)\s+calls?\b/i,
  near('call|invoke|query|hit', 'apis?|endpoints?|functions?|tools?|webhooks?', 3),
];

/** The MageAgent guide's tool-need heuristics: file, command, search, shell and API wording. */
export function needsTools(text: string): boolean {
  return TOOL_NEED_PATTERNS.some((pattern) => pattern.test(text));
}
