import { aggregateStep } from './aggregate';
import { competeStep } from './compete';
import { critiqueStep } from './critique';
import { extractToolsStep } from './extract-tools';
import { generateStep } from './generate';
import { routeStep } from './route';
import { selectStep } from './select';
import type { StepDefinition } from './types';
import { validateStep } from './validate';

/** Every step kind, as declared in patterns (`- <kind>: { … }`). */
export const StepKinds = ['generate', 'validate', 'compete', 'aggregate', 'select', 'critique', 'extractTools', 'route'] as const;
export type StepType = (typeof StepKinds)[number];

/**
 * The step kinds: adding one is one module and one line here. Each module types its definition as
 * a StepDefinition of its options; the `satisfies` makes a kind listed in StepKinds without a
 * definition (or one defined without being listed) a type error.
 */
export const STEP_DEFINITIONS = {
  generate: generateStep,
  validate: validateStep,
  compete: competeStep,
  aggregate: aggregateStep,
  select: selectStep,
  critique: critiqueStep,
  extractTools: extractToolsStep,
  route: routeStep,
} satisfies Record<StepType, Pick<StepDefinition<unknown>, 'answers' | 'replacesAnswer'>>;

/** A kind's options, defaults applied. */
export type StepOptions<Kind extends StepType> = (typeof STEP_DEFINITIONS)[Kind] extends StepDefinition<infer Options> ? Options : never;

export type { CompiledStepOf, StepCheckContext, StepDefinition, StepServices } from './types';
export { assertNever } from './types';
export { PipelineRun, conversationText } from './run';
export { fanOut, type FannedOut } from './fan-out';
export { routeTargets } from './route';
export * from './generate';
export * from './validate';
export * from './compete';
export * from './aggregate';
export * from './select';
export * from './critique';
export * from './extract-tools';
export * from './route';
