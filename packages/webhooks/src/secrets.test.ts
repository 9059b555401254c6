import { Webhook } from 'standardwebhooks';
import { DerivedWebhookSecrets, deriveWebhookSecret, isWebhookSecret } from './secrets';
import { signWebhook, webhookIdFor } from './signing';

const MASTER = 'a master secret of at least thirty-two characters';

test('a derived secret is a Standard Webhooks secret, stable per tenant and different across tenants', () => {
  const acme = deriveWebhookSecret(MASTER, 'acme');
  expect(acme).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
  expect(isWebhookSecret(acme)).toBe(true);
  expect(deriveWebhookSecret(MASTER, 'acme')).toBe(acme);
  expect(deriveWebhookSecret(MASTER, 'globex')).not.toBe(acme);
  expect(deriveWebhookSecret('another master secret of thirty-two chars', 'acme')).not.toBe(acme);
});

test('a signature verifies with the reference Webhook#verify and the tenant secret, not with another tenant’s', () => {
  const secrets = new DerivedWebhookSecrets({ master: MASTER });
  const body = JSON.stringify({ id: 'task-1', status: 'completed' });
  const headers = signWebhook(secrets.secretFor('acme') ?? '', webhookIdFor('task-1'), body, new Date());
  expect(headers['webhook-id']).toBe('msg_task-1');
  expect(new Webhook(secrets.secretFor('acme') ?? '').verify(body, { ...headers })).toEqual({ id: 'task-1', status: 'completed' });
  expect(() => new Webhook(secrets.secretFor('globex') ?? '').verify(body, { ...headers })).toThrow(/No matching signature/);
  expect(() => new Webhook(secrets.secretFor('acme') ?? '').verify(`${body} `, { ...headers })).toThrow(/No matching signature/);
});

test('explicit secrets win over derived ones; without a master, tenants without one have none', () => {
  const explicit = `whsec_${Buffer.alloc(32, 7).toString('base64')}`;
  const withMaster = new DerivedWebhookSecrets({ master: MASTER, explicit: new Map([['acme', explicit]]) });
  expect(withMaster.secretFor('acme')).toBe(explicit);
  expect(withMaster.secretFor('globex')).toBe(deriveWebhookSecret(MASTER, 'globex'));
  const withoutMaster = new DerivedWebhookSecrets({ explicit: new Map([['acme', explicit]]) });
  expect(withoutMaster.secretFor('acme')).toBe(explicit);
  expect(withoutMaster.secretFor('globex')).toBeUndefined();
  expect(new DerivedWebhookSecrets({ master: '' }).secretFor('acme')).toBeUndefined();
});

test('a malformed explicit secret is refused at construction, naming the tenant and not the secret', () => {
  for (const bad of ['plain', 'whsec_', `whsec_${Buffer.alloc(8).toString('base64')}`, `whsec_${Buffer.alloc(65).toString('base64')}`, 'whsec_not base64!']) {
    expect(isWebhookSecret(bad)).toBe(false);
  }
  const build = () => new DerivedWebhookSecrets({ explicit: new Map([['acme', 'whsec_tooshort']]) });
  expect(build).toThrow(/acme/);
  expect(build).not.toThrow(/tooshort/);
});
