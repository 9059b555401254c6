import { generateApiKey } from '@mageagent/core';
import { presentedKeyOf, type PresentedKey } from './presented-key';

const key = generateApiKey();
const otherKey = generateApiKey();

describe('presentedKeyOf', () => {
  it('takes the key from Authorization: Bearer, whatever the case of the scheme', () => {
    for (const scheme of ['Bearer', 'bearer', 'BEARER']) {
      expect(presentedKeyOf({ authorization: `${scheme} ${key}` })).toEqual({ status: 'present', key, header: 'authorization' });
    }
    expect(presentedKeyOf({ authorization: `Bearer   ${key}  ` })).toEqual({ status: 'present', key, header: 'authorization' });
  });

  it('takes the key from X-API-Key', () => {
    expect(presentedKeyOf({ 'x-api-key': key })).toEqual({ status: 'present', key, header: 'x-api-key' });
    expect(presentedKeyOf({ 'x-api-key': [key] })).toEqual({ status: 'present', key, header: 'x-api-key' });
  });

  it('accepts both headers when they hold the same key', () => {
    expect(presentedKeyOf({ authorization: `Bearer ${key}`, 'x-api-key': key })).toEqual({ status: 'present', key, header: 'authorization' });
  });

  it('tells missing credentials from malformed ones', () => {
    expect(presentedKeyOf({})).toEqual({ status: 'missing' });
    expect(presentedKeyOf({ authorization: undefined, 'x-api-key': [] })).toEqual({ status: 'missing' });

    const problems: Array<[Record<string, string | string[]>, string]> = [
      [{ authorization: 'Basic dXNlcjpwYXNz' }, 'Authorization uses a scheme other than Bearer: send Authorization: Bearer <key>'],
      [{ authorization: 'Bearer' }, 'Authorization: Bearer holds no key'],
      [{ authorization: 'Bearer   ' }, 'Authorization: Bearer holds no key'],
      [{ authorization: '' }, 'Authorization is empty: send Authorization: Bearer <key>'],
      [{ authorization: key }, 'Authorization has no scheme: send Authorization: Bearer <key>'],
      [{ authorization: `Bearer ${key} ${otherKey}` }, 'the Bearer token holds characters no key has'],
      [{ authorization: `Bearer ${'a'.repeat(513)}` }, 'the Bearer token is longer than 512 characters'],
      [{ authorization: `Bearer ${key}`, 'x-api-key': otherKey }, 'Authorization and X-API-Key hold different keys: send one key, in one of them'],
      [{ authorization: 'Basic dXNlcjpwYXNz', 'x-api-key': key }, 'Authorization uses a scheme other than Bearer: send Authorization: Bearer <key>'],
      [{ 'x-api-key': '' }, 'X-API-Key is empty'],
      [{ 'x-api-key': `Bearer ${key}` }, 'X-API-Key must hold the key alone, without a scheme or spaces'],
      // Node joins a repeated X-API-Key with ", ".
      [{ 'x-api-key': `${key}, ${otherKey}` }, 'X-API-Key must hold the key alone, without a scheme or spaces'],
      [{ 'x-api-key': [key, otherKey] }, 'X-API-Key was sent more than once'],
      [{ 'x-api-key': 'ключ' }, 'X-API-Key holds characters no key has'],
    ];
    for (const [headers, problem] of problems) {
      const presented: PresentedKey = presentedKeyOf(headers);
      expect({ headers, presented }).toEqual({ headers, presented: { status: 'malformed', problem } });
    }
  });
});
