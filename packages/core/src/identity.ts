/** What a key may do: `tasks` (create, read, follow, cancel its tenant's tasks), `admin` (operator routes). */
export const Scopes = ['tasks', 'admin'] as const;
export type Scope = (typeof Scopes)[number];

/**
 * Who is calling. Set once per request (HTTP) or connection (Socket.io) by authentication, and
 * passed to the task service on every read and write: isolation between tenants is enforced there,
 * in one place, never by the routes.
 */
export interface Principal {
  /** The tenant whose tasks the caller sees; another tenant's task is answered like an unknown one. */
  tenant: string;
  /** The tenant's application the key belongs to, when the key names one. */
  app?: string;
  /** The key's id (never the key): shown in logs and on tasks. */
  keyId: string;
  scopes: readonly Scope[];
}

/** Limits of one key (or the defaults every key gets). */
export interface QuotaLimits {
  /** Requests the key may make per minute, across every api replica. */
  requestsPerMinute: number;
  /** Tasks of the key queued or running at once. */
  maxActiveTasks: number;
  /** Largest prompt (the request's messages, UTF-8 bytes) one task may carry. */
  maxPromptBytes: number;
}

/** The tenant of open mode (no keys configured). */
export const OPEN_MODE_PRINCIPAL: Principal = Object.freeze({ tenant: 'default', keyId: 'open', scopes: Object.freeze(['tasks', 'admin'] as const) });
