import type { z } from 'zod';
import type { PipelineRun } from './run';

/** A declared step ready to run: its id, options, and whether its output is the final answer. */
export interface CompiledStepOf<Options> {
  id: string;
  options: Options;
  /** Its output is the task's final answer whatever happens next (nothing later can replace it). */
  final: boolean;
}

/** What a step's runner may do beyond its own work: hand the rest of the run to another pattern. */
export interface StepServices {
  /** Runs another pattern's steps inside the same run (a route step hands over this way). */
  runPattern(name: string): Promise<void>;
}

/** Where compile-time checks of a step stand, so a problem can say why. */
export interface StepCheckContext {
  /** An earlier step has produced an answer (something to review, extract tool calls from, …). */
  hasAnswer: boolean;
}

/**
 * Everything about one step kind, in one module (`steps/<kind>.ts`): how it is declared, what the
 * compiler checks of it, and how it runs. The table in `steps/index.ts` lists every kind, typed so
 * that a kind without a definition does not compile.
 */
export interface StepDefinition<Options> {
  /** The options' zod schema (defaults applied when parsed). */
  schema: z.ZodType<Options>;
  /** It leaves an answer behind (generate, compete, route…): later steps may review or use it. */
  answers: boolean;
  /** It may replace the answer, so an earlier `generate` is only a draft, not the final answer. */
  replacesAnswer: boolean;
  /**
   * Its last model call writes the answer in one go (a generate's call, an aggregate's aggregator),
   * so when no later step may replace the answer that call is marked `final` and its deltas are the
   * answer as it streams. Steps that choose or revise after their calls are never final.
   */
  streamsFinalAnswer: boolean;
  /** The roles it calls: the worker refuses to start when a declared pattern's role is not configured. */
  roles(options: Options): string[];
  /** The templates it renders: their `{{…}}` references are checked when the pattern is compiled. */
  templates(options: Options): string[];
  /** Further checks at compile time: a problem to report, or undefined. */
  check?(options: Options, context: StepCheckContext): string | undefined;
  /** Runs the step. */
  run(run: PipelineRun, step: CompiledStepOf<Options>, services: StepServices): Promise<void>;
}

/** For an exhaustive `switch`: a case nobody handled fails type-checking here. */
export function assertNever(value: never, what: string): never {
  throw new Error(`unhandled ${what}: ${JSON.stringify(value)}`);
}
