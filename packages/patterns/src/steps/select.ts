import { z } from 'zod';
import { abortReason, generate, VERDICT_OPTIONS } from '../generate';
import { selectSystemPrompt, selectUserPrompt } from '../prompts';
import { readSelection } from '../verdicts';
import { DEFAULT_SAMPLE_TEMPERATURE, sampleOptions } from './aggregate';
import { fanOut } from './fan-out';
import { Role, StepId, Template, templatesIn } from './fields';
import { errorMessage, truncate } from './run';
import type { StepDefinition } from './types';

export const SelectStepSchema = z.strictObject({
  id: StepId.optional(),
  /** The role sampled. */
  role: Role,
  /** How many answers to draw, all started at once. */
  samples: z.number().int().min(2).max(8),
  /** The samples' temperature (default 0.7: at 0 they would all be the same answer). */
  temperature: z.number().min(0).max(2).default(DEFAULT_SAMPLE_TEMPERATURE),
  /** The role that names the most consistent sample. */
  judge: Role,
  system: Template.optional(),
  prompt: Template.optional(),
});
export type SelectStepDeclaration = z.infer<typeof SelectStepSchema>;

/**
 * Self-consistency: several samples of one role, then a judge names the one most consistent with
 * the others, with a strict verdict (`SELECTED: n`, `CONFIDENCE: c`). A verdict that cannot be read,
 * or a judge that fails, leaves the first sample, recorded (`result.selection.method: fallback`)
 * and warned, never silently.
 */
export const selectStep: StepDefinition<SelectStepDeclaration> = {
  schema: SelectStepSchema,
  answers: true,
  replacesAnswer: true,
  streamsFinalAnswer: false,
  roles: (options) => [options.role, options.judge],
  templates: (options) => templatesIn(options.system, options.prompt),
  async run(run, step) {
    const { options } = step;
    const messages = run.messagesFor(options);
    const callOptions = sampleOptions(run, options.temperature);
    const { answered, failures } = await fanOut(
      run,
      Array.from({ length: options.samples }, (_unused, index) => index + 1),
      (sample) =>
        generate(run.context, run.stepIds, {
          name: `${step.id}-sample`,
          role: options.role,
          kind: 'sample',
          position: { reference: sample },
          messages,
          options: callOptions,
          ...(run.responseFormat && { responseFormat: run.responseFormat }),
        }),
      (sample) => `sample ${sample} (${options.role})`,
    );
    if (answered.length === 0) throw failures[0];
    const choose = (position: number, method: 'judge' | 'fallback', confidence?: number) => {
      const chosen = answered[position]!;
      run.selection = { samples: answered.length, chosen: position + 1, method, ...(confidence !== undefined && { confidence }) };
      run.outputs.set(step.id, chosen.outcome.content);
      run.answer = { content: chosen.outcome.content, model: chosen.outcome.step.model, role: options.role, messages, options: callOptions };
    };
    if (answered.length === 1) {
      choose(0, 'fallback');
      run.warn(`only one sample of ${options.samples} answered; it is the answer, unselected`);
      return;
    }
    const candidates = answered.map(({ outcome }) => outcome.content);
    let reading = readSelection('', candidates.length);
    try {
      const judgement = run.record(
        await generate(run.context, run.stepIds, {
          name: `${step.id}-select`,
          role: options.judge,
          kind: 'select',
          options: VERDICT_OPTIONS,
          messages: [
            { role: 'system', content: selectSystemPrompt(candidates.length) },
            { role: 'user', content: selectUserPrompt(run.requestText, candidates) },
          ],
          interpret: (content) => {
            reading = readSelection(content, candidates.length);
            return reading.index === null
              ? { verdict: 'unparseable', note: 'the selection did not start with "SELECTED: <n>"; fell back to sample 1' }
              : {
                  verdict: String(reading.index),
                  note: truncate(
                    `${reading.confidence === null ? 'no confidence given' : `confidence ${reading.confidence}`}${reading.reason ? `: ${reading.reason}` : ''}`,
                    500,
                  ),
                };
          },
        }),
      );
      if (reading.index === null) {
        run.warn(`selection ${judgement.step.id} was unparseable; sample 1 was chosen`, judgement.step.id);
        choose(0, 'fallback');
        return;
      }
      choose(reading.index - 1, 'judge', reading.confidence ?? undefined);
    } catch (error) {
      if (run.context.signal.aborted) throw abortReason(run.context.signal);
      run.warn(`the selector (${options.judge}) failed (${errorMessage(error)}); sample 1 was chosen`);
      choose(0, 'fallback');
    }
  },
};
