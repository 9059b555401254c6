import type { ChatMessage, CritiqueRecord } from '@mageagent/core';
import { z } from 'zod';
import { generate, VERDICT_OPTIONS } from '../generate';
import { critiqueRevisionPrompt, critiqueSystemPrompt, critiqueUserPrompt } from '../prompts';
import { readCritique } from '../verdicts';
import { Role, StepId } from './fields';
import { truncate } from './run';
import type { StepDefinition } from './types';

export const CritiqueStepSchema = z.strictObject({
  id: StepId.optional(),
  /** The role that lists the answer's issues. */
  critic: Role.default('validator'),
  /** The role that revises; default: the role that wrote the answer. */
  reviser: Role.optional(),
  /** Critique rounds at most; each YES is followed by a revision. */
  maxRounds: z.number().int().min(1).max(4).default(2),
});
export type CritiqueStepDeclaration = z.infer<typeof CritiqueStepSchema>;

/**
 * A critic loop: the critic answers `ISSUES_FOUND: YES|NO` with a list; on YES the reviser revises
 * with the list; it stops on NO or after `maxRounds` rounds. A critique that does not start with
 * the verdict is `unparseable` and, like a failed review, treated as YES (its text is the list),
 * with a warning. Every round is recorded in `result.critique`.
 */
export const critiqueStep: StepDefinition<CritiqueStepDeclaration> = {
  schema: CritiqueStepSchema,
  answers: false,
  replacesAnswer: true,
  streamsFinalAnswer: false,
  roles: (options) => [options.critic, ...(options.reviser ? [options.reviser] : [])],
  templates: () => [],
  check: (_options, { hasAnswer }) => (hasAnswer ? undefined : 'nothing to critique; put a generate, compete, aggregate, select or route step before it'),
  async run(run, step) {
    const { options } = step;
    const record: CritiqueRecord = { rounds: [], finalVerdict: 'NO' };
    run.critique = record;
    let previousIssues: string | undefined;
    for (let round = 1; round <= options.maxRounds; round += 1) {
      const answer = run.answer!;
      let reading = readCritique('');
      const critique = run.record(
        await generate(run.context, run.stepIds, {
          name: `${step.id}-critic`,
          role: options.critic,
          kind: 'critique',
          options: VERDICT_OPTIONS,
          messages: [
            { role: 'system', content: critiqueSystemPrompt() },
            { role: 'user', content: critiqueUserPrompt(run.requestText, answer.content, previousIssues) },
          ],
          interpret: (content) => {
            reading = readCritique(content);
            return reading.verdict === 'unparseable'
              ? { verdict: 'unparseable', note: 'the critique did not start with ISSUES_FOUND: YES or NO; treated as YES' }
              : { verdict: reading.verdict, ...(reading.issues && { note: truncate(reading.issues, 500) }) };
          },
        }),
      );
      record.rounds.push({ round, verdict: reading.verdict, issues: reading.issues });
      record.finalVerdict = reading.verdict;
      run.outputs.set(step.id, critique.content);
      if (reading.verdict === 'NO') return;
      if (reading.verdict === 'unparseable') run.warn(`critique ${critique.step.id} was unparseable and counted as YES`, critique.step.id);
      const issues = reading.issues || 'The critic found issues without listing them.';
      const reviser = options.reviser ?? answer.role;
      // Like a validate revision: the answering conversation goes on, with the issues as the next turn.
      const messages: ChatMessage[] = [
        ...answer.messages,
        { role: 'assistant', content: answer.content },
        { role: 'user', content: critiqueRevisionPrompt(issues) },
      ];
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
      previousIssues = issues;
    }
    if (record.finalVerdict !== 'NO') {
      run.warn(`the critic still found issues after ${options.maxRounds} round${options.maxRounds === 1 ? '' : 's'}; the last revision stands`);
    }
  },
};
