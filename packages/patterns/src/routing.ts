import type { RouteStepDeclaration } from './declaration';

/** Word-boundary, case-insensitive match of any keyword or phrase. */
function mentions(text: string, keywords: readonly string[]): string | undefined {
  return keywords.find((keyword) => {
    const escaped = keyword
      .trim()
      .replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
      .replace(/\s+/g, '\\s+');
    return new RegExp(`(?:^|\\b)${escaped}(?:\\b|$)`, 'i').test(text);
  });
}

export interface KeywordDecision {
  route: string;
  reason: string;
}

/**
 * The rule-based classifier: routes in declaration order, the first whose keywords (or a fenced
 * code block, when the route asks for it) appear in the text wins; otherwise the default route.
 */
export function routeByKeywords(text: string, step: Pick<RouteStepDeclaration, 'routes' | 'default'>): KeywordDecision {
  for (const [name, route] of Object.entries(step.routes)) {
    if (route.codeBlocks && /```/.test(text)) return { route: name, reason: 'the request contains a code block' };
    const keyword = mentions(text, route.keywords);
    if (keyword !== undefined) return { route: name, reason: `the request mentions "${keyword}"` };
  }
  return { route: step.default, reason: 'no routing keyword matched' };
}
