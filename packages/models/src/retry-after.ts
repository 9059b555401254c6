/**
 * How long a model server asked its clients to wait before the next try, read from its answer's
 * headers. `retry-after-ms` (milliseconds, sent by OpenAI and servers imitating it) is read first
 * because it is the more precise; then RFC 9110's `Retry-After`, either delay-seconds or an
 * HTTP-date in any of the three formats a recipient must accept. Anything unreadable counts as
 * absent, so a broken header never makes a caller wait longer than its own backoff would.
 */

/**
 * A non-negative decimal. RFC 9110 delay-seconds are digits only; a fraction ("1.5") is accepted
 * because servers send it and its meaning is plain. Signs, exponents, hex and blanks, all of which
 * `Number()` would take, are refused.
 */
const DECIMAL = /^\d+(?:\.\d+)?$/;

const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];

/** `Sun, 06 Nov 1994 08:49:37 GMT` (the format servers send). */
const IMF_FIXDATE = /^[a-z]{3}, (\d{2}) ([a-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) gmt$/i;
/** `Sunday, 06-Nov-94 08:49:37 GMT` (obsolete, two-digit year). */
const RFC_850_DATE = /^[a-z]+, (\d{2})-([a-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) gmt$/i;
/** `Sun Nov  6 08:49:37 1994` (obsolete, C's asctime; the day is space-padded). */
const ASCTIME_DATE = /^[a-z]{3} ([a-z]{3}) ([ \d]\d) (\d{2}):(\d{2}):(\d{2}) (\d{4})$/i;

/**
 * The wait the server asked for, in whole milliseconds (0 for "now" or a date already past), or
 * undefined when it asked for nothing readable. `now` is the clock an HTTP-date is measured against.
 */
export function retryAfterMs(headers: Headers, now: number = Date.now()): number | undefined {
  const milliseconds = headers.get('retry-after-ms')?.trim();
  if (milliseconds !== undefined && DECIMAL.test(milliseconds)) return wholeMilliseconds(Number(milliseconds));
  const value = headers.get('retry-after')?.trim();
  if (value === undefined || value === '') return undefined;
  if (DECIMAL.test(value)) return wholeMilliseconds(Number(value) * 1000);
  const date = parseHttpDate(value, now);
  return date === undefined ? undefined : Math.max(0, date - now);
}

/** Rounded up so "wait at least" stays true; a run of digits too long for a double means "for ever", not "never". */
function wholeMilliseconds(value: number): number {
  return Math.min(Math.ceil(value), Number.MAX_SAFE_INTEGER);
}

/** Epoch milliseconds of an HTTP-date, or undefined when the text is not one (or names a day that does not exist). */
function parseHttpDate(text: string, now: number): number | undefined {
  let parts: { day: string; month: string; year: number; hour: string; minute: string; second: string } | undefined;
  let match = IMF_FIXDATE.exec(text);
  if (match !== null) {
    const [, day = '', month = '', year = '', hour = '', minute = '', second = ''] = match;
    parts = { day, month, year: Number(year), hour, minute, second };
  } else if ((match = RFC_850_DATE.exec(text)) !== null) {
    const [, day = '', month = '', shortYear = '', hour = '', minute = '', second = ''] = match;
    // RFC 9110 5.6.7: a two-digit year more than 50 years ahead is the most recent past year with those digits.
    const currentYear = new Date(now).getUTCFullYear();
    let year = currentYear - (currentYear % 100) + Number(shortYear);
    if (year > currentYear + 50) year -= 100;
    parts = { day, month, year, hour, minute, second };
  } else if ((match = ASCTIME_DATE.exec(text)) !== null) {
    const [, month = '', day = '', hour = '', minute = '', second = '', year = ''] = match;
    parts = { day: day.trim(), month, year: Number(year), hour, minute, second };
  }
  if (parts === undefined) return undefined;
  const month = MONTHS.indexOf(parts.month.toLowerCase());
  const [day, hour, minute, second] = [parts.day, parts.hour, parts.minute, parts.second].map(Number) as [number, number, number, number];
  // 60 is a leap second, which RFC 9110's time-of-day allows; Date.UTC would roll it into the next minute.
  if (month === -1 || hour > 23 || minute > 59 || second > 60) return undefined;
  const epoch = Date.UTC(parts.year, month, day, hour, minute, Math.min(second, 59));
  // Date.UTC rolls 31 Feb over into March; such a date is garbage, not a date.
  return new Date(epoch).getUTCDate() === day ? epoch : undefined;
}
