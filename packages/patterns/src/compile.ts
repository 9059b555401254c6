import { ConfigError } from '@mageagent/core';
import {
  PatternDeclarationSchema,
  stepParts,
  templateReferences,
  type PatternDeclarationInput,
  type StepDeclaration,
  type StepType,
} from './declaration';

/** A step ready to run: its id, primitive and options, and whether its output is final. */
export type CompiledStep = ReturnType<typeof stepParts> & {
  id: string;
  /** A generate step whose answer nothing later can replace: its deltas are the final answer. */
  final: boolean;
};

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

/** Steps after which there is an answer to review, compete with or extract tools from. */
const ANSWERING: readonly StepType[] = ['generate', 'compete', 'route'];
/** Steps that may replace the answer, so an earlier generate is only a draft. */
const REPLACING: readonly StepType[] = ['generate', 'validate', 'compete', 'route'];

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
    const at = `${where}, step ${index + 1} (${parts.type})`;
    const id = parts.options.id ?? `${parts.type === 'extractTools' ? 'extract-tools' : parts.type}-${index + 1}`;
    if (ids.has(id)) throw new ConfigError(`${at}: duplicate step id "${id}"`);
    const earlier = declaration.steps.slice(0, index).map((previous) => stepParts(previous).type);
    const hasAnswer = earlier.some((type) => ANSWERING.includes(type));
    if (parts.type === 'validate' && !hasAnswer) {
      throw new ConfigError(`${at}: nothing to validate; put a generate, compete or route step before it`);
    }
    if (parts.type === 'extractTools' && parts.options.from === 'answer' && !hasAnswer) {
      throw new ConfigError(`${at}: no answer to extract tool calls from; use from: request or put an answering step first`);
    }
    if (parts.type === 'route' && !(parts.options.default in parts.options.routes)) {
      throw new ConfigError(`${at}: default route "${parts.options.default}" is not one of ${Object.keys(parts.options.routes).join(', ')}`);
    }
    for (const template of templatesOf(step)) {
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
    const later = declaration.steps.slice(index + 1).map((next) => stepParts(next).type);
    const final = parts.type === 'generate' && !later.some((type) => REPLACING.includes(type));
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
  const targetsOf = (pattern: CompiledPattern) =>
    pattern.steps.flatMap((step) => (step.type === 'route' ? Object.values(step.options.routes).map((route) => route.pattern) : []));
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
  const roles = new Set<string>();
  for (const step of pattern.steps) {
    switch (step.type) {
      case 'generate':
        roles.add(step.options.role);
        break;
      case 'validate':
        roles.add(step.options.role);
        if (step.options.reviser) roles.add(step.options.reviser);
        break;
      case 'compete':
        for (const role of step.options.roles) roles.add(role);
        roles.add(step.options.judge);
        break;
      case 'extractTools':
        roles.add(step.options.role);
        break;
      case 'route':
        break;
    }
  }
  return [...roles];
}

function templatesOf(step: StepDeclaration): string[] {
  const parts = stepParts(step);
  if (parts.type === 'generate' || parts.type === 'compete') {
    return [parts.options.system, parts.options.prompt].filter((value): value is string => value !== undefined);
  }
  return [];
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
