import { z } from 'zod';

/**
 * The declared form of a pattern: a named list of steps built from five primitives. Built-in
 * patterns are declared in this form too, so there is one mechanism for both.
 *
 * Templates (`prompt`, `system`) may reference `{{request}}` (the request as text),
 * `{{answer}}` (the current answer) and `{{steps.<id>}}` (an earlier step's output).
 */

const StepId = z.string().regex(/^[a-z][a-z0-9_-]{0,31}$/, 'step ids are lower-case letters, digits, _ or -, up to 32');
const Role = z.string().min(1).max(64);
const Template = z.string().min(1).max(20_000);

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

export const ValidateStepSchema = z.strictObject({
  id: StepId.optional(),
  role: Role.default('validator'),
  /** What a failed review does: `revise` asks for a revision with the feedback, `stop` ends the pipeline. */
  onFail: z.enum(['revise', 'stop']).default('revise'),
  /** Revisions allowed (each re-reviewed); the request's `options.maxRevisions` overrides. */
  maxRevisions: z.number().int().min(0).max(5).default(1),
  /** The role that revises; default: the role that wrote the answer. */
  reviser: Role.optional(),
});

export const CompeteStepSchema = z.strictObject({
  id: StepId.optional(),
  /** The competing roles, solutions A, B, ... in this order; all start together. */
  roles: z.array(Role).min(2).max(6).default(['primary', 'competitor']),
  judge: Role.default('validator'),
  /** Like generate's `prompt`: when set, candidates get this message instead of the conversation. */
  prompt: Template.optional(),
  system: Template.optional(),
});

export const ExtractToolsStepSchema = z.strictObject({
  id: StepId.optional(),
  role: Role.default('tools'),
  /** `answer`: calls that carry out the current answer; `request`: calls straight from the request. */
  from: z.enum(['answer', 'request']).default('answer'),
  /** `auto`: when the request brings tools or reads like it needs them; the request's `options.extractTools` overrides. */
  when: z.enum(['auto', 'always', 'never']).default('auto'),
});

const RouteTargetSchema = z.strictObject({
  /** The pattern this route runs. */
  pattern: z.string().min(1),
  /** Shown to the router model. */
  description: z.string().min(1).max(500),
  /** Case-insensitive words or phrases (matched on word boundaries) that pick this route without a model. */
  keywords: z.array(z.string().min(1)).default([]),
  /** Whether a fenced code block in the request picks this route. */
  codeBlocks: z.boolean().default(false),
});

/** Hands the task to another pattern; steps after it run after that pattern's. */
export const RouteStepSchema = z.strictObject({
  id: StepId.optional(),
  /** The router model's role; used only when that role is configured, keywords otherwise. */
  role: Role.optional(),
  /** Routes in priority order: the first whose keywords match wins. */
  routes: z.record(z.string().regex(/^[a-z][a-z0-9_-]*$/), RouteTargetSchema).refine((routes) => Object.keys(routes).length > 0, {
    message: 'at least one route is required',
  }),
  /** The route taken when no keyword matches. */
  default: z.string().min(1),
  /** Router answers below this confidence fall back to the keywords. */
  minConfidence: z.number().min(0).max(1).default(0.5),
});

export const StepDeclarationSchema = z.union([
  z.strictObject({ generate: GenerateStepSchema }),
  z.strictObject({ validate: ValidateStepSchema }),
  z.strictObject({ compete: CompeteStepSchema }),
  z.strictObject({ extractTools: ExtractToolsStepSchema }),
  z.strictObject({ route: RouteStepSchema }),
]);

export const PatternDeclarationSchema = z.strictObject({
  description: z.string().min(1).max(500),
  /** When to choose it, for GET /patterns and the README. */
  whenToUse: z.string().max(500).optional(),
  steps: z.array(StepDeclarationSchema).min(1).max(32),
});

export const PatternNameSchema = z
  .string()
  .regex(/^[a-z][a-z0-9_-]{0,63}$/, 'pattern names are lower-case letters, digits, _ or -, up to 64');

export type GenerateStepDeclaration = z.infer<typeof GenerateStepSchema>;
export type ValidateStepDeclaration = z.infer<typeof ValidateStepSchema>;
export type CompeteStepDeclaration = z.infer<typeof CompeteStepSchema>;
export type ExtractToolsStepDeclaration = z.infer<typeof ExtractToolsStepSchema>;
export type RouteStepDeclaration = z.infer<typeof RouteStepSchema>;
export type StepDeclaration = z.infer<typeof StepDeclarationSchema>;
export type PatternDeclaration = z.infer<typeof PatternDeclarationSchema>;
/** What a declaration looks like before defaults are applied (how files and built-ins write it). */
export type PatternDeclarationInput = z.input<typeof PatternDeclarationSchema>;

export type StepType = 'generate' | 'validate' | 'compete' | 'extractTools' | 'route';

/** The primitive and its options, whichever key the step was declared under. */
export function stepParts(step: StepDeclaration):
  | { type: 'generate'; options: GenerateStepDeclaration }
  | { type: 'validate'; options: ValidateStepDeclaration }
  | { type: 'compete'; options: CompeteStepDeclaration }
  | { type: 'extractTools'; options: ExtractToolsStepDeclaration }
  | { type: 'route'; options: RouteStepDeclaration } {
  if ('generate' in step) return { type: 'generate', options: step.generate };
  if ('validate' in step) return { type: 'validate', options: step.validate };
  if ('compete' in step) return { type: 'compete', options: step.compete };
  if ('extractTools' in step) return { type: 'extractTools', options: step.extractTools };
  return { type: 'route', options: step.route };
}

const PLACEHOLDER = /\{\{\s*([^}]*?)\s*\}\}/g;

/** The placeholders a template uses, e.g. `request`, `steps.draft`. */
export function templateReferences(template: string): string[] {
  return [...template.matchAll(PLACEHOLDER)].map((match) => match[1] ?? '');
}

/** Fills a template; callers have checked its references at load time. */
export function renderTemplate(template: string, values: { request: string; answer: string; steps: ReadonlyMap<string, string> }): string {
  return template.replace(PLACEHOLDER, (_whole, reference: string) => {
    if (reference === 'request') return values.request;
    if (reference === 'answer') return values.answer;
    return values.steps.get(reference.slice('steps.'.length)) ?? '';
  });
}
