/** Longest run of client input an error message quotes back. */
export const QUOTE_MAX_CHARS = 64;

/**
 * Client input as it may appear inside an error message: at most `maxChars` characters, the rest
 * counted rather than echoed, so a megabyte key or URL never turns into a megabyte error body.
 */
export function quote(value: unknown, maxChars = QUOTE_MAX_CHARS): string {
  const text = typeof value === 'string' ? value : String(value);
  if (text.length <= maxChars) return text;
  return `${text.slice(0, maxChars)}…(+${text.length - maxChars} chars)`;
}

/** Longest string kept in an error's `details`. */
const DETAIL_MAX_CHARS = 256;
/** Most entries kept of any array (or object) in `details`; the rest are counted. */
const DETAIL_MAX_ITEMS = 20;
/** Deeper structures in `details` are cut off: details are a list of problems, not a document. */
const DETAIL_MAX_DEPTH = 4;

/**
 * An error's `details`, bounded: strings cut to 256 characters, arrays to 20 entries (plus one
 * entry saying how many were left out), nesting to 4 levels. Applied to every error body, so a
 * validation error can never echo a request back at its full size.
 */
export function boundDetails(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return quote(value, DETAIL_MAX_CHARS);
  if (value === null || typeof value !== 'object') return value;
  if (depth >= DETAIL_MAX_DEPTH) return '…';
  if (Array.isArray(value)) {
    const kept = value.slice(0, DETAIL_MAX_ITEMS).map((item) => boundDetails(item, depth + 1));
    if (value.length > DETAIL_MAX_ITEMS) kept.push(`…and ${value.length - DETAIL_MAX_ITEMS} more`);
    return kept;
  }
  const bounded: Record<string, unknown> = {};
  let kept = 0;
  for (const [key, inner] of Object.entries(value)) {
    if (kept === DETAIL_MAX_ITEMS) break;
    bounded[quote(key)] = boundDetails(inner, depth + 1);
    kept += 1;
  }
  return bounded;
}
