import { z } from 'zod';
import { abortReason, generate, VERDICT_OPTIONS, type GenerateOutcome } from '../generate';
import { judgeSystemPrompt, judgeUserPrompt } from '../prompts';
import { readJudgement } from '../verdicts';
import { fanOut } from './fan-out';
import { Role, StepId, Template, templatesIn } from './fields';
import { errorMessage, truncate } from './run';
import type { StepDefinition } from './types';

export const CompeteStepSchema = z.strictObject({
  id: StepId.optional(),
  /** The competing roles, solutions A, B, ... in this order; all start together. */
  roles: z.array(Role).min(2).max(6).default(['primary', 'competitor']),
  judge: Role.default('validator'),
  /** Like generate's `prompt`: when set, candidates get this message instead of the conversation. */
  prompt: Template.optional(),
  system: Template.optional(),
});
export type CompeteStepDeclaration = z.infer<typeof CompeteStepSchema>;

/**
 * Candidates start together (the host scheduler, not this code, serialises them on one GPU);
 * the judge picks a letter. A failed candidate drops out with a warning; an unparseable
 * judgement falls back to solution A, the first role (by convention the strongest model).
 */
export const competeStep: StepDefinition<CompeteStepDeclaration> = {
  schema: CompeteStepSchema,
  answers: true,
  replacesAnswer: true,
  streamsFinalAnswer: false,
  roles: (options) => [...options.roles, options.judge],
  templates: (options) => templatesIn(options.system, options.prompt),
  async run(run, step) {
    const { options } = step;
    const letters = options.roles.map((_role, index) => String.fromCharCode(65 + index));
    const messages = run.messagesFor(options);
    const callOptions = run.answerOptions({});
    const { answered, failures } = await fanOut(
      run,
      options.roles,
      (role, index) =>
        generate(run.context, run.stepIds, {
          name: `candidate-${letters[index]!.toLowerCase()}`,
          role,
          kind: 'candidate',
          messages,
          options: callOptions,
          ...(run.responseFormat && { responseFormat: run.responseFormat }),
        }),
      (role, index) => `solution ${letters[index]} (${role})`,
    );
    if (answered.length === 0) throw failures[0];
    const candidates = answered.map(({ item: role, index, outcome }) => ({ letter: letters[index]!, role, outcome }));
    const choose = (candidate: (typeof candidates)[number]) => {
      run.answer = { content: candidate.outcome.content, model: candidate.outcome.step.model, role: candidate.role, messages, options: callOptions };
      run.outputs.set(step.id, candidate.outcome.content);
    };
    if (candidates.length === 1) {
      choose(candidates[0]!);
      return;
    }
    const present = candidates.map((candidate) => candidate.letter);
    let reading = readJudgement('', present);
    let judgement: GenerateOutcome;
    try {
      judgement = run.record(
        await generate(run.context, run.stepIds, {
          name: 'judge',
          role: options.judge,
          kind: 'judge',
          options: VERDICT_OPTIONS,
          messages: [
            { role: 'system', content: judgeSystemPrompt(present) },
            {
              role: 'user',
              content: judgeUserPrompt(
                run.requestText,
                candidates.map((candidate) => ({ letter: candidate.letter, content: candidate.outcome.content })),
              ),
            },
          ],
          interpret: (content) => {
            reading = readJudgement(content, present);
            return reading.letter === null
              ? { verdict: 'unparseable', note: `the judgement did not start with ${present.join(' or ')}; fell back to ${present[0]} (the first solution)` }
              : { verdict: reading.letter, ...(reading.reason && { note: truncate(reading.reason, 500) }) };
          },
        }),
      );
    } catch (error) {
      // Both solutions are in hand: a failed judge costs the comparison, not the task.
      if (run.context.signal.aborted) throw abortReason(run.context.signal);
      run.warn(`the judge failed (${errorMessage(error)}); solution ${present[0]} (the first) was chosen`);
      choose(candidates[0]!);
      return;
    }
    if (reading.letter === null) {
      run.warn(`judgement ${judgement.step.id} was unparseable; solution ${present[0]} (the first) was chosen`, judgement.step.id);
    }
    choose(candidates.find((candidate) => candidate.letter === (reading.letter ?? present[0]))!);
  },
};
