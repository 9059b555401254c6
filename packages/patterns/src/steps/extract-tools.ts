import { z } from 'zod';
import { extractTools, needsTools, toolSpecsFor } from '../tools';
import { Role, StepId } from './fields';
import { errorMessage } from './run';
import type { StepDefinition } from './types';

export const ExtractToolsStepSchema = z.strictObject({
  id: StepId.optional(),
  role: Role.default('tools'),
  /** `answer`: calls that carry out the current answer; `request`: calls straight from the request. */
  from: z.enum(['answer', 'request']).default('answer'),
  /** `auto`: when the request brings tools or reads like it needs them; the request's `options.extractTools` overrides. */
  when: z.enum(['auto', 'always', 'never']).default('auto'),
});
export type ExtractToolsStepDeclaration = z.infer<typeof ExtractToolsStepSchema>;

/**
 * Tool calls for the answer (or straight from the request), at most once per task. A failed
 * extraction costs the calls, not the answer; only a tools-only pipeline fails with it.
 */
export const extractToolsStep: StepDefinition<ExtractToolsStepDeclaration> = {
  schema: ExtractToolsStepSchema,
  // With `from: request` it answers a tools-only pipeline (its calls and prose are the result).
  answers: false,
  replacesAnswer: false,
  streamsFinalAnswer: false,
  roles: (options) => [options.role],
  templates: () => [],
  check: (options, { hasAnswer }) =>
    options.from === 'answer' && !hasAnswer ? 'no answer to extract tool calls from; use from: request or put an answering step first' : undefined,
  async run(run, step) {
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
  },
};
