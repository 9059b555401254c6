import type { ChatMessage } from '@mageagent/core';
import { z } from 'zod';
import { generate, VERDICT_OPTIONS } from '../generate';
import { reviewSystemPrompt, reviewUserPrompt, revisionPrompt } from '../prompts';
import { readReview } from '../verdicts';
import { Role, StepId } from './fields';
import { truncate } from './run';
import type { StepDefinition } from './types';

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
export type ValidateStepDeclaration = z.infer<typeof ValidateStepSchema>;

/**
 * Review → (revise → review)* until PASS or the revisions run out. An unparseable review counts
 * as FAIL, never as PASS. The last answer stands either way; `approved` says whether it passed.
 */
export const validateStep: StepDefinition<ValidateStepDeclaration> = {
  schema: ValidateStepSchema,
  answers: false,
  replacesAnswer: true,
  streamsFinalAnswer: false,
  roles: (options) => [options.role, ...(options.reviser ? [options.reviser] : [])],
  templates: () => [],
  check: (_options, { hasAnswer }) => (hasAnswer ? undefined : 'nothing to validate; put a generate, compete or route step before it'),
  async run(run, step) {
    const { options } = step;
    const maxRevisions = run.input.options.maxRevisions ?? options.maxRevisions;
    const reviser = options.reviser ?? run.answer!.role;
    let previousReview: string | undefined;
    for (let revisions = 0; ; revisions += 1) {
      const answer = run.answer!;
      let reading = readReview('');
      const review = run.record(
        await generate(run.context, run.stepIds, {
          name: step.id,
          role: options.role,
          kind: 'review',
          options: VERDICT_OPTIONS,
          messages: [
            { role: 'system', content: reviewSystemPrompt() },
            { role: 'user', content: reviewUserPrompt(run.requestText, answer.content, previousReview) },
          ],
          interpret: (content) => {
            reading = readReview(content);
            return reading.verdict === 'unparseable'
              ? { verdict: 'unparseable', note: 'the review did not start with PASS or FAIL; treated as FAIL' }
              : { verdict: reading.verdict, ...(reading.feedback && { note: truncate(reading.feedback, 500) }) };
          },
        }),
      );
      run.outputs.set(step.id, review.content);
      if (reading.verdict === 'PASS') {
        run.approved = true;
        return;
      }
      if (reading.verdict === 'unparseable') {
        run.warn(`review ${review.step.id} was unparseable and counted as FAIL`, review.step.id);
      }
      if (options.onFail === 'stop') {
        run.approved = false;
        run.stopped = true;
        run.warn(`the answer failed review (${reading.verdict}); the pattern stops here`, review.step.id);
        return;
      }
      if (revisions >= maxRevisions) {
        run.approved = false;
        run.warn(
          maxRevisions === 0
            ? 'the answer failed review and no revision is allowed'
            : `the answer still failed review after ${maxRevisions} revision${maxRevisions === 1 ? '' : 's'}`,
          review.step.id,
        );
        return;
      }
      const feedback = reading.feedback || 'The reviewer rejected the answer without giving reasons.';
      // The revision continues the conversation that produced the answer: its system prompt and
      // templates still apply, and the reviewer's feedback is the next user turn.
      const messages: ChatMessage[] = [...answer.messages, { role: 'assistant', content: answer.content }, { role: 'user', content: revisionPrompt(feedback) }];
      const revision = run.record(
        await generate(run.context, run.stepIds, {
          name: 'revise',
          role: reviser,
          kind: 'revision',
          options: answer.options,
          messages,
          ...(run.responseFormat && { responseFormat: run.responseFormat }),
        }),
      );
      run.answer = { content: revision.content, model: revision.step.model, role: reviser, messages: answer.messages, options: answer.options };
      run.outputs.set(step.id, revision.content);
      previousReview = review.content;
    }
  },
};
