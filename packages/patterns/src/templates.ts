/**
 * Step templates (`prompt`, `system`) may reference `{{request}}` (the request as text),
 * `{{answer}}` (the current answer) and `{{steps.<id>}}` (an earlier step's output).
 */
const PLACEHOLDER = /\{\{\s*([^}]*?)\s*\}\}/g;

/** The placeholders a template uses, e.g. `request`, `steps.draft`. */
export function templateReferences(template: string): string[] {
  return [...template.matchAll(PLACEHOLDER)].map((match) => match[1] ?? '');
}

/** Fills a template; callers have checked its references at load time. */
export function renderTemplate(template: string, values: { request: string; answer: string; steps: ReadonlyMap<string, string> }): string {
  return template.replace(PLACEHOLDER, (_whole, reference: string) => {
    if (reference === 'request') return values.request;
    if (reference === 'answer') return values.answer;
    return values.steps.get(reference.slice('steps.'.length)) ?? '';
  });
}
