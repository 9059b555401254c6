import { ConfigError } from '@mageagent/core';
import { PatternDeclarationSchema, stepParts, type PatternDeclarationInput, type StepDeclaration, type StepParts } from './declaration';
import { routeTargets, STEP_DEFINITIONS, type StepDefinition } from './steps';
import { templateReferences } from './templates';

/** A step ready to run: its id, kind and options, and whether its output is final. */
export type CompiledStep = StepParts & {
  id: string;
  /** A step whose answer nothing later can replace, written by its last call: those deltas are the final answer. */
  final: boolean;
};

/** A step's definition, seen through its kind-independent parts. */
function definitionOf(parts: StepParts): StepDefinition<unknown> {
  return STEP_DEFINITIONS[parts.type] as unknown as StepDefinition<unknown>;
}

/** A pattern checked and ready to run. */
export interface CompiledPattern {
  name: string;
  description: string;
  whenToUse?: string;
  builtIn: boolean;
  steps: CompiledStep[];
  /** The declaration as written (defaults applied), for GET /patterns. */
  declaration: StepDeclaration[];
}

/**
 * Parses and checks one declaration. Every problem names the source, the pattern and the step,
 * because a bad declaration must fail start-up with a message an operator can act on.
 */
export function compilePattern(name: string, input: unknown, source: string, builtIn = false): CompiledPattern {
  const where = `${source}: pattern "${name}"`;
  const parsed = PatternDeclarationSchema.safeParse(input);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${describePath(issue.path)}: ${issue.message}`);
    throw new ConfigError(`${where}: ${problems.join('; ')}`, problems);
  }
  const declaration = parsed.data;
  const ids = new Set<string>();
  const steps: CompiledStep[] = declaration.steps.map((step, index) => {
    const parts = stepParts(step);
    const definition = definitionOf(parts);
    const at = `${where}, step ${index + 1} (${parts.type})`;
    const declaredId = (parts.options as { id?: string }).id;
    const id = declaredId ?? `${parts.type === 'extractTools' ? 'extract-tools' : parts.type}-${index + 1}`;
    if (ids.has(id)) throw new ConfigError(`${at}: duplicate step id "${id}"`);
    const earlier = declaration.steps.slice(0, index).map((previous) => definitionOf(stepParts(previous)));
    const hasAnswer = earlier.some((previous) => previous.answers);
    const problem = definition.check?.(parts.options, { hasAnswer });
    if (problem !== undefined) throw new ConfigError(`${at}: ${problem}`);
    for (const template of definition.templates(parts.options)) {
      for (const reference of templateReferences(template)) {
        const known = reference === 'request' || reference === 'answer' || (reference.startsWith('steps.') && ids.has(reference.slice(6)));
        if (!known) {
          throw new ConfigError(
            `${at}: template references {{${reference}}}; use {{request}}, {{answer}} or {{steps.<id>}} of an earlier step (${[...ids].join(', ') || 'none yet'})`,
          );
        }
        if (reference === 'answer' && !hasAnswer) throw new ConfigError(`${at}: {{answer}} is used before any step answers`);
      }
    }
    ids.add(id);
    const later = declaration.steps.slice(index + 1).map((next) => definitionOf(stepParts(next)));
    const final = definition.streamsFinalAnswer && !later.some((next) => next.replacesAnswer);
    return { ...parts, id, final } as CompiledStep;
  });
  if (!steps.some((step) => step.type !== 'validate')) {
    throw new ConfigError(`${where}: a pattern needs a step that answers (generate, compete, route or extractTools)`);
  }
  return {
    name,
    description: declaration.description,
    ...(declaration.whenToUse !== undefined && { whenToUse: declaration.whenToUse }),
    builtIn,
    steps,
    declaration: declaration.steps,
  };
}

/** Checks what needs every pattern at once: route targets exist and routes do not loop. */
export function checkRouteTargets(patterns: ReadonlyMap<string, CompiledPattern>, sourceOf: (name: string) => string): void {
  const targetsOf = (pattern: CompiledPattern) => pattern.steps.flatMap((step) => (step.type === 'route' ? routeTargets(step.options) : []));
  for (const pattern of patterns.values()) {
    for (const target of targetsOf(pattern)) {
      if (!patterns.has(target)) {
        throw new ConfigError(
          `${sourceOf(pattern.name)}: pattern "${pattern.name}" routes to unknown pattern "${target}"; known: ${[...patterns.keys()].join(', ')}`,
        );
      }
    }
  }
  const visit = (name: string, trail: string[]): void => {
    if (trail.includes(name)) {
      throw new ConfigError(`${sourceOf(trail[0]!)}: routes loop: ${[...trail, name].join(' → ')}`);
    }
    const pattern = patterns.get(name);
    if (pattern) for (const target of targetsOf(pattern)) visit(target, [...trail, name]);
  };
  for (const name of patterns.keys()) visit(name, []);
}

/** The roles a pattern's steps call, router roles excepted (a router is optional by design). */
export function rolesOf(pattern: CompiledPattern): string[] {
  return [...new Set(pattern.steps.flatMap((step) => definitionOf(step).roles(step.options)))];
}

/** `steps.1.validate.maxRevisions` → `step 2 (validate).maxRevisions`, the way operators count. */
function describePath(path: PropertyKey[]): string {
  if (path[0] === 'steps' && typeof path[1] === 'number') {
    const rest = path.slice(2).map(String);
    const type = rest.shift();
    return `step ${path[1] + 1}${type ? ` (${type})` : ''}${rest.length > 0 ? `.${rest.join('.')}` : ''}`;
  }
  return path.map(String).join('.') || '(root)';
}

/** Declarations as written in code or files, before defaults. */
export type PatternDeclarations = Record<string, PatternDeclarationInput>;
