import { addUsage, inSpan, zeroUsage, type TaskResult } from '@mageagent/core';
import type { CompiledPattern } from './compile';
import type { PatternContext, PatternInput } from './context';
import { abortReason } from './generate';
import { PipelineRun, STEP_DEFINITIONS, type StepDefinition, type StepServices } from './steps';

export { conversationText } from './steps';

/** Looks up the pattern a route step hands over to. */
export type PatternLookup = (name: string) => CompiledPattern;

/** Runs a compiled pattern to its result. */
export async function runCompiledPattern(pattern: CompiledPattern, lookup: PatternLookup, input: PatternInput, context: PatternContext): Promise<TaskResult> {
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
    ...(run.aggregation && { aggregation: run.aggregation }),
    ...(run.selection && { selection: run.selection }),
    ...(run.critique && { critique: run.critique }),
    ...(run.warnings.length > 0 && { warnings: run.warnings }),
  };
}

async function runSteps(run: PipelineRun, pattern: CompiledPattern, lookup: PatternLookup): Promise<void> {
  const services: StepServices = { runPattern: (name) => runSteps(run, lookup(name), lookup) };
  for (const step of pattern.steps) {
    if (run.stopped) return;
    if (run.context.signal.aborted) throw abortReason(run.context.signal);
    // Each kind's runner takes its own options; the table is keyed by kind, so this is the one cast.
    const definition = STEP_DEFINITIONS[step.type] as unknown as StepDefinition<unknown>;
    // A span per declared step; its model calls (one, or a fan-out's several) nest under it.
    await inSpan(
      `step ${step.type}`,
      { attributes: { 'mageagent.step.kind': step.type, 'mageagent.step.id': step.id, 'mageagent.pattern': pattern.name } },
      () => definition.run(run, step, services),
    );
    run.context.logger?.debug('pattern step done', { step: step.id, type: step.type });
  }
}
