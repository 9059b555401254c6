import { z } from 'zod';
import { generate } from '../generate';
import { Role, StepId, Template, templatesIn } from './fields';
import type { StepDefinition } from './types';

export const GenerateStepSchema = z.strictObject({
  id: StepId.optional(),
  role: Role,
  /** A system message put before the conversation (or before `prompt`). */
  system: Template.optional(),
  /** When set, the model gets this one user message instead of the request's conversation. */
  prompt: Template.optional(),
  temperature: z.number().min(0).max(2).optional(),
  maxTokens: z.number().int().positive().optional(),
});
export type GenerateStepDeclaration = z.infer<typeof GenerateStepSchema>;

/** One model call whose answer becomes the answer (a draft, when a later step may replace it). */
export const generateStep: StepDefinition<GenerateStepDeclaration> = {
  schema: GenerateStepSchema,
  answers: true,
  replacesAnswer: true,
  streamsFinalAnswer: true,
  roles: (options) => [options.role],
  templates: (options) => templatesIn(options.system, options.prompt),
  async run(run, step) {
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
  },
};
