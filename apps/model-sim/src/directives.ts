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

/** A directive's value lower-cased, or undefined when absent or given as a bare flag. */
export function textDirective(directives: Directives, key: string): string | undefined {
  const value = directives[key];
  return typeof value === 'string' && value !== '' ? value.toLowerCase() : undefined;
}

/** The text without its directive blocks, so heuristics that read a request do not read the directives too. */
export function stripDirectives(text: string): string {
  return text.includes('[[') ? text.replace(DIRECTIVE_BLOCK, '') : text;
}

/**
 * The directives that apply to a call on a model serving `roles`. A key written `<role>.<key>`
 * (`router.error=500`) applies only when the model serves that role and then overrides the
 * unscoped key, because the narrower instruction is the deliberate one; scoped keys of other
 * roles are dropped. When several of the model's roles set the same key, the role listed first
 * in the config wins.
 */
export function directivesForRoles(directives: Directives, roles: readonly string[]): Directives {
  const keys = Object.keys(directives);
  // Most prompts carry no scoped key, and this runs on every call.
  if (!keys.some((key) => key.includes('.'))) return directives;
  const applicable: Directives = {};
  const scoped = new Map<string, Directives>();
  for (const key of keys) {
    const value = directives[key] ?? true;
    const dot = key.indexOf('.');
    if (dot === -1) {
      applicable[key] = value;
      continue;
    }
    const role = key.slice(0, dot);
    const scopedKey = key.slice(dot + 1);
    if (scopedKey === '') continue;
    const forRole = scoped.get(role) ?? {};
    forRole[scopedKey] = value;
    scoped.set(role, forRole);
  }
  const overridden = new Set<string>();
  for (const role of roles) {
    for (const [key, value] of Object.entries(scoped.get(role.toLowerCase()) ?? {})) {
      if (overridden.has(key)) continue;
      applicable[key] = value;
      overridden.add(key);
    }
  }
  return applicable;
}
