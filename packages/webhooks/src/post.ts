import type { LookupAddress } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';

/** One HTTP POST of a webhook body to a checked target. */
export interface WebhookPost {
  url: URL;
  /** The addresses the target was checked at: the connection goes to one of these, whatever DNS says now. */
  addresses: readonly LookupAddress[];
  body: string;
  headers: Record<string, string>;
  /** The whole attempt (connect, send, the answer's status line and headers) must fit in this. */
  timeoutMs: number;
  /** Ends the attempt early (a job being cancelled). */
  signal?: AbortSignal;
}

/** The receiver's answer: its status only; the body is not read. */
export interface WebhookPostAnswer {
  status: number;
}

/**
 * POSTs once, connecting only to the checked addresses (TLS still verifies the certificate against
 * the URL's hostname). Redirects are not followed: a 3xx is the answer. Resolves with the status
 * line's code; rejects when there is no answer (refused, reset, timed out, aborted).
 */
export function postWebhook(post: WebhookPost): Promise<WebhookPostAnswer> {
  const timeout = AbortSignal.timeout(post.timeoutMs);
  const signal = post.signal ? AbortSignal.any([timeout, post.signal]) : timeout;
  const transport = post.url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const request = transport.request(
      post.url,
      {
        method: 'POST',
        headers: { ...post.headers, 'content-length': String(Buffer.byteLength(post.body)) },
        lookup: pinnedLookup(post.addresses),
        // A fresh connection per attempt: a pooled socket could have been opened for another lookup.
        agent: false,
        signal,
      },
      (response) => {
        resolve({ status: response.statusCode ?? 0 });
        // The body is never used; a receiver streaming one must not hold the attempt open.
        response.destroy();
      },
    );
    request.on('error', (error) => {
      reject(timeout.aborted ? new Error(`no answer within ${post.timeoutMs} ms`) : error);
    });
    request.end(post.body);
  });
}

/**
 * A `lookup` for net.connect that answers with the checked addresses instead of asking DNS again
 * (with autoSelectFamily, Node asks for all addresses; otherwise for one of a family).
 */
function pinnedLookup(addresses: readonly LookupAddress[]): LookupFunction {
  return (_hostname, options, callback) => {
    const family = options.family === 4 || options.family === 6 ? options.family : undefined;
    const candidates = addresses.filter((address) => family === undefined || address.family === family);
    const first = candidates[0];
    if (first === undefined) {
      callback(Object.assign(new Error(`no checked IPv${family} address`), { code: 'ENOTFOUND' }), '', 0);
    } else if (options.all) {
      callback(
        null,
        candidates.map(({ address, family }) => ({ address, family })),
      );
    } else {
      callback(null, first.address, first.family);
    }
  };
}
