/**
 * Strict readers for what reviewers, judges and routers answer. A model's answer that does not
 * follow the format is never read as a pass or as a pick: it is `unparseable`, and the caller
 * applies its documented fallback.
 */

export type ReviewVerdict = 'PASS' | 'FAIL' | 'unparseable';

export interface ReviewReading {
  verdict: ReviewVerdict;
  /** The reasons after the verdict line, or the whole answer when there was no verdict. */
  feedback: string;
}

/** Markdown a model may wrap a verdict in (`**PASS**`, `# FAIL`, `> A`). */
const LEADING_DECORATION = String.raw`^[\s*_#>\x60]*`;
const REVIEW_PATTERN = new RegExp(`${LEADING_DECORATION}(?:verdict\\s*:\\s*)?(PASS|FAIL)\\b`, 'i');

/** A review must start with PASS or FAIL; anything else is unparseable (treated as FAIL by callers). */
export function readReview(answer: string): ReviewReading {
  const match = REVIEW_PATTERN.exec(answer);
  if (!match) return { verdict: 'unparseable', feedback: answer.trim() };
  const verdict = match[1]!.toUpperCase() as 'PASS' | 'FAIL';
  const feedback = answer
    .slice(match.index + match[0].length)
    .replace(/^[\s*_:.\-—]+/, '')
    .trim();
  return { verdict, feedback };
}

export interface JudgeReading {
  /** The picked letter, or null when the answer did not start with one of the allowed letters. */
  letter: string | null;
  reason: string;
}

/**
 * A judge's first line must be the letter alone or the letter followed by punctuation
 * ("A", "**B**", "Solution A:", "A - shorter"); "A better answer is B" is not a pick of A.
 */
export function readJudgement(answer: string, letters: string[]): JudgeReading {
  const firstLine = answer.trim().split('\n', 1)[0] ?? '';
  const match = new RegExp(`${LEADING_DECORATION}(?:(?:solution|winner|answer)\\s*:?\\s*)?([A-Z])(?:[\\s*_\\x60]*$|[\\s*_\\x60]*[-:.,)—])`, 'i').exec(
    firstLine,
  );
  const letter = match?.[1]?.toUpperCase();
  const rest = answer.trim().slice(firstLine.length).trim();
  const inlineReason = match ? firstLine.slice(match[0].length).trim() : '';
  const reason = [inlineReason, rest].filter(Boolean).join(' ').trim();
  if (letter === undefined || !letters.includes(letter)) return { letter: null, reason: answer.trim() };
  return { letter, reason };
}

export interface RouterReading {
  route: string;
  confidence: number;
  reason: string;
}

/**
 * A router answers one JSON object `{route, confidence, reason}`; it may be fenced or surrounded
 * by prose. Returns an error message instead when the answer is not usable.
 */
export function readRouterAnswer(answer: string, routes: string[]): RouterReading | { error: string } {
  const start = answer.indexOf('{');
  const end = answer.lastIndexOf('}');
  if (start === -1 || end < start) return { error: 'router answer has no JSON object' };
  let parsed: unknown;
  try {
    parsed = JSON.parse(answer.slice(start, end + 1));
  } catch {
    return { error: 'router answer is not valid JSON' };
  }
  if (typeof parsed !== 'object' || parsed === null) return { error: 'router answer is not a JSON object' };
  const { route, confidence, reason } = parsed as Record<string, unknown>;
  if (typeof route !== 'string' || !routes.includes(route)) {
    return { error: `router chose an unknown route ${JSON.stringify(route)}; routes are ${routes.join(', ')}` };
  }
  const level = typeof confidence === 'number' && Number.isFinite(confidence) ? Math.min(Math.max(confidence, 0), 1) : 0;
  return { route, confidence: level, reason: typeof reason === 'string' ? reason : '' };
}

export interface SelectionReading {
  /** The chosen candidate, 1-based, or null when the answer was not a valid selection. */
  index: number | null;
  confidence: number | null;
  reason: string;
}

/**
 * A selector must answer `SELECTED: <n>` (n between 1 and `count`) on its first non-empty line,
 * and may add `CONFIDENCE: <0..1>`; anything else, or a number out of range, is unparseable.
 */
export function readSelection(answer: string, count: number): SelectionReading {
  const lines = answer
    .trim()
    .split('\n')
    .map((line) => line.trim())
    .filter(Boolean);
  const first = new RegExp(`${LEADING_DECORATION}selected\\s*:\\s*(?:candidate\\s*)?#?(\\d+)\\b`, 'i').exec(lines[0] ?? '');
  const index = first ? Number(first[1]) : Number.NaN;
  if (!Number.isInteger(index) || index < 1 || index > count) return { index: null, confidence: null, reason: answer.trim() };
  const confidenceLine = lines.slice(1).find((line) => /^[\s*_]*confidence\s*:/i.test(line));
  const confidenceMatch = confidenceLine ? /confidence\s*:\s*([0-9]*\.?[0-9]+)/i.exec(confidenceLine) : null;
  const confidence = confidenceMatch ? Number(confidenceMatch[1]) : Number.NaN;
  const reason = lines
    .slice(1)
    .filter((line) => line !== confidenceLine)
    .join(' ');
  return { index, confidence: confidence >= 0 && confidence <= 1 ? confidence : null, reason };
}

export type CritiqueVerdict = 'YES' | 'NO' | 'unparseable';

export interface CritiqueReading {
  verdict: CritiqueVerdict;
  /** The issues listed after a YES (or the whole answer when unparseable). */
  issues: string;
}

/** A critique must start with `ISSUES_FOUND: YES` or `ISSUES_FOUND: NO`; anything else is unparseable. */
export function readCritique(answer: string): CritiqueReading {
  const match = new RegExp(`${LEADING_DECORATION}issues[_ ]found\\s*:\\s*(YES|NO)\\b`, 'i').exec(answer);
  if (!match || answer.slice(0, match.index).trim() !== '') return { verdict: 'unparseable', issues: answer.trim() };
  const verdict = match[1]!.toUpperCase() as 'YES' | 'NO';
  return { verdict, issues: answer.slice(match.index + match[0].length).trim() };
}
