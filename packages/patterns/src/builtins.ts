import type { PatternDeclarations } from './compile';

/**
 * The built-in patterns, declared in the same form as a PATTERNS_CONFIG file. Order here is the
 * order of GET /patterns and /v1/models.
 */
export const BUILT_IN_PATTERNS: PatternDeclarations = {
  auto: {
    description: 'A classifier picks the pattern: coding → validated, reasoning → hybrid, anything else → validator.',
    whenToUse: 'You do not want to choose; mixed traffic. Uses the router role when configured, keyword rules otherwise.',
    steps: [
      {
        route: {
          role: 'router',
          routes: {
            coding: {
              pattern: 'validated',
              description: 'writing, fixing or refactoring code',
              keywords: ['implement', 'function', 'class', 'refactor', 'fix bug', 'fix the bug', 'fix a bug', 'bug fix'],
              codeBlocks: true,
            },
            reasoning: {
              pattern: 'hybrid',
              description: 'explaining, analysing, planning, designing or comparing',
              keywords: ['explain', 'analyze', 'analyse', 'analysis', 'plan', 'design', 'architecture', 'compare'],
            },
            general: { pattern: 'validator', description: 'anything else: quick questions and small talk' },
          },
          default: 'general',
        },
      },
      // Only runs when the routed pattern had no extraction of its own (the fast validator route):
      // one extraction per task, so a request's tools are never silently dropped.
      { extractTools: {} },
    ],
  },
  hybrid: {
    description: 'The primary model answers; the tools model extracts tool calls when the request needs them.',
    whenToUse: 'Reasoning and explanations that may lead to actions; the best answer quality per call.',
    steps: [{ generate: { id: 'answer', role: 'primary' } }, { extractTools: {} }],
  },
  validated: {
    description: 'The primary answers, the validator reviews (PASS/FAIL), the primary revises on FAIL; then tool extraction.',
    whenToUse: 'Code and anything where a second opinion catches mistakes; costs one or more extra calls.',
    steps: [
      { generate: { id: 'draft', role: 'primary' } },
      { validate: { id: 'review', role: 'validator', onFail: 'revise', maxRevisions: 1 } },
      { extractTools: {} },
    ],
  },
  compete: {
    description: 'Primary (A) and competitor (B) solve it side by side; the validator judges and the winner is returned.',
    whenToUse: 'Hard problems where two different models disagree usefully; costs two answers and a judgement.',
    steps: [{ compete: { id: 'compete', roles: ['primary', 'competitor'], judge: 'validator' } }, { extractTools: {} }],
  },
  moa: {
    description: 'Mixture-of-Agents: primary, competitor and validator answer at once; the primary synthesises their answers into one; then tool extraction.',
    whenToUse: 'Open-ended questions where several models see different sides; three answers and a synthesis, on one GPU one after another.',
    steps: [
      { aggregate: { id: 'moa', references: [{ role: 'primary' }, { role: 'competitor' }, { role: 'validator' }], layers: 1, aggregator: 'primary' } },
      { extractTools: {} },
    ],
  },
  'moa-deep': {
    description:
      'Two-layer Mixture-of-Agents: three proposers answer, answer again having seen each other, then the primary synthesises; then tool extraction.',
    whenToUse: 'The hardest questions, when quality matters more than time: about twice the cost of moa.',
    steps: [
      {
        aggregate: {
          id: 'moa',
          references: [{ role: 'primary' }, { role: 'competitor' }, { role: 'validator' }],
          layers: 2,
          aggregator: 'primary',
        },
      },
      { extractTools: {} },
    ],
  },
  'self-moa': {
    description: 'Self-MoA: three samples of the primary at temperature 0.7, synthesised by the primary; then tool extraction.',
    whenToUse: 'When the primary is clearly the best model: aggregating its own samples beats mixing in weaker ones (Self-MoA).',
    steps: [
      { aggregate: { id: 'self-moa', references: [{ role: 'primary', samples: 3, temperature: 0.7 }], layers: 1, aggregator: 'primary' } },
      { extractTools: {} },
    ],
  },
  'self-consistent': {
    description: 'Self-consistency: three samples of the primary at temperature 0.7; the validator picks the most consistent one; then tool extraction.',
    whenToUse: 'Questions with one right answer (facts, arithmetic, logic), where the majority of samples is usually right.',
    steps: [{ select: { id: 'select', role: 'primary', samples: 3, temperature: 0.7, judge: 'validator' } }, { extractTools: {} }],
  },
  critic: {
    description: 'The primary answers; the validator lists issues (ISSUES_FOUND: YES/NO); the primary revises, for up to two rounds; then tool extraction.',
    whenToUse: 'Writing and code where a list of concrete issues improves the answer more than a pass/fail review.',
    steps: [
      { generate: { id: 'draft', role: 'primary' } },
      { critique: { id: 'critique', critic: 'validator', reviser: 'primary', maxRounds: 2 } },
      { extractTools: {} },
    ],
  },
  tools: {
    description: 'The tools model (Hermes-3) turns the request straight into tool calls, in one short call.',
    whenToUse: 'Agent loops that need tool calls fast, not prose.',
    steps: [{ extractTools: { id: 'tools', from: 'request', when: 'always' } }],
  },
  primary: {
    description: 'The primary (largest) model answers directly; no tool extraction.',
    whenToUse: 'Plain questions where you want the strongest model and nothing else.',
    steps: [{ generate: { id: 'answer', role: 'primary' } }],
  },
  validator: {
    description: 'The validator (small, fast) model answers directly.',
    whenToUse: 'Quick, cheap answers.',
    steps: [{ generate: { id: 'answer', role: 'validator' } }],
  },
  competitor: {
    description: 'The competitor (coder) model answers directly.',
    whenToUse: 'Code questions where the coder model alone is enough.',
    steps: [{ generate: { id: 'answer', role: 'competitor' } }],
  },
};
