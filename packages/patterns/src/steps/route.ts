import type { RouteDecision } from '@mageagent/core';
import { z } from 'zod';
import { abortReason, generate, VERDICT_OPTIONS } from '../generate';
import { routerSystemPrompt } from '../prompts';
import { routeByKeywords } from '../routing';
import { readRouterAnswer } from '../verdicts';
import { Role, StepId } from './fields';
import { errorMessage, type PipelineRun } from './run';
import type { CompiledStepOf, StepDefinition } from './types';

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
export type RouteStepDeclaration = z.infer<typeof RouteStepSchema>;

/** Decides a route, then runs that pattern's steps inside this run. */
export const routeStep: StepDefinition<RouteStepDeclaration> = {
  schema: RouteStepSchema,
  answers: true,
  replacesAnswer: true,
  streamsFinalAnswer: false,
  // The router role is optional by design (keywords decide without it), so it is not required.
  roles: () => [],
  templates: () => [],
  check: (options) =>
    options.default in options.routes ? undefined : `default route "${options.default}" is not one of ${Object.keys(options.routes).join(', ')}`,
  async run(run, step, services) {
    const target = await decideRoute(run, step);
    run.pattern = target;
    await services.runPattern(target);
  },
};

/** The patterns a route step may hand over to (checked across all patterns at load). */
export const routeTargets = (options: RouteStepDeclaration): string[] => Object.values(options.routes).map((route) => route.pattern);

/**
 * Keywords decide unless a router role is declared and configured; then the router model
 * decides, and the keywords are the fallback when it fails, answers garbage or is unsure.
 */
async function decideRoute(run: PipelineRun, step: CompiledStepOf<RouteStepDeclaration>): Promise<string> {
  const { options } = step;
  const routes = Object.keys(options.routes);
  const keywords = routeByKeywords(run.lastUserText, options);
  let decision: RouteDecision = { pattern: '', route: keywords.route, method: 'keywords', reason: keywords.reason };
  if (options.role !== undefined && run.context.models.has(options.role)) {
    const fallback = (fallbackReason: string) => {
      decision = { ...decision, fallbackReason };
    };
    try {
      let reading = { error: 'no answer' } as ReturnType<typeof readRouterAnswer>;
      const routed = run.record(
        await generate(run.context, run.stepIds, {
          name: 'route',
          role: options.role,
          kind: 'route',
          options: VERDICT_OPTIONS,
          messages: [
            {
              role: 'system',
              content: routerSystemPrompt(routes.map((name) => ({ name, description: options.routes[name]!.description }))),
            },
            { role: 'user', content: run.lastUserText },
          ],
          interpret: (content) => {
            reading = readRouterAnswer(content, routes);
            return 'error' in reading
              ? { verdict: 'unparseable', note: reading.error }
              : { verdict: reading.route, note: `confidence ${reading.confidence}: ${reading.reason}` };
          },
        }),
      );
      run.outputs.set(step.id, routed.content);
      if ('error' in reading) fallback(reading.error);
      else if (reading.confidence < options.minConfidence) {
        fallback(`router confidence ${reading.confidence} is below ${options.minConfidence}`);
      } else {
        decision = { pattern: '', route: reading.route, method: 'router', reason: reading.reason, confidence: reading.confidence };
      }
    } catch (error) {
      if (run.context.signal.aborted) throw abortReason(run.context.signal);
      fallback(`router call failed: ${errorMessage(error)}`);
    }
  }
  decision.pattern = options.routes[decision.route]!.pattern;
  run.route = decision;
  run.context.events.emit({ type: 'route', decision });
  return decision.pattern;
}
