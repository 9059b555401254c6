/**
 * The prompts pattern steps send. Each instruction sentence is also what the model simulator
 * recognises to answer in role (a reviewer answers PASS/FAIL, a judge a letter, ...), so the
 * sentences marked "contract" must not change without changing the simulator too.
 */

/** Contract: a reviewer's system prompt contains this sentence. */
export const REVIEW_INSTRUCTION = 'Reply with PASS or FAIL on the first line';
/** Contract: a re-review after a revision quotes the earlier review after this heading. */
export const PREVIOUS_REVIEW_HEADING = 'Your previous review of an earlier version said:';
/** Contract: a judge's system prompt contains this sentence. */
export const JUDGE_INSTRUCTION = 'Reply with the letter of the better solution on the first line';
/** Contract: a tool extractor's system prompt contains this sentence. */
export const TOOLS_INSTRUCTION = 'Reply with only a JSON array of tool calls';
/** Contract: the tool list follows this heading in a ```json fence. */
export const TOOLS_LIST_HEADING = 'Available tools:';
/** Contract: a second extraction attempt starts its user message with this. */
export const TOOLS_RETRY_LEAD = 'Your previous reply was not valid:';
/** Contract: a router's system prompt contains this sentence. */
export const ROUTER_INSTRUCTION = 'Classify the request';

/** Quotes a text so a model sees where it starts and ends. */
export function quote(heading: string, text: string): string {
  return `${heading}\n<<<\n${text}\n>>>`;
}

export function reviewSystemPrompt(): string {
  return [
    'You are a strict reviewer. Check the answer below for correctness, completeness and safety against the request.',
    `${REVIEW_INSTRUCTION}, then one or two lines of reasons. Say FAIL if anything important is wrong or missing.`,
  ].join('\n');
}

export function reviewUserPrompt(request: string, answer: string, previousReview?: string): string {
  const parts = [quote('Request:', request), quote('Answer to review:', answer)];
  if (previousReview !== undefined) {
    parts.push(quote(PREVIOUS_REVIEW_HEADING, previousReview), 'Check that those points were addressed.');
  }
  return parts.join('\n\n');
}

export function revisionPrompt(feedback: string): string {
  return [
    quote('A reviewer found problems with your answer:', feedback),
    'Revise your answer to address them. Reply with the complete revised answer only.',
  ].join('\n\n');
}

export function judgeSystemPrompt(letters: string[]): string {
  return [
    'You are a judge comparing candidate solutions to the same request.',
    `${JUDGE_INSTRUCTION} (${letters.join(' or ')}), then one sentence saying why.`,
  ].join('\n');
}

export function judgeUserPrompt(request: string, solutions: Array<{ letter: string; content: string }>): string {
  return [quote('Request:', request), ...solutions.map(({ letter, content }) => quote(`Solution ${letter}:`, content))].join('\n\n');
}

export interface ToolPromptEntry {
  name: string;
  description?: string;
  parameters: Record<string, unknown>;
}

export function toolsSystemPrompt(tools: ToolPromptEntry[]): string {
  return [
    'You turn a request and an answer into the tool calls that carry it out.',
    `${TOOLS_INSTRUCTION}, each {"tool": "<name>", "arguments": {...}} with arguments matching the tool's parameters. Reply [] when no tool call is needed.`,
    `${TOOLS_LIST_HEADING}\n\`\`\`json\n${JSON.stringify(tools)}\n\`\`\``,
  ].join('\n');
}

export function toolsUserPrompt(request: string, answer?: string): string {
  return answer === undefined ? quote('Request:', request) : [quote('Request:', request), quote('Answer:', answer)].join('\n\n');
}

export function toolsRetryPrompt(errors: string[]): string {
  return `${TOOLS_RETRY_LEAD} ${errors.join('; ')}. Reply again with only the corrected JSON array.`;
}

export function routerSystemPrompt(routes: Array<{ name: string; description: string }>): string {
  return [
    `${ROUTER_INSTRUCTION} into one route: ${routes.map((route) => route.name).join(', ')}.`,
    ...routes.map((route) => `${route.name}: ${route.description}`),
    'Reply with only a JSON object {"route": "<route>", "confidence": <0..1>, "reason": "<one sentence>"}.',
  ].join('\n');
}

/** Contract: an aggregator's (or a later layer's proposer's) system prompt contains this sentence. */
export const AGGREGATE_INSTRUCTION = 'Synthesize these responses into a single, high-quality response';
/** Contract: the responses to synthesize follow this heading, each as `[n]` then the quoted text. */
export const AGGREGATE_REFERENCES_HEADING = 'Responses from models:';
/** Contract: a selector's system prompt contains this sentence. */
export const SELECT_INSTRUCTION = 'Name the candidate most consistent with the others';
/** Contract: a critic's system prompt contains this sentence. */
export const CRITIQUE_INSTRUCTION = 'Start with ISSUES_FOUND: YES or ISSUES_FOUND: NO on the first line';
/** Contract: a later critique round quotes the previous round's issues after this heading. */
export const PREVIOUS_CRITIQUE_HEADING = 'Your previous critique of an earlier version listed:';

/**
 * The synthesis prompt of Mixture-of-Agents (after Together's): the references are shown with a
 * warning that some may be wrong, and the model writes one better answer rather than copying one.
 */
export function aggregateSystemPrompt(references: string[]): string {
  return [
    "You have been provided with a set of responses from various models to the user's latest request.",
    `${AGGREGATE_INSTRUCTION}.`,
    'It is crucial to critically evaluate the information provided in these responses, recognizing that some of it may be biased or incorrect.',
    'Your response should not simply replicate the given answers but should offer a refined, accurate and comprehensive reply to the request.',
    'Ensure your response is well-structured, coherent, and adheres to the highest standards of accuracy and reliability.',
    '',
    AGGREGATE_REFERENCES_HEADING,
    ...references.map((reference, index) => quote(`[${index + 1}]`, reference)),
  ].join('\n');
}

export function selectSystemPrompt(count: number): string {
  return [
    `You are given ${count} candidate answers to the same request, numbered 1 to ${count}.`,
    `${SELECT_INSTRUCTION}: the one that agrees best with what most of them say, and is itself correct.`,
    'Reply with exactly two lines: "SELECTED: <number>" and "CONFIDENCE: <0 to 1>", then optionally one sentence why.',
  ].join('\n');
}

export function selectUserPrompt(request: string, candidates: string[]): string {
  return [quote('Request:', request), ...candidates.map((candidate, index) => quote(`Candidate ${index + 1}:`, candidate))].join('\n\n');
}

export function critiqueSystemPrompt(): string {
  return [
    'You are a demanding critic. Find what is wrong, missing or unclear in the answer below, judged against the request.',
    `${CRITIQUE_INSTRUCTION}. With YES, list each issue on its own line starting with "- "; with NO, stop there.`,
  ].join('\n');
}

export function critiqueUserPrompt(request: string, answer: string, previousIssues?: string): string {
  const parts = [quote('Request:', request), quote('Answer to critique:', answer)];
  if (previousIssues !== undefined) {
    parts.push(quote(PREVIOUS_CRITIQUE_HEADING, previousIssues), 'Check whether those issues were fixed; list only what remains or is new.');
  }
  return parts.join('\n\n');
}

export function critiqueRevisionPrompt(issues: string): string {
  return [quote('A critic found these issues with your answer:', issues), 'Revise your answer to fix them. Reply with the complete revised answer only.'].join(
    '\n\n',
  );
}
