import { zeroUsage, addUsage, ValidationError, type TaskResult } from '@mageagent/core';
import type { PatternContext, PatternInput } from './context';
import { generate, StepIds } from './generate';

/** A named pipeline the worker can run. */
export interface PatternDefinition {
  name: string;
  description: string;
  run(input: PatternInput, context: PatternContext): Promise<TaskResult>;
}

/** A pattern that asks one role and returns its answer as is. */
function singleRole(name: string, role: string, description: string): PatternDefinition {
  return {
    name,
    description,
    async run(input, context) {
      const outcome = await generate(context, new StepIds(), { name: role, role, messages: input.messages, options: input.options });
      return {
        content: outcome.content,
        toolCalls: [],
        steps: [outcome.step],
        usage: addUsage(zeroUsage(), outcome.step.usage),
        model: outcome.step.model,
      };
    },
  };
}

const BUILT_IN: PatternDefinition[] = [
  singleRole('primary', 'primary', 'The primary (largest) model answers directly; no tool extraction.'),
  singleRole('validator', 'validator', 'The validator (small, fast) model answers directly.'),
  singleRole('competitor', 'competitor', 'The competitor (coder) model answers directly.'),
];

/** The patterns this build can run, by name. */
export class PatternRegistry {
  private readonly patterns = new Map<string, PatternDefinition>();

  constructor(definitions: PatternDefinition[] = BUILT_IN) {
    for (const definition of definitions) this.patterns.set(definition.name, definition);
  }

  has(name: string): boolean {
    return this.patterns.has(name);
  }

  names(): string[] {
    return [...this.patterns.keys()];
  }

  list(): Array<Pick<PatternDefinition, 'name' | 'description'>> {
    return [...this.patterns.values()].map(({ name, description }) => ({ name, description }));
  }

  get(name: string): PatternDefinition {
    const pattern = this.patterns.get(name);
    if (!pattern) throw new ValidationError(`unknown pattern "${name}"`, { allowed: this.names() });
    return pattern;
  }
}

/** The pattern a request without `pattern` runs. */
export const DEFAULT_PATTERN = 'primary';

/** Runs a pattern by name. */
export function runPattern(
  registry: PatternRegistry,
  name: string,
  input: PatternInput,
  context: PatternContext,
): Promise<TaskResult> {
  return registry.get(name).run(input, context);
}
