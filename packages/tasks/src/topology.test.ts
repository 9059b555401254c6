import { Cluster, Redis } from 'ioredis';
import { ConfigError, parseEnv, RedisEnv, z } from '@mageagent/core';
import { createRedis, isRedisUnavailable } from './redis';
import { hashTagOf, parseEndpoints, redisTopologyOf, describeTopology, type RedisTopologyEnv } from './topology';

/** The env as a process would parse it (defaults applied), plus what the test sets. */
const envOf = (values: Record<string, string>): RedisTopologyEnv => parseEnv(z.object(RedisEnv), values);

const configErrorOf = (run: () => unknown): ConfigError => {
  try {
    run();
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error('expected a ConfigError');
};

describe('REDIS_PREFIX', () => {
  test.each(['mageagent', '{mageagent}', '{mageagent-test}', 'prod:{mageagent}', '{tenant.a}:x', 'a_b.c-d'])('accepts %s', (prefix) => {
    expect(envOf({ REDIS_PREFIX: prefix }).REDIS_PREFIX).toBe(prefix);
  });

  test.each(['', '{}', '{a}{b}', 'a{b', 'a}b', '{a b}', 'mage agent', '{a*}'])('refuses %j, naming the variable', (prefix) => {
    expect(configErrorOf(() => envOf({ REDIS_PREFIX: prefix })).message).toMatch(/REDIS_PREFIX/);
  });

  test('the hash tag is what Redis hashes: the first non-empty {…}', () => {
    expect(hashTagOf('{mageagent}:task:{0191}')).toBe('mageagent');
    expect(hashTagOf('mutex:{mageagent}:host:{gpu}:probe')).toBe('mageagent');
    expect(hashTagOf('mageagent:task:{0191}')).toBe('0191');
    expect(hashTagOf('mageagent')).toBeUndefined();
  });
});

describe('redisTopologyOf', () => {
  test('nothing set: one node at the default URL', () => {
    expect(redisTopologyOf(envOf({}))).toEqual({ kind: 'single', url: 'redis://127.0.0.1:6379' });
  });

  test('rediss:// turns TLS on (system CAs); REDIS_TLS_CA_FILE supplies a private CA', () => {
    expect(redisTopologyOf(envOf({ REDIS_URL: 'rediss://cache.example.com:6380' }))).toEqual({
      kind: 'single',
      url: 'rediss://cache.example.com:6380',
      tls: {},
    });
    const read: string[] = [];
    const topology = redisTopologyOf(envOf({ REDIS_URL: 'rediss://cache.example.com:6380', REDIS_TLS_CA_FILE: '/etc/ca.pem' }), (path) => {
      read.push(path);
      return 'PEM';
    });
    expect(topology.tls).toEqual({ ca: 'PEM' });
    expect(read).toEqual(['/etc/ca.pem']);
  });

  test('a CA file without TLS, or one that cannot be read, is a ConfigError naming it', () => {
    expect(configErrorOf(() => redisTopologyOf(envOf({ REDIS_TLS_CA_FILE: '/etc/ca.pem' }), () => 'PEM')).message).toMatch(/REDIS_TLS_CA_FILE.*TLS is off/);
    expect(configErrorOf(() => redisTopologyOf(envOf({ REDIS_URL: 'rediss://h:1', REDIS_TLS_CA_FILE: '/nope/ca.pem' }))).message).toMatch(
      /REDIS_TLS_CA_FILE: cannot read \/nope\/ca.pem/,
    );
  });

  test('REDIS_PASSWORD fills a URL without credentials; credentials in both places are refused', () => {
    expect(redisTopologyOf(envOf({ REDIS_URL: 'redis://r:6379', REDIS_PASSWORD: 's3cret' }))).toEqual({
      kind: 'single',
      url: 'redis://r:6379',
      password: 's3cret',
    });
    expect(configErrorOf(() => redisTopologyOf(envOf({ REDIS_URL: 'redis://:a@r:6379', REDIS_PASSWORD: 'b' }))).message).toMatch(
      /REDIS_URL.*REDIS_USERNAME\/REDIS_PASSWORD/,
    );
  });

  test('Sentinel: the sentinels, the master name (default mymaster), both passwords, TLS to the master', () => {
    expect(
      redisTopologyOf(
        envOf({
          REDIS_SENTINELS: 's1:26379, s2:26380,[::1]:26381',
          REDIS_SENTINEL_PASSWORD: 'sp',
          REDIS_PASSWORD: 'mp',
          REDIS_USERNAME: 'app',
          REDIS_TLS: 'true',
        }),
      ),
    ).toEqual({
      kind: 'sentinel',
      sentinels: [
        { host: 's1', port: 26379 },
        { host: 's2', port: 26380 },
        { host: '::1', port: 26381 },
      ],
      name: 'mymaster',
      sentinelPassword: 'sp',
      username: 'app',
      password: 'mp',
      tls: {},
    });
    expect(redisTopologyOf(envOf({ REDIS_SENTINELS: 's1:26379', REDIS_SENTINEL_NAME: 'cache' }))).toMatchObject({ kind: 'sentinel', name: 'cache' });
  });

  test('Cluster: the seed nodes, and a prefix with a hash tag', () => {
    const topology = redisTopologyOf(envOf({ REDIS_CLUSTER_NODES: '10.0.0.1:7000,10.0.0.2:7001', REDIS_PREFIX: '{mageagent}', REDIS_PASSWORD: 'p' }));
    expect(topology).toEqual({
      kind: 'cluster',
      nodes: [
        { host: '10.0.0.1', port: 7000 },
        { host: '10.0.0.2', port: 7001 },
      ],
      password: 'p',
    });
    expect(describeTopology(topology)).toBe('cluster 10.0.0.1:7000,10.0.0.2:7001');
  });

  test('Cluster without a hash tag in REDIS_PREFIX is a ConfigError naming REDIS_PREFIX', () => {
    const error = configErrorOf(() => redisTopologyOf(envOf({ REDIS_CLUSTER_NODES: '127.0.0.1:7000' })));
    expect(error.message).toMatch(/^REDIS_PREFIX "mageagent" has no hash tag.*\{mageagent\}/);
    expect(error.code).toBe('CONFIG_INVALID');
  });

  test('topologies exclude each other', () => {
    expect(configErrorOf(() => redisTopologyOf(envOf({ REDIS_SENTINELS: 's:1', REDIS_CLUSTER_NODES: 'c:1', REDIS_PREFIX: '{m}' }))).message).toMatch(
      /REDIS_SENTINELS and REDIS_CLUSTER_NODES are both set/,
    );
    expect(configErrorOf(() => redisTopologyOf(envOf({ REDIS_URL: 'redis://r:6379', REDIS_CLUSTER_NODES: 'c:1', REDIS_PREFIX: '{m}' }))).message).toMatch(
      /REDIS_URL and REDIS_CLUSTER_NODES are both set/,
    );
    expect(configErrorOf(() => redisTopologyOf(envOf({ REDIS_URL: 'redis://r:6379', REDIS_SENTINELS: 's:1' }))).message).toMatch(
      /REDIS_URL and REDIS_SENTINELS are both set/,
    );
  });

  test('a malformed node list names its variable', () => {
    expect(() => parseEndpoints('REDIS_CLUSTER_NODES', 'host-without-port')).toThrow(/REDIS_CLUSTER_NODES: "host-without-port" is not host:port/);
    expect(() => parseEndpoints('REDIS_SENTINELS', 'h:99999')).toThrow(/REDIS_SENTINELS/);
    expect(() => parseEndpoints('REDIS_SENTINELS', ' , ')).toThrow(/REDIS_SENTINELS: no host:port/);
    expect(() => redisTopologyOf(envOf({ REDIS_URL: 'http://r:6379' }))).toThrow(/REDIS_URL: scheme "http:"/);
  });

  test('describeTopology never shows credentials', () => {
    expect(describeTopology(redisTopologyOf(envOf({ REDIS_URL: 'rediss://user:hunter2@r.example:6380/2' })))).toBe('redis rediss://r.example:6380/2');
  });
});

describe('createRedis builds each topology with the role options', () => {
  // Nothing listens on these ports: the clients are inspected, then disconnected.
  const unused = { host: '127.0.0.1', port: 1 };

  test('Cluster: the role options go to every node (redisOptions); offline queue, pipelining and reads at cluster level', () => {
    const requests = createRedis({ kind: 'cluster', nodes: [unused], password: 'p' }, 'requests', { connectionName: 'n', commandTimeoutMs: 300 });
    const bullmq = createRedis({ kind: 'cluster', nodes: [unused] }, 'bullmq');
    try {
      expect(requests).toBeInstanceOf(Cluster);
      expect(requests.options).toMatchObject({ enableOfflineQueue: false, enableAutoPipelining: true, scaleReads: 'master' });
      expect((requests as Cluster).options.redisOptions).toMatchObject({
        maxRetriesPerRequest: 0,
        commandTimeout: 300,
        connectionName: 'n',
        protocol: 2,
        password: 'p',
      });
      // BullMQ reads a Cluster's redisOptions and refuses a blocking connection that retries requests.
      expect((bullmq as Cluster).options.redisOptions).toMatchObject({ maxRetriesPerRequest: null });
      expect(bullmq.options).toMatchObject({ enableOfflineQueue: true, enableAutoPipelining: false });
    } finally {
      requests.disconnect();
      bullmq.disconnect();
    }
  });

  test('Sentinel: a Redis that asks the sentinels for the master, TLS to the master only when asked', () => {
    const redis = createRedis({ kind: 'sentinel', sentinels: [unused], name: 'cache', sentinelPassword: 'sp', password: 'mp', tls: {} }, 'worker');
    try {
      expect(redis).toBeInstanceOf(Redis);
      expect(redis.options).toMatchObject({
        sentinels: [unused],
        name: 'cache',
        sentinelPassword: 'sp',
        password: 'mp',
        enableTLSForSentinelMode: true,
        enableOfflineQueue: true,
        maxRetriesPerRequest: null,
      });
    } finally {
      redis.disconnect();
    }
  });

  test('one node: the URL wins over the options it also carries', () => {
    const redis = createRedis({ kind: 'single', url: 'rediss://:from-url@127.0.0.1:1/3', tls: {} }, 'requests');
    try {
      expect(redis.options).toMatchObject({ password: 'from-url', db: 3, tls: {}, enableOfflineQueue: false, maxRetriesPerRequest: 0 });
    } finally {
      redis.disconnect();
    }
  });
});

test('the errors of a Cluster or Sentinel failover count as "Redis unavailable" (503 and retry, not a 500)', () => {
  for (const message of [
    'Too many Cluster redirections. Last error: ReplyError: MOVED 11699 127.0.0.1:24071',
    "Cluster isn't ready and enableOfflineQueue options is false",
    'None of startup nodes is available',
    'All sentinels are unreachable. Retrying from scratch after 100ms.',
    'CLUSTERDOWN The cluster is down',
    "READONLY You can't write against a read only replica.",
  ]) {
    expect(isRedisUnavailable(new Error(message))).toBe(true);
  }
  expect(isRedisUnavailable(new Error("CROSSSLOT Keys in request don't hash to the same slot"))).toBe(false);
});
