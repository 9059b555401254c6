import {
  addUsage,
  zeroUsage,
  type ChatMessage,
  type RouteDecision,
  type StepRecord,
  type TaskOptions,
  type TaskResult,
  type ToolCall,
} from '@mageagent/core';
import type { CompiledPattern, CompiledStep } from './compile';
import type { PatternContext, PatternInput } from './context';
import { renderTemplate } from './declaration';
import { abortReason, generate, StepIds, type GenerateOutcome } from './generate';
import {
  judgeSystemPrompt,
  judgeUserPrompt,
  reviewSystemPrompt,
  reviewUserPrompt,
  revisionPrompt,
  routerSystemPrompt,
} from './prompts';
import { routeByKeywords } from './routing';
import { extractTools, needsTools, toolSpecsFor } from './tools';
import { readJudgement, readReview, readRouterAnswer } from './verdicts';

/** Looks up the pattern a route step hands over to. */
export type PatternLookup = (name: string) => CompiledPattern;

interface Answer {
  content: string;
  model: string;
  role: string;
  /** What the answering call was sent, so a revision continues that conversation (its system prompt included). */
  messages: ChatMessage[];
  options: TaskOptions;
}

/** The state of one pattern run, shared by the steps (and by a routed-to pattern). */
class PipelineRun {
  readonly stepIds = new StepIds();
  readonly steps: StepRecord[] = [];
  readonly outputs = new Map<string, string>();
  readonly toolCalls: ToolCall[] = [];
  readonly warnings: string[] = [];
  answer: Answer | undefined;
  /** Text a tools-only pipeline's model wrote around its calls; the content when there is no answer. */
  toolProse = '';
  approved: boolean | undefined;
  route: RouteDecision | undefined;
  /** An extractTools step has run (or decided not to): later ones in the same run do nothing. */
  extractionConsidered = false;
  stopped = false;
  pattern: string;
  /** The request as one text, quoted in reviewer, judge, tools and router prompts. */
  readonly requestText: string;
  /** The newest user message: what routing and tool-need rules look at. */
  readonly lastUserText: string;

  constructor(
    readonly input: PatternInput,
    readonly context: PatternContext,
    pattern: string,
  ) {
    this.pattern = pattern;
    this.requestText = conversationText(input.messages);
    this.lastUserText = [...input.messages].reverse().find((message) => message.role === 'user')?.content ?? this.requestText;
  }

  warn(message: string, stepId?: string): void {
    this.warnings.push(message);
    this.context.events.emit({ type: 'warning', message, ...(stepId !== undefined && { stepId }) });
  }

  record(outcome: GenerateOutcome): GenerateOutcome {
    this.steps.push(outcome.step);
    return outcome;
  }

  /** Options for steps whose output may become the answer: the request's, over the step's. */
  answerOptions(step: { temperature?: number; maxTokens?: number }): TaskOptions {
    const { temperature, maxTokens } = this.input.options;
    return {
      ...(step.temperature !== undefined && { temperature: step.temperature }),
      ...(step.maxTokens !== undefined && { maxTokens: step.maxTokens }),
      ...(temperature !== undefined && { temperature }),
      ...(maxTokens !== undefined && { maxTokens }),
    };
  }

  get responseFormat(): Record<string, unknown> | undefined {
    const format = this.input.responseFormat;
    return format && format.type !== 'text' ? format : undefined;
  }

  render(template: string): string {
    return renderTemplate(template, { request: this.requestText, answer: this.answer?.content ?? '', steps: this.outputs });
  }

  /** The conversation a step sends: the request's, or one rendered prompt; with an optional system message first. */
  messagesFor(step: { system?: string; prompt?: string }): ChatMessage[] {
    const system: ChatMessage[] = step.system === undefined ? [] : [{ role: 'system', content: this.render(step.system) }];
    if (step.prompt === undefined) return [...system, ...this.input.messages];
    return [...system, { role: 'user', content: this.render(step.prompt) }];
  }
}

/** Runs a compiled pattern to its result. */
export async function runCompiledPattern(
  pattern: CompiledPattern,
  lookup: PatternLookup,
  input: PatternInput,
  context: PatternContext,
): Promise<TaskResult> {
  const run = new PipelineRun(input, context, pattern.name);
  await runSteps(run, pattern, lookup);
  const toolsAsked = (input.tools?.length ?? 0) > 0 || input.toolChoice === 'required' || typeof input.toolChoice === 'object';
  if (toolsAsked && !run.extractionConsidered && input.toolChoice !== 'none') {
    run.warn(`pattern "${run.pattern}" does not extract tool calls, so the request's tools were not used; use hybrid, validated, compete or tools`);
  }
  if (run.toolCalls.length > 0) context.events.emit({ type: 'tool_calls', calls: run.toolCalls });
  const usage = run.steps.reduce((total, step) => addUsage(total, step.usage), zeroUsage());
  return {
    content: run.answer?.content ?? run.toolProse,
    toolCalls: run.toolCalls,
    steps: run.steps,
    usage,
    model: run.answer?.model ?? run.steps.at(-1)?.model ?? '',
    pattern: run.pattern,
    ...(run.route && { route: run.route }),
    ...(run.approved !== undefined && { approved: run.approved }),
    ...(run.warnings.length > 0 && { warnings: run.warnings }),
  };
}

async function runSteps(run: PipelineRun, pattern: CompiledPattern, lookup: PatternLookup): Promise<void> {
  for (const step of pattern.steps) {
    if (run.stopped) return;
    if (run.context.signal.aborted) throw abortReason(run.context.signal);
    switch (step.type) {
      case 'generate':
        await runGenerate(run, step);
        break;
      case 'validate':
        await runValidate(run, step);
        break;
      case 'compete':
        await runCompete(run, step);
        break;
      case 'extractTools':
        await runExtractTools(run, step);
        break;
      case 'route': {
        const target = lookup(await decideRoute(run, step));
        run.pattern = target.name;
        await runSteps(run, target, lookup);
        break;
      }
    }
    run.context.logger?.debug('pattern step done', { step: step.id, type: step.type });
  }
}

type StepOf<T extends CompiledStep['type']> = Extract<CompiledStep, { type: T }>;

async function runGenerate(run: PipelineRun, step: StepOf<'generate'>): Promise<void> {
  const { options } = step;
  const messages = run.messagesFor(options);
  const callOptions = run.answerOptions(options);
  const outcome = run.record(
    await generate(run.context, run.stepIds, {
      name: step.id,
      role: options.role,
      messages,
      options: callOptions,
      kind: step.final ? 'answer' : 'draft',
      final: step.final,
      ...(run.responseFormat && { responseFormat: run.responseFormat }),
    }),
  );
  run.outputs.set(step.id, outcome.content);
  run.answer = { content: outcome.content, model: outcome.step.model, role: options.role, messages, options: callOptions };
}

/**
 * Review → (revise → review)* until PASS or the revisions run out. An unparseable review counts
 * as FAIL, never as PASS. The last answer stands either way; `approved` says whether it passed.
 */
async function runValidate(run: PipelineRun, step: StepOf<'validate'>): Promise<void> {
  const { options } = step;
  const maxRevisions = run.input.options.maxRevisions ?? options.maxRevisions;
  const reviser = options.reviser ?? run.answer!.role;
  let previousReview: string | undefined;
  for (let revisions = 0; ; revisions += 1) {
    const answer = run.answer!;
    let reading = readReview('');
    const review = run.record(
      await generate(run.context, run.stepIds, {
        name: step.id,
        role: options.role,
        kind: 'review',
        options: {},
        messages: [
          { role: 'system', content: reviewSystemPrompt() },
          { role: 'user', content: reviewUserPrompt(run.requestText, answer.content, previousReview) },
        ],
        interpret: (content) => {
          reading = readReview(content);
          return reading.verdict === 'unparseable'
            ? { verdict: 'unparseable', note: 'the review did not start with PASS or FAIL; treated as FAIL' }
            : { verdict: reading.verdict, ...(reading.feedback && { note: truncate(reading.feedback, 500) }) };
        },
      }),
    );
    run.outputs.set(step.id, review.content);
    if (reading.verdict === 'PASS') {
      run.approved = true;
      return;
    }
    if (reading.verdict === 'unparseable') {
      run.warn(`review ${review.step.id} was unparseable and counted as FAIL`, review.step.id);
    }
    if (options.onFail === 'stop') {
      run.approved = false;
      run.stopped = true;
      run.warn(`the answer failed review (${reading.verdict}); the pattern stops here`, review.step.id);
      return;
    }
    if (revisions >= maxRevisions) {
      run.approved = false;
      run.warn(
        maxRevisions === 0
          ? 'the answer failed review and no revision is allowed'
          : `the answer still failed review after ${maxRevisions} revision${maxRevisions === 1 ? '' : 's'}`,
        review.step.id,
      );
      return;
    }
    const feedback = reading.feedback || 'The reviewer rejected the answer without giving reasons.';
    // The revision continues the conversation that produced the answer: its system prompt and
    // templates still apply, and the reviewer's feedback is the next user turn.
    const messages: ChatMessage[] = [
      ...answer.messages,
      { role: 'assistant', content: answer.content },
      { role: 'user', content: revisionPrompt(feedback) },
    ];
    const revision = run.record(
      await generate(run.context, run.stepIds, {
        name: 'revise',
        role: reviser,
        kind: 'revision',
        options: answer.options,
        messages,
        ...(run.responseFormat && { responseFormat: run.responseFormat }),
      }),
    );
    run.answer = { content: revision.content, model: revision.step.model, role: reviser, messages: answer.messages, options: answer.options };
    run.outputs.set(step.id, revision.content);
    previousReview = review.content;
  }
}

/**
 * Candidates start together (the host scheduler, not this code, serialises them on one GPU);
 * the judge picks a letter. A failed candidate drops out with a warning; an unparseable
 * judgement falls back to solution A, the first role (by convention the strongest model).
 */
async function runCompete(run: PipelineRun, step: StepOf<'compete'>): Promise<void> {
  const { options } = step;
  const letters = options.roles.map((_role, index) => String.fromCharCode(65 + index));
  const messages = run.messagesFor(options);
  const callOptions = run.answerOptions({});
  const settled = await Promise.allSettled(
    options.roles.map((role, index) =>
      generate(run.context, run.stepIds, {
        name: `candidate-${letters[index]!.toLowerCase()}`,
        role,
        kind: 'candidate',
        messages,
        options: callOptions,
        ...(run.responseFormat && { responseFormat: run.responseFormat }),
      }),
    ),
  );
  if (run.context.signal.aborted) throw abortReason(run.context.signal);
  const candidates: Array<{ letter: string; role: string; outcome: GenerateOutcome }> = [];
  settled.forEach((result, index) => {
    const letter = letters[index]!;
    const role = options.roles[index]!;
    if (result.status === 'fulfilled') {
      run.record(result.value);
      candidates.push({ letter, role, outcome: result.value });
    } else {
      run.warn(`solution ${letter} (${role}) failed: ${errorMessage(result.reason)}`);
    }
  });
  if (candidates.length === 0) throw (settled[0] as PromiseRejectedResult).reason;
  const choose = (candidate: (typeof candidates)[number]) => {
    run.answer = { content: candidate.outcome.content, model: candidate.outcome.step.model, role: candidate.role, messages, options: callOptions };
    run.outputs.set(step.id, candidate.outcome.content);
  };
  if (candidates.length === 1) {
    choose(candidates[0]!);
    return;
  }
  const present = candidates.map((candidate) => candidate.letter);
  let reading = readJudgement('', present);
  let judgement: GenerateOutcome;
  try {
    judgement = run.record(
      await generate(run.context, run.stepIds, {
        name: 'judge',
        role: options.judge,
        kind: 'judge',
        options: {},
        messages: [
          { role: 'system', content: judgeSystemPrompt(present) },
          {
            role: 'user',
            content: judgeUserPrompt(
              run.requestText,
              candidates.map((candidate) => ({ letter: candidate.letter, content: candidate.outcome.content })),
            ),
          },
        ],
        interpret: (content) => {
          reading = readJudgement(content, present);
          return reading.letter === null
            ? { verdict: 'unparseable', note: `the judgement did not start with ${present.join(' or ')}; fell back to ${present[0]} (the first solution)` }
            : { verdict: reading.letter, ...(reading.reason && { note: truncate(reading.reason, 500) }) };
        },
      }),
    );
  } catch (error) {
    // Both solutions are in hand: a failed judge costs the comparison, not the task.
    if (run.context.signal.aborted) throw abortReason(run.context.signal);
    run.warn(`the judge failed (${errorMessage(error)}); solution ${present[0]} (the first) was chosen`);
    choose(candidates[0]!);
    return;
  }
  if (reading.letter === null) {
    run.warn(`judgement ${judgement.step.id} was unparseable; solution ${present[0]} (the first) was chosen`, judgement.step.id);
  }
  choose(candidates.find((candidate) => candidate.letter === (reading.letter ?? present[0]))!);
}

async function runExtractTools(run: PipelineRun, step: StepOf<'extractTools'>): Promise<void> {
  const { options } = step;
  if (run.extractionConsidered) return;
  run.extractionConsidered = true;
  const mode = run.input.options.extractTools ?? options.when;
  if (mode === 'never') return;
  const selection = toolSpecsFor({ tools: run.input.tools, toolChoice: run.input.toolChoice });
  if (selection === null) return; // tool_choice: none
  const requested = (run.input.tools?.length ?? 0) > 0 || selection.required;
  if (mode === 'auto' && !requested && !needsTools(run.lastUserText)) return;
  if (mode === 'auto' && !run.context.models.has(options.role)) {
    run.warn(`tool extraction skipped: no "${options.role}" role is configured`);
    return;
  }
  let outcome: Awaited<ReturnType<typeof extractTools>>;
  try {
    outcome = await extractTools(run.context, run.stepIds, {
      role: options.role,
      request: run.requestText,
      ...(options.from === 'answer' && run.answer && { answer: run.answer.content }),
      specs: selection.specs,
      required: selection.required,
    });
  } catch (error) {
    // With an answer in hand, failed extraction loses the tool calls, not the answer; a
    // tools-only pipeline has nothing else to give, so there it fails the task.
    if (run.context.signal.aborted || run.answer === undefined) throw error;
    run.warn(`tool extraction failed (${errorMessage(error)}); the answer is returned without tool calls`);
    return;
  }
  run.steps.push(...outcome.steps);
  run.warnings.push(...outcome.warnings);
  for (const call of outcome.calls) run.toolCalls.push({ ...call, id: `call_${run.toolCalls.length + 1}` });
  if (options.from === 'request') run.toolProse = outcome.prose;
  run.outputs.set(step.id, JSON.stringify(outcome.calls.map(({ tool, arguments: args }) => ({ tool, arguments: args }))));
}

/**
 * Keywords decide unless a router role is declared and configured; then the router model
 * decides, and the keywords are the fallback when it fails, answers garbage or is unsure.
 */
async function decideRoute(run: PipelineRun, step: StepOf<'route'>): Promise<string> {
  const { options } = step;
  const routes = Object.keys(options.routes);
  const keywords = routeByKeywords(run.lastUserText, options);
  let decision: RouteDecision = { pattern: '', route: keywords.route, method: 'keywords', reason: keywords.reason };
  if (options.role !== undefined && run.context.models.has(options.role)) {
    const fallback = (fallbackReason: string) => {
      decision = { ...decision, fallbackReason };
    };
    try {
      let reading = { error: 'no answer' } as ReturnType<typeof readRouterAnswer>;
      const routed = run.record(
        await generate(run.context, run.stepIds, {
          name: 'route',
          role: options.role,
          kind: 'route',
          options: {},
          messages: [
            {
              role: 'system',
              content: routerSystemPrompt(routes.map((name) => ({ name, description: options.routes[name]!.description }))),
            },
            { role: 'user', content: run.lastUserText },
          ],
          interpret: (content) => {
            reading = readRouterAnswer(content, routes);
            return 'error' in reading
              ? { verdict: 'unparseable', note: reading.error }
              : { verdict: reading.route, note: `confidence ${reading.confidence}: ${reading.reason}` };
          },
        }),
      );
      run.outputs.set(step.id, routed.content);
      if ('error' in reading) fallback(reading.error);
      else if (reading.confidence < options.minConfidence) {
        fallback(`router confidence ${reading.confidence} is below ${options.minConfidence}`);
      } else {
        decision = { pattern: '', route: reading.route, method: 'router', reason: reading.reason, confidence: reading.confidence };
      }
    } catch (error) {
      if (run.context.signal.aborted) throw abortReason(run.context.signal);
      fallback(`router call failed: ${errorMessage(error)}`);
    }
  }
  decision.pattern = options.routes[decision.route]!.pattern;
  run.route = decision;
  run.context.events.emit({ type: 'route', decision });
  return decision.pattern;
}

/** One text for a conversation: the message itself when there is one, a labelled transcript otherwise. */
export function conversationText(messages: ChatMessage[]): string {
  const spoken = messages.filter((message) => message.role !== 'system');
  if (spoken.length === 1 && messages.length === 1) return spoken[0]!.content;
  return messages.map((message) => `${message.role}: ${message.content}`).join('\n\n');
}

function truncate(text: string, length: number): string {
  return text.length <= length ? text : `${text.slice(0, length - 1)}…`;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
