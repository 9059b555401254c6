import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import { ConfigError, DEFAULT_REDIS_URL } from '@mageagent/core';

export interface RedisEndpoint {
  host: string;
  port: number;
}

/** Credentials and TLS of the data nodes (the nodes that hold the keys), whatever the topology. */
export interface RedisAuth {
  username?: string;
  password?: string;
  /** TLS options for the data nodes; undefined: plain TCP. */
  tls?: ConnectionOptions;
}

/**
 * Where Redis is and how to reach it. Every process builds all its connections from one of these
 * (`createRedis`), so the api, the workers and BullMQ always agree on the topology.
 * - `single`: one node (REDIS_URL), possibly a managed one behind TLS (`rediss://`).
 * - `sentinel`: a master found through Sentinels, followed across failovers by ioredis.
 * - `cluster`: a Redis Cluster; every key must share one hash tag (see REDIS_PREFIX).
 */
export type RedisTopology =
  | ({ kind: 'single'; url: string } & RedisAuth)
  | ({ kind: 'sentinel'; sentinels: RedisEndpoint[]; name: string; sentinelPassword?: string } & RedisAuth)
  | ({ kind: 'cluster'; nodes: RedisEndpoint[] } & RedisAuth);

/** The env fields (RedisEnv in @mageagent/core) a topology is read from. */
export interface RedisTopologyEnv {
  REDIS_URL?: string;
  REDIS_SENTINELS?: string;
  REDIS_SENTINEL_NAME?: string;
  REDIS_SENTINEL_PASSWORD?: string;
  REDIS_CLUSTER_NODES?: string;
  REDIS_USERNAME?: string;
  REDIS_PASSWORD?: string;
  REDIS_TLS?: boolean;
  REDIS_TLS_CA_FILE?: string;
  REDIS_PREFIX: string;
}

/** The hash tag of a key (or prefix): what is between its first `{` and the next `}`, if not empty. */
export function hashTagOf(key: string): string | undefined {
  const open = key.indexOf('{');
  if (open < 0) return undefined;
  const close = key.indexOf('}', open + 1);
  return close > open + 1 ? key.slice(open + 1, close) : undefined;
}

const blank = (value: string | undefined): value is undefined | '' => value === undefined || value.trim() === '';

/** `host:port,host:port` → endpoints; a ConfigError naming `variable` for anything else. */
export function parseEndpoints(variable: string, value: string): RedisEndpoint[] {
  const endpoints = value
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '')
    .map((item) => {
      // The last colon separates the port, so a bracketed IPv6 address ([::1]:6379) works too.
      const colon = item.lastIndexOf(':');
      const host = item.slice(0, colon).replace(/^\[|\]$/g, '');
      const port = Number(item.slice(colon + 1));
      if (colon <= 0 || host === '' || !Number.isInteger(port) || port < 1 || port > 65535) {
        throw new ConfigError(`${variable}: "${item}" is not host:port (expected "host:port,host:port")`, [`${variable}: not host:port`]);
      }
      return { host, port };
    });
  if (endpoints.length === 0) throw new ConfigError(`${variable}: no host:port given`, [`${variable}: empty`]);
  return endpoints;
}

/**
 * Decides the topology from the environment, once, at start-up; every mistake is a ConfigError
 * that names the variables involved:
 * - REDIS_SENTINELS and REDIS_CLUSTER_NODES exclude each other, and each excludes a REDIS_URL
 *   other than the default (its host would be silently ignored otherwise);
 * - Cluster mode needs a hash tag in REDIS_PREFIX: the task scripts, MULTI and BullMQ's scripts
 *   touch several keys at once, which a cluster only allows within one slot;
 * - a password in REDIS_URL and REDIS_PASSWORD exclude each other (which one wins would be a guess);
 * - REDIS_TLS_CA_FILE needs TLS on (`rediss://` or REDIS_TLS=true) and must be readable.
 */
export function redisTopologyOf(env: RedisTopologyEnv, readFile: (path: string) => string = (path) => readFileSync(path, 'utf8')): RedisTopology {
  const url = env.REDIS_URL ?? DEFAULT_REDIS_URL;
  const urlIsSet = url !== DEFAULT_REDIS_URL;
  const sentinels = blank(env.REDIS_SENTINELS) ? undefined : env.REDIS_SENTINELS;
  const clusterNodes = blank(env.REDIS_CLUSTER_NODES) ? undefined : env.REDIS_CLUSTER_NODES;
  if (sentinels !== undefined && clusterNodes !== undefined) {
    throw new ConfigError('REDIS_SENTINELS and REDIS_CLUSTER_NODES are both set: choose one topology', ['REDIS_SENTINELS, REDIS_CLUSTER_NODES: exclusive']);
  }
  const multiNode = sentinels !== undefined ? 'REDIS_SENTINELS' : clusterNodes !== undefined ? 'REDIS_CLUSTER_NODES' : undefined;
  if (multiNode !== undefined && urlIsSet) {
    throw new ConfigError(
      `REDIS_URL and ${multiNode} are both set: choose one topology (with ${multiNode}, credentials go in REDIS_USERNAME/REDIS_PASSWORD and TLS in REDIS_TLS=true)`,
      [`REDIS_URL, ${multiNode}: exclusive`],
    );
  }
  if (clusterNodes !== undefined && hashTagOf(env.REDIS_PREFIX) === undefined) {
    throw new ConfigError(
      `REDIS_PREFIX "${env.REDIS_PREFIX}" has no hash tag: in cluster mode (REDIS_CLUSTER_NODES) every key must share one slot, so REDIS_PREFIX must contain one, e.g. "{mageagent}"`,
      ['REDIS_PREFIX: needs a {hash tag} in cluster mode'],
    );
  }

  const password = blank(env.REDIS_PASSWORD) ? undefined : env.REDIS_PASSWORD;
  const username = blank(env.REDIS_USERNAME) ? undefined : env.REDIS_USERNAME;
  let parsedUrl: URL | undefined;
  if (multiNode === undefined) {
    parsedUrl = new URL(url);
    if (parsedUrl.protocol !== 'redis:' && parsedUrl.protocol !== 'rediss:') {
      throw new ConfigError(`REDIS_URL: scheme "${parsedUrl.protocol}" is not redis: or rediss:`, ['REDIS_URL: redis:// or rediss:// only']);
    }
    if ((parsedUrl.password !== '' || parsedUrl.username !== '') && (password !== undefined || username !== undefined)) {
      throw new ConfigError('REDIS_URL carries credentials and REDIS_USERNAME/REDIS_PASSWORD are set too: give them in one place', [
        'REDIS_URL, REDIS_PASSWORD: exclusive',
      ]);
    }
  }
  const tlsOn = parsedUrl?.protocol === 'rediss:' || env.REDIS_TLS === true;
  let tls: ConnectionOptions | undefined;
  if (!blank(env.REDIS_TLS_CA_FILE)) {
    if (!tlsOn) {
      throw new ConfigError('REDIS_TLS_CA_FILE is set but TLS is off: use a rediss:// REDIS_URL or REDIS_TLS=true', ['REDIS_TLS_CA_FILE: TLS is off']);
    }
    let ca: string;
    try {
      ca = readFile(env.REDIS_TLS_CA_FILE);
    } catch (error) {
      throw new ConfigError(`REDIS_TLS_CA_FILE: cannot read ${env.REDIS_TLS_CA_FILE} (${(error as Error).message})`, ['REDIS_TLS_CA_FILE: unreadable']);
    }
    tls = { ca };
  } else if (tlsOn) {
    // The system's CAs, and the server's name checked against its certificate (node's defaults).
    tls = {};
  }
  const auth: RedisAuth = {
    ...(username !== undefined && { username }),
    ...(password !== undefined && { password }),
    ...(tls !== undefined && { tls }),
  };

  if (sentinels !== undefined) {
    const sentinelPassword = blank(env.REDIS_SENTINEL_PASSWORD) ? undefined : env.REDIS_SENTINEL_PASSWORD;
    return {
      kind: 'sentinel',
      sentinels: parseEndpoints('REDIS_SENTINELS', sentinels),
      name: env.REDIS_SENTINEL_NAME ?? 'mymaster',
      ...(sentinelPassword !== undefined && { sentinelPassword }),
      ...auth,
    };
  }
  if (clusterNodes !== undefined) return { kind: 'cluster', nodes: parseEndpoints('REDIS_CLUSTER_NODES', clusterNodes), ...auth };
  return { kind: 'single', url, ...auth };
}

/** Where the topology points, for logs and errors: hosts only, never credentials. */
export function describeTopology(topology: RedisTopology): string {
  const list = (endpoints: RedisEndpoint[]) => endpoints.map(({ host, port }) => `${host}:${port}`).join(',');
  switch (topology.kind) {
    case 'single': {
      const url = new URL(topology.url);
      return `redis ${url.protocol}//${url.host}${url.pathname === '/' ? '' : url.pathname}`;
    }
    case 'sentinel':
      return `sentinel ${topology.name} via ${list(topology.sentinels)}${topology.tls ? ' (tls)' : ''}`;
    case 'cluster':
      return `cluster ${list(topology.nodes)}${topology.tls ? ' (tls)' : ''}`;
  }
}
