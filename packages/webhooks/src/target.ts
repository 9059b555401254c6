import { lookup, type LookupAddress } from 'node:dns';
import { isIP } from 'node:net';
import { classifyAddress } from './address-policy';

export interface WebhookTargetOptions {
  /**
   * Allow loopback, private (RFC 1918, CGNAT), link-local and unique-local addresses
   * (WEBHOOK_ALLOW_PRIVATE): development, tests, a receiver inside the same network. Cloud metadata,
   * unspecified, multicast, broadcast and reserved addresses stay refused.
   */
  allowPrivate: boolean;
}

/** The synchronous check's answer. */
export type WebhookTargetPrecheck = { allowed: true; url: URL } | { allowed: false; reason: string };

/** The full check's answer: where to connect, or why not. */
export type WebhookTargetCheck = { allowed: true; url: URL; addresses: readonly LookupAddress[] } | WebhookTargetRefusal;

export interface WebhookTargetRefusal {
  allowed: false;
  /** Why, for the task's delivery record (which the tenant reads): never an address the name resolved to. */
  reason: string;
  /** Whether asking again later may help (a name that did not resolve). */
  retryable: boolean;
  /** The refused address, for the operator's log. */
  address?: string;
}

/**
 * Cheap synchronous check of a webhook URL, without DNS: refuses what is refused whatever DNS says —
 * a URL that is not http(s), a literal IP address that is not allowed (in any notation the URL parser
 * accepts: `http://2130706433/`, `http://0x7f.1/`, `http://[::ffff:127.0.0.1]/` all are 127.0.0.1),
 * and `localhost` names (RFC 6761: they always mean this host). For the api to answer 400 at
 * `POST /tasks` before a task exists; a hostname passes here and is judged again at delivery by
 * `checkWebhookTarget`, after resolution.
 */
export function precheckWebhookTarget(target: string, options: WebhookTargetOptions): WebhookTargetPrecheck {
  let url: URL;
  try {
    url = new URL(target);
  } catch {
    return { allowed: false, reason: 'not a valid URL' };
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return { allowed: false, reason: 'not an http or https URL' };
  const host = hostOf(url);
  if (isIP(host) !== 0) {
    const refusal = refusalOf(host, options);
    return refusal === undefined ? { allowed: true, url } : { allowed: false, reason: `${host} is ${refusal}` };
  }
  if (!options.allowPrivate && /(^|\.)localhost\.?$/i.test(host)) {
    return { allowed: false, reason: `${host} is this host (loopback); private targets are not allowed` };
  }
  return { allowed: true, url };
}

/**
 * Checks a webhook URL right before a delivery: resolves its host (every address, as the
 * connection might use any of them) and refuses it if any address is not allowed. A delivery must
 * then connect to one of the returned addresses (see `postWebhook`), never resolve again: a second
 * lookup could answer differently (DNS rebinding) and reach a private address after all.
 */
export async function checkWebhookTarget(target: string, options: WebhookTargetOptions): Promise<WebhookTargetCheck> {
  const precheck = precheckWebhookTarget(target, options);
  if (!precheck.allowed) return { ...precheck, retryable: false };
  const { url } = precheck;
  const host = hostOf(url);
  const literalFamily = isIP(host);
  let addresses: LookupAddress[];
  if (literalFamily !== 0) {
    addresses = [{ address: host, family: literalFamily }];
  } else {
    try {
      addresses = await lookupAll(host);
    } catch (error) {
      // A name that does not resolve now may later (a DNS outage, a record being created).
      const code = (error as NodeJS.ErrnoException).code ?? String(error);
      return { allowed: false, reason: `could not resolve ${host} (${code})`, retryable: true };
    }
    if (addresses.length === 0) return { allowed: false, reason: `${host} resolves to no address`, retryable: true };
  }
  for (const { address } of addresses) {
    const refusal = refusalOf(address, options);
    if (refusal === undefined) continue;
    // The reason is recorded on the task, which its tenant reads: it names the kind of address a
    // name resolved to, never the address (that would map the internal network for whoever asks).
    const reason = literalFamily !== 0 ? `${host} is ${refusal}` : `${host} resolves to ${refusal}`;
    return { allowed: false, reason, retryable: false, address };
  }
  return { allowed: true, url, addresses };
}

/** Why an address is refused (a phrase completing "X is …"), or undefined when it is allowed. */
function refusalOf(address: string, options: WebhookTargetOptions): string | undefined {
  const kind = classifyAddress(address);
  if (kind.kind === 'public' || (kind.kind === 'private' && options.allowPrivate)) return undefined;
  return kind.kind === 'private' ? `${kind.description}; private targets are not allowed` : `${kind.description}, never a webhook target`;
}

/** The URL's host without IPv6 brackets. */
function hostOf(url: URL): string {
  return url.hostname.replace(/^\[(.*)\]$/, '$1');
}

function lookupAll(host: string): Promise<LookupAddress[]> {
  return new Promise((resolve, reject) => {
    lookup(host, { all: true, verbatim: true }, (error, addresses) => (error ? reject(error) : resolve(addresses)));
  });
}
