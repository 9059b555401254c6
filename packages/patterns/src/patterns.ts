import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { ConfigError, ValidationError, type TaskResult } from '@mageagent/core';
import { BUILT_IN_PATTERNS } from './builtins';
import { checkRouteTargets, compilePattern, rolesOf, type CompiledPattern, type PatternDeclarations } from './compile';
import type { PatternContext, PatternInput } from './context';
import { PatternNameSchema, type StepDeclaration } from './declaration';
import { runCompiledPattern } from './pipeline';

/** What GET /patterns shows of a pattern. */
export interface PatternSummary {
  name: string;
  description: string;
  whenToUse?: string;
  builtIn: boolean;
  steps: StepDeclaration[];
}

const BUILT_IN_SOURCE = 'built-in patterns';

/** Declarations as read from a file: unchecked until compiled, so errors can name pattern and step. */
export interface DeclaredPatterns {
  /** Where they came from, for error messages (a file path). */
  source: string;
  patterns: Record<string, unknown>;
}

/** The patterns this process can run, by name: the built-ins plus any declared in a patterns file. */
export class PatternRegistry {
  private readonly patterns = new Map<string, CompiledPattern>();
  private readonly sources = new Map<string, string>();

  /**
   * @param declared patterns from PATTERNS_CONFIG (see loadPatternDeclarations); a declared
   *   pattern may not reuse a built-in name.
   */
  constructor(declared: DeclaredPatterns = { source: '', patterns: {} }) {
    this.add(BUILT_IN_PATTERNS, BUILT_IN_SOURCE, true);
    this.add(declared.patterns, declared.source, false);
    checkRouteTargets(this.patterns, (name) => this.sources.get(name) ?? BUILT_IN_SOURCE);
  }

  private add(declarations: PatternDeclarations | Record<string, unknown>, source: string, builtIn: boolean): void {
    for (const [name, declaration] of Object.entries(declarations)) {
      if (this.patterns.has(name)) {
        throw new ConfigError(`${source}: pattern "${name}" is already defined (${this.sources.get(name)}); choose another name`);
      }
      this.patterns.set(name, compilePattern(name, declaration, source, builtIn));
      this.sources.set(name, source);
    }
  }

  has(name: string): boolean {
    return this.patterns.has(name);
  }

  names(): string[] {
    return [...this.patterns.keys()];
  }

  list(): PatternSummary[] {
    return [...this.patterns.values()].map((pattern) => ({
      name: pattern.name,
      description: pattern.description,
      ...(pattern.whenToUse !== undefined && { whenToUse: pattern.whenToUse }),
      builtIn: pattern.builtIn,
      steps: pattern.declaration,
    }));
  }

  get(name: string): CompiledPattern {
    const pattern = this.patterns.get(name);
    if (!pattern) throw new ValidationError(`unknown pattern "${name}"`, { allowed: this.names() });
    return pattern;
  }

  /**
   * Roles the patterns call that the model config lacks. A declared pattern naming a missing role
   * is a start-up error; a built-in one is only unusable (its tasks fail with a clear message),
   * since a minimal config need not serve every built-in.
   */
  missingRoles(hasRole: (role: string) => boolean): Array<{ pattern: string; builtIn: boolean; roles: string[] }> {
    return [...this.patterns.values()]
      .map((pattern) => ({ pattern: pattern.name, builtIn: pattern.builtIn, roles: rolesOf(pattern).filter((role) => !hasRole(role)) }))
      .filter((entry) => entry.roles.length > 0);
  }
}

/** The pattern a request without `pattern` runs, unless DEFAULT_PATTERN says otherwise. */
export const DEFAULT_PATTERN = 'auto';

/**
 * The registry of a process: built-ins plus PATTERNS_CONFIG, with the default pattern checked,
 * so a typo fails start-up instead of every task.
 */
export function loadPatternRegistry(options: { patternsConfig?: string | undefined; defaultPattern?: string }): PatternRegistry {
  const registry = new PatternRegistry(options.patternsConfig ? loadPatternDeclarations(options.patternsConfig) : undefined);
  const defaultPattern = options.defaultPattern ?? DEFAULT_PATTERN;
  if (!registry.has(defaultPattern)) {
    throw new ConfigError(`DEFAULT_PATTERN "${defaultPattern}" is not a pattern; known: ${registry.names().join(', ')}`);
  }
  return registry;
}

/** Runs a pattern by name. */
export function runPattern(registry: PatternRegistry, name: string, input: PatternInput, context: PatternContext): Promise<TaskResult> {
  return runCompiledPattern(registry.get(name), (target) => registry.get(target), input, context);
}

/** Reads a PATTERNS_CONFIG file (YAML or JSON); errors name the file, and the pattern and step when there is one. */
export function loadPatternDeclarations(path: string): DeclaredPatterns {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError(`cannot read patterns file ${path}: ${(error as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (error) {
    throw new ConfigError(`${path}: not valid YAML or JSON: ${(error as Error).message}`);
  }
  // Only the outer shape here: each pattern is checked by compilePattern, so its errors name the pattern and step.
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw) || !('patterns' in raw)) {
    throw new ConfigError(`${path}: expected a top-level "patterns:" mapping of name → { description, steps }`);
  }
  const extra = Object.keys(raw).filter((key) => key !== 'patterns');
  if (extra.length > 0) throw new ConfigError(`${path}: unknown top-level key(s) ${extra.join(', ')}; only "patterns" is allowed`);
  const patterns = raw.patterns;
  if (typeof patterns !== 'object' || patterns === null || Array.isArray(patterns)) {
    throw new ConfigError(`${path}: "patterns" must be a mapping of name → { description, steps }`);
  }
  for (const name of Object.keys(patterns)) {
    const checked = PatternNameSchema.safeParse(name);
    if (!checked.success) throw new ConfigError(`${path}: pattern name "${name}": ${checked.error.issues[0]?.message}`);
  }
  return { source: path, patterns: patterns as Record<string, unknown> };
}
