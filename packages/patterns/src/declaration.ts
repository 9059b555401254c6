import { z } from 'zod';
import { STEP_DEFINITIONS, StepKinds, type StepOptions, type StepType } from './steps';

/**
 * The declared form of a pattern: a named list of steps, each one of the step kinds of
 * `steps/` (`- generate: { … }`, `- validate: { … }`, …). Built-in patterns are declared in this
 * form too, so there is one mechanism for both. Templates are described in `templates.ts`.
 */

/** One declared step: `{ <kind>: options }`, for each kind of the step table. */
export type StepDeclaration = { [Kind in StepType]: { [Key in Kind]: StepOptions<Kind> } }[StepType];
/** How a step is written before defaults are applied. */
export type StepDeclarationInput = { [Kind in StepType]: { [Key in Kind]: z.input<(typeof STEP_DEFINITIONS)[Kind]['schema']> } }[StepType];

export const StepDeclarationSchema = z.union(
  StepKinds.map((kind) => z.strictObject({ [kind]: STEP_DEFINITIONS[kind].schema })) as unknown as [z.ZodType, z.ZodType, ...z.ZodType[]],
) as unknown as z.ZodType<StepDeclaration, StepDeclarationInput>;

export const PatternDeclarationSchema = z.strictObject({
  description: z.string().min(1).max(500),
  /** When to choose it, for GET /patterns and the README. */
  whenToUse: z.string().max(500).optional(),
  steps: z.array(StepDeclarationSchema).min(1).max(32),
});

export const PatternNameSchema = z.string().regex(/^[a-z][a-z0-9_-]{0,63}$/, 'pattern names are lower-case letters, digits, _ or -, up to 64');

export type PatternDeclaration = z.infer<typeof PatternDeclarationSchema>;
/** What a declaration looks like before defaults are applied (how files and built-ins write it). */
export type PatternDeclarationInput = z.input<typeof PatternDeclarationSchema>;

/** A step's kind and options, whichever key it was declared under. */
export type StepParts = { [Kind in StepType]: { type: Kind; options: StepOptions<Kind> } }[StepType];

/** The kind and options of a declared step. */
export function stepParts(step: StepDeclaration): StepParts {
  const type = Object.keys(step)[0] as StepType;
  return { type, options: (step as Record<string, unknown>)[type] } as StepParts;
}

export { StepKinds, type StepType } from './steps';
export { renderTemplate, templateReferences } from './templates';
export type {
  CompeteStepDeclaration,
  ExtractToolsStepDeclaration,
  GenerateStepDeclaration,
  RouteStepDeclaration,
  ValidateStepDeclaration,
} from './steps';
export { CompeteStepSchema, ExtractToolsStepSchema, GenerateStepSchema, RouteStepSchema, ValidateStepSchema } from './steps';
