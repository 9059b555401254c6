// The public API of @mageagent/patterns: the names other workspaces import (apps, other packages,
// tests, bench), listed by name so that everything else stays internal and tsc catches a name
// removed while still in use. Export a name here only when another workspace needs it.
export { BUILT_IN_PATTERNS } from './builtins';
export type { ModelProvider, PatternContext, PatternEventSink, RetryPolicy } from './context';
export { generate, StepIds } from './generate';
export { loadPatternRegistry, PatternRegistry, runPattern } from './patterns';
// The prompts' texts: the model simulator (apps/model-sim) recognises each step by them, so it answers as a model would.
export {
  AGGREGATE_INSTRUCTION,
  AGGREGATE_REFERENCES_HEADING,
  aggregateSystemPrompt,
  CRITIQUE_INSTRUCTION,
  critiqueSystemPrompt,
  critiqueUserPrompt,
  JUDGE_INSTRUCTION,
  judgeSystemPrompt,
  judgeUserPrompt,
  PREVIOUS_CRITIQUE_HEADING,
  PREVIOUS_REVIEW_HEADING,
  quote,
  REVIEW_INSTRUCTION,
  reviewSystemPrompt,
  reviewUserPrompt,
  revisionPrompt,
  ROUTER_INSTRUCTION,
  routerSystemPrompt,
  SELECT_INSTRUCTION,
  selectSystemPrompt,
  selectUserPrompt,
  type ToolPromptEntry,
  TOOLS_INSTRUCTION,
  TOOLS_LIST_HEADING,
  TOOLS_RETRY_LEAD,
  toolsRetryPrompt,
  toolsSystemPrompt,
  toolsUserPrompt,
} from './prompts';
export { routeByKeywords } from './routing';
export type { RouteStepDeclaration } from './steps/route';
export { checkToolRequest, toolSpecsFor } from './tools/definitions';
export { needsTools } from './tools/heuristics';
export { readCritique, readSelection } from './verdicts';
