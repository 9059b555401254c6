import { ModelUnavailableError, type ChatMessage, type TaskOptions } from '@mageagent/core';
import { z } from 'zod';
import { abortReason, generate, type GenerateOutcome } from '../generate';
import { aggregateSystemPrompt } from '../prompts';
import { fanOut } from './fan-out';
import { Role, StepId, Template, templatesIn } from './fields';
import { errorMessage, type PipelineRun } from './run';
import type { CompiledStepOf, StepDefinition } from './types';

/** The temperature samples are drawn at when a reference sets none: samples at 0 would all be the same answer. */
export const DEFAULT_SAMPLE_TEMPERATURE = 0.7;

const ReferenceSchema = z.strictObject({
  role: Role,
  /** Answers to draw from this role in each layer (Self-MoA: several samples of one model). */
  samples: z.number().int().min(1).max(8).default(1),
  /** Its temperature; with `samples` > 1 the default is 0.7, else the role's own. */
  temperature: z.number().min(0).max(2).optional(),
});

export const AggregateStepSchema = z
  .strictObject({
    id: StepId.optional(),
    /** The proposers of every layer; all of a layer start at once. */
    references: z.array(ReferenceSchema).min(1).max(8),
    /** Layers of proposers: from layer 2 on, each proposer sees the previous layer's answers. */
    layers: z.number().int().min(1).max(4).default(1),
    /** The role that writes the final answer from the last layer's answers. */
    aggregator: Role,
    aggregatorTemperature: z.number().min(0).max(2).optional(),
    /** Fewer answers than this in a layer fail the step (each failed reference drops out with a warning). */
    minReferences: z.number().int().min(1).max(64).default(1),
    /** Like generate's: an extra system message, or one prompt instead of the request's conversation. */
    system: Template.optional(),
    prompt: Template.optional(),
  })
  .refine((step) => step.minReferences <= step.references.reduce((total, reference) => total + reference.samples, 0), {
    message: 'minReferences is more than the references (samples included) of a layer',
    path: ['minReferences'],
  });
export type AggregateStepDeclaration = z.infer<typeof AggregateStepSchema>;

/** One proposer call of a layer: a reference's role, which of its samples, at what temperature. */
interface Proposer {
  role: string;
  sample: number;
  temperature: number | undefined;
}

/**
 * Mixture-of-Agents: layers of proposers, each layer's proposers starting at once (the host
 * leases serialise them on one GPU and run them in parallel across several); from layer 2 on each
 * proposer also sees the previous layer's answers; then the aggregator synthesises the last
 * layer's answers into the answer (Together's prompt: evaluate critically, some may be wrong).
 * A failed proposer drops out with a warning; a layer with fewer than `minReferences` answers
 * fails the step; a failed aggregator leaves the first answer of the last layer, with a warning.
 */
export const aggregateStep: StepDefinition<AggregateStepDeclaration> = {
  schema: AggregateStepSchema as unknown as z.ZodType<AggregateStepDeclaration>,
  answers: true,
  replacesAnswer: true,
  streamsFinalAnswer: true,
  roles: (options) => [...options.references.map((reference) => reference.role), options.aggregator],
  templates: (options) => templatesIn(options.system, options.prompt),
  async run(run, step) {
    const { options } = step;
    const conversation = run.messagesFor({ prompt: options.prompt });
    const proposers: Proposer[] = options.references.flatMap((reference) =>
      Array.from({ length: reference.samples }, (_unused, sample) => ({
        role: reference.role,
        sample: sample + 1,
        temperature: reference.temperature ?? (reference.samples > 1 ? DEFAULT_SAMPLE_TEMPERATURE : undefined),
      })),
    );
    run.aggregation = { layers: [] };
    let previous: GenerateOutcome[] = [];
    for (let layer = 1; layer <= options.layers; layer += 1) {
      previous = await runLayer(run, step, layer, proposers, conversation, previous);
    }
    await aggregate(run, step, conversation, previous);
  },
};

async function runLayer(
  run: PipelineRun,
  step: CompiledStepOf<AggregateStepDeclaration>,
  layer: number,
  proposers: Proposer[],
  conversation: ChatMessage[],
  previous: GenerateOutcome[],
): Promise<GenerateOutcome[]> {
  const { options } = step;
  const system = [
    ...(previous.length > 0 ? [aggregateSystemPrompt(previous.map((outcome) => outcome.content))] : []),
    ...(options.system === undefined ? [] : [run.render(options.system)]),
  ];
  const messages: ChatMessage[] = [...(system.length > 0 ? [{ role: 'system' as const, content: system.join('\n\n') }] : []), ...conversation];
  const { answered, failures } = await fanOut(
    run,
    proposers,
    (proposer, index) =>
      generate(run.context, run.stepIds, {
        name: `${step.id}-layer-${layer}`,
        role: proposer.role,
        kind: 'reference',
        position: { layer, reference: index + 1 },
        messages,
        options: sampleOptions(run, proposer.temperature),
      }),
    (proposer, index) => `reference ${index + 1} of layer ${layer} (${proposer.role}${proposer.sample > 1 ? `, sample ${proposer.sample}` : ''})`,
  );
  run.aggregation?.layers.push({ layer, answered: answered.length, failed: failures.length });
  if (answered.length < options.minReferences) {
    if (answered.length === 0 && failures[0] !== undefined) throw failures[0];
    throw new ModelUnavailableError(
      `only ${answered.length} of ${proposers.length} references of layer ${layer} answered; step ${step.id} needs at least ${options.minReferences}`,
      { details: { layer, answered: answered.length, needed: options.minReferences } },
    );
  }
  return answered.map(({ outcome }) => outcome);
}

async function aggregate(
  run: PipelineRun,
  step: CompiledStepOf<AggregateStepDeclaration>,
  conversation: ChatMessage[],
  references: GenerateOutcome[],
): Promise<void> {
  const { options } = step;
  const system = aggregateSystemPrompt(references.map((outcome) => outcome.content));
  const messages: ChatMessage[] = [
    { role: 'system', content: options.system === undefined ? system : `${system}\n\n${run.render(options.system)}` },
    ...conversation,
  ];
  const callOptions = run.answerOptions({ ...(options.aggregatorTemperature !== undefined && { temperature: options.aggregatorTemperature }) });
  try {
    const outcome = run.record(
      await generate(run.context, run.stepIds, {
        name: `${step.id}-aggregate`,
        role: options.aggregator,
        kind: 'aggregate',
        final: step.final,
        messages,
        options: callOptions,
        ...(run.responseFormat && { responseFormat: run.responseFormat }),
      }),
    );
    run.outputs.set(step.id, outcome.content);
    run.answer = { content: outcome.content, model: outcome.step.model, role: options.aggregator, messages, options: callOptions };
  } catch (error) {
    if (run.context.signal.aborted) throw abortReason(run.context.signal);
    // The references are in hand: a failed synthesis costs the synthesis, not the task.
    const [first] = references;
    if (first === undefined) throw error;
    run.warn(`the aggregator (${options.aggregator}) failed (${errorMessage(error)}); the first reference of the last layer is the answer`);
    if (run.aggregation) run.aggregation.fallback = true;
    run.outputs.set(step.id, first.content);
    run.answer = { content: first.content, model: first.step.model, role: first.step.role, messages: conversation, options: callOptions };
  }
}

/** A sample's options: its own temperature (the request's must not flatten the samples), the request's token limit. */
export function sampleOptions(run: PipelineRun, temperature: number | undefined): TaskOptions {
  const { maxTokens } = run.input.options;
  return {
    ...(temperature !== undefined ? { temperature } : run.input.options.temperature !== undefined && { temperature: run.input.options.temperature }),
    ...(maxTokens !== undefined && { maxTokens }),
  };
}
