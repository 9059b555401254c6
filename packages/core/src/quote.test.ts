import { z } from 'zod';
import { ValidationError, NotFoundError } from './errors';
import { boundDetails, quote } from './quote';
import { zodIssuesToDetails } from './schemas';

test('quote keeps short input and cuts long input, saying how much was left out', () => {
  expect(quote('short')).toBe('short');
  expect(quote('x'.repeat(100))).toBe(`${'x'.repeat(64)}…(+36 chars)`);
  expect(quote(12345, 3)).toBe('123…(+2 chars)');
});

test('error details are bounded in string length, entries and depth', () => {
  const bounded = boundDetails({
    list: Array.from({ length: 50 }, (_, index) => ({ path: `p${index}`, message: 'm'.repeat(1000) })),
    deep: { a: { b: { c: { d: { e: 1 } } } } },
  }) as { list: unknown[]; deep: unknown };
  expect(bounded.list).toHaveLength(21);
  expect(bounded.list[20]).toBe('…and 30 more');
  expect(JSON.stringify(bounded.list[0]).length).toBeLessThan(400);
  expect(bounded.deep).toEqual({ a: { b: { c: '…' } } });
});

test('a megabyte key in a strict object gives an error body of a few hundred bytes', () => {
  const schema = z.strictObject({ prompt: z.string() });
  const key = 'k'.repeat(1_000_000);
  const parsed = schema.safeParse({ prompt: 'hi', [key]: 1 });
  expect(parsed.success).toBe(false);
  if (parsed.success) return;
  const body = new ValidationError('invalid task request', zodIssuesToDetails(parsed.error)).toBody();
  expect(JSON.stringify(body).length).toBeLessThan(1000);
  expect(body.details).toEqual([{ path: '(root)', message: expect.stringContaining('Unrecognized key') }]);
});

test('error messages are bounded too, whatever built them', () => {
  expect(new NotFoundError(`no route for ${'/x'.repeat(100_000)}`).toBody().message.length).toBeLessThanOrEqual(1100);
});

test('zod issues are listed up to twenty, then counted', () => {
  const schema = z.array(z.number());
  const parsed = schema.safeParse(Array.from({ length: 100 }, () => 'not a number'));
  if (parsed.success) throw new Error('expected a failure');
  const details = zodIssuesToDetails(parsed.error);
  expect(details).toHaveLength(21);
  expect(details[20]).toEqual({ path: '(root)', message: '…and 80 more problems' });
});
