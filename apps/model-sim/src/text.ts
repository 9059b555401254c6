import { numericDirective } from './directives';
import type { AnswerGenerator } from './simulator';

const WORDS = [
  'the',
  'model',
  'answer',
  'simulated',
  'token',
  'stream',
  'request',
  'pattern',
  'host',
  'memory',
  'latency',
  'queue',
  'worker',
  'result',
  'context',
  'value',
  'system',
  'quickly',
  'carefully',
  'data',
  'and',
  'of',
  'to',
  'in',
  'with',
  'for',
  'is',
  'are',
  'this',
  'that',
  'function',
  'returns',
  'checks',
  'builds',
  'reads',
  'writes',
  'sends',
  'keeps',
  'finds',
  'gives',
  'simple',
  'small',
  'large',
  'fast',
  'stable',
  'clear',
  'first',
  'next',
  'final',
  'every',
  'plan',
  'step',
  'review',
  'draft',
  'idea',
  'reason',
  'detail',
  'example',
  'summary',
  'question',
  'server',
  'client',
  'record',
  'event',
  'message',
  'option',
  'limit',
  'budget',
  'score',
  'choice',
  'we',
  'it',
  'each',
  'some',
  'more',
  'less',
  'then',
  'also',
  'only',
  'here',
] as const;

/** FNV-1a, 32-bit: cheap, stable across runs and platforms. */
export function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let index = 0; index < text.length; index += 1) {
    hash ^= text.charCodeAt(index);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

/** mulberry32: a tiny seeded PRNG, so the same prompt always yields the same text. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let mixed = state;
    mixed = Math.imul(mixed ^ (mixed >>> 15), mixed | 1);
    mixed ^= mixed + Math.imul(mixed ^ (mixed >>> 7), mixed | 61);
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Words whose choice spells out a sample's variant number (see `inventText`): 80^4 variants, more
 * than any simulator run draws of one request.
 */
const VARIANT_DIGITS = 4;

/** The word indices the first `count` words of `inventText(seed, …)` use. */
function firstWordIndices(seed: number, count: number): number[] {
  const random = seededRandom(seed);
  const indices: number[] = [];
  let wordsLeftInSentence = 0;
  // The same draws, in the same order, as inventText makes for its first words.
  while (indices.length < count) {
    if (wordsLeftInSentence === 0) wordsLeftInSentence = 5 + Math.floor(random() * 10);
    indices.push(Math.floor(random() * WORDS.length));
    wordsLeftInSentence -= 1;
    if (wordsLeftInSentence > 0) random();
  }
  return indices;
}

/**
 * `count` words as sentences; each word but the last carries its following space (one word = one
 * token). `variant` 0 is the deterministic text of the seed; variant n > 0 is another text of the
 * same length, as a sample drawn at a temperature above 0 would be. Variants never repeat each
 * other or variant 0: their first words are variant 0's shifted along the word list by the digits
 * of n in base 80, so two variants differ in at least one of those words (for answers of a single
 * word this holds for the first 80 variants), and the rest of the text is drawn afresh.
 */
export function inventText(seed: number, count: number, variant = 0): string {
  const random = seededRandom(variant === 0 ? seed : fnv1a(`${seed}:${variant}`));
  const digits = variant === 0 ? [] : firstWordIndices(seed, Math.min(count, VARIANT_DIGITS));
  const parts: string[] = [];
  let wordsLeftInSentence = 0;
  for (let index = 0; index < count; index += 1) {
    const startsSentence = wordsLeftInSentence === 0;
    if (startsSentence) wordsLeftInSentence = 5 + Math.floor(random() * 10);
    let wordIndex = Math.floor(random() * WORDS.length);
    const baseIndex = digits[index];
    if (baseIndex !== undefined) wordIndex = (baseIndex + (Math.floor(variant / WORDS.length ** index) % WORDS.length)) % WORDS.length;
    let word: string = WORDS[wordIndex] ?? 'the';
    if (startsSentence) word = word.charAt(0).toUpperCase() + word.slice(1);
    wordsLeftInSentence -= 1;
    const last = index === count - 1;
    if (last || wordsLeftInSentence === 0) {
      word += '.';
      wordsLeftInSentence = 0;
    } else if (random() < 0.08) {
      word += ',';
    }
    parts.push(last ? word : `${word} `);
  }
  return parts.join('');
}

/**
 * The default generator: prose seeded by the model and messages; `tokens=N` sets its length. A
 * sampled call (`request.variant` > 0) answers another text of the same length.
 */
export const generateProse: AnswerGenerator = (request, directives, model) => {
  const seed = fnv1a(JSON.stringify([request.model, request.messages]));
  const count = Math.floor(numericDirective(directives, 'tokens') ?? model.defaultTokens);
  return { text: inventText(seed, count, request.variant ?? 0), finishReason: 'stop' };
};

/** Splits text into streamable tokens of one word plus its following whitespace; joins back exactly. */
export function splitIntoTokens(text: string): string[] {
  const tokens = text.match(/\s*\S+\s*/g);
  if (tokens === null) return text === '' ? [] : [text];
  return tokens;
}
