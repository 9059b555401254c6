/** `[[sim: ...]]` keys and flags; values are raw strings, flags are `true`. */
export type Directives = Record<string, string | true>;

const DIRECTIVE_BLOCK = /\[\[\s*sim\s*:([^\]]*)\]\]/gi;

/**
 * Reads every `[[sim: key=value; flag]]` block in the text. Keys are lower-cased; later blocks
 * override earlier ones. Values are left as strings so each consumer validates its own keys and
 * new keys need no change here.
 */
export function parseDirectives(text: string): Directives {
  const directives: Directives = {};
  for (const match of text.matchAll(DIRECTIVE_BLOCK)) {
    for (const part of (match[1] ?? '').split(';')) {
      const item = part.trim();
      if (item === '') continue;
      const equals = item.indexOf('=');
      if (equals === -1) {
        directives[item.toLowerCase()] = true;
      } else {
        const key = item.slice(0, equals).trim().toLowerCase();
        if (key !== '') directives[key] = item.slice(equals + 1).trim();
      }
    }
  }
  return directives;
}

/** A directive as a non-negative number, or undefined when absent or not a number. */
export function numericDirective(directives: Directives, key: string): number | undefined {
  const value = directives[key];
  if (typeof value !== 'string' || value === '') return undefined;
  const number = Number(value);
  return Number.isFinite(number) && number >= 0 ? number : undefined;
}
