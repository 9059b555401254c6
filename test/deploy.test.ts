/**
 * Deployment manifests, checked with no cluster and no Docker engine: both kustomize overlays
 * (and the HPA component) render with kubectl, every object validates against the Kubernetes and
 * KEDA schemas (offline, from npm packages), and the properties operations rely on hold. The
 * compose file is parsed and checked the same way.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { parseModelsConfig, type ModelsConfig } from '@mageagent/models';

const ROOT = path.resolve(__dirname, '..');
const KUBECTL = process.env.KUBECTL ?? 'kubectl';
const NAMESPACE = 'mageagent';

/** The production commands of the contract (and the Dockerfile). */
const COMMANDS: Record<string, string[]> = {
  api: ['node', '--enable-source-maps', 'apps/api/dist/main.js'],
  worker: ['node', '--enable-source-maps', 'apps/worker/dist/main.js'],
  'model-sim': ['node', '--enable-source-maps', 'apps/model-sim/dist/main.js'],
};
/** The worker's time to hand running tasks back after SHUTDOWN_GRACE_MS (apps/worker/src/main.ts). */
const HAND_BACK_MS = 5_000;

// Loose shapes: the schemas are checked by the validator, these tests read a few fields.
/* eslint-disable @typescript-eslint/no-explicit-any */
type K8sObject = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: any;
};

function kubectlAvailable(): void {
  const probe = spawnSync(KUBECTL, ['version', '--client'], { encoding: 'utf8' });
  if (probe.error !== undefined || probe.status !== 0) {
    throw new Error(
      `kubectl is required to render k8s/ (tried "${KUBECTL}": ${probe.error?.message ?? probe.stderr}). ` +
        'Install it (Debian: apt-get install kubernetes-client; 1.20 or later) or point KUBECTL at it.',
    );
  }
}

function render(dir: string): K8sObject[] {
  // stderr apart: newer kustomize warns there about the v2.0.3 syntax k8s/ keeps to on purpose.
  const run = spawnSync(KUBECTL, ['kustomize', dir], { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 });
  if (run.error !== undefined || run.status !== 0) throw new Error(`kubectl kustomize ${dir} failed: ${run.error?.message ?? run.stderr}`);
  return parseAllDocuments(run.stdout)
    .map((document) => document.toJSON() as K8sObject | null)
    .filter((object): object is K8sObject => object !== null);
}

/** Validates against the schemas in a child process (the validators are ES modules only). */
function validate(objects: K8sObject[]): Array<{ kind: string; name: string; error: string | null }> {
  const output = execFileSync(process.execPath, [path.join(ROOT, 'test/support/validate-k8s.mjs')], {
    input: JSON.stringify(objects),
    encoding: 'utf8',
    cwd: ROOT,
    maxBuffer: 16 * 1024 * 1024,
  });
  return JSON.parse(output);
}

const find = (objects: K8sObject[], kind: string, name: string) => objects.find((object) => object.kind === kind && object.metadata.name === name);
const ofKind = (objects: K8sObject[], ...kinds: string[]) => objects.filter((object) => kinds.includes(object.kind));
const workloads = (objects: K8sObject[]) => ofKind(objects, 'Deployment', 'StatefulSet');
const podSpec = (workload: K8sObject) => workload.spec.template.spec;
const containers = (workload: K8sObject): any[] => [...(podSpec(workload).initContainers ?? []), ...podSpec(workload).containers];
const envOf = (container: any, name: string): string | undefined => container.env?.find((entry: any) => entry.name === name)?.value;
const selects = (selector: Record<string, string>, labels: Record<string, string> = {}) =>
  Object.keys(selector).length > 0 && Object.entries(selector).every(([key, value]) => labels[key] === value);

/** A models config as the rendered ConfigMap holds it (placeholders expanded with an empty env, like a pod without SIM_* set). */
function modelsConfigOf(objects: K8sObject[]): ModelsConfig {
  const configMap = ofKind(objects, 'ConfigMap').find((object) => object.metadata.name.startsWith('mageagent-models'));
  if (!configMap) throw new Error('no mageagent-models ConfigMap');
  return parseModelsConfig(configMap.data['models.yaml'], configMap.metadata.name, {});
}

/** maxReplicaCount from GPU capacity (k8s/components/keda/worker-scaledobject.yaml): twice the generations the hosts run at once, in worker slots. */
const usefulWorkers = (config: ModelsConfig, concurrency: number) =>
  Math.ceil((2 * Object.values(config.hosts).reduce((sum, host) => sum + host.maxConcurrentGenerations, 0)) / concurrency);

let dev: K8sObject[];
let production: K8sObject[];

beforeAll(() => {
  kubectlAvailable();
  dev = render(path.join(ROOT, 'k8s/overlays/dev'));
  production = render(path.join(ROOT, 'k8s/overlays/production'));
});

describe.each([
  ['dev', () => dev],
  ['production', () => production],
])('k8s/overlays/%s', (overlay, objects) => {
  test('every object validates against the Kubernetes and KEDA schemas', () => {
    const results = validate(objects());
    expect(results).toHaveLength(objects().length);
    expect(results.filter((result) => result.error !== null)).toEqual([]);
  });

  test('every namespaced object is in the mageagent namespace', () => {
    for (const object of objects().filter((candidate) => candidate.kind !== 'Namespace')) {
      expect([object.kind, object.metadata.name, object.metadata.namespace]).toEqual([object.kind, object.metadata.name, NAMESPACE]);
    }
  });

  test('every workload container has startup, readiness and liveness probes, requests and a memory limit', () => {
    expect(workloads(objects()).length).toBeGreaterThanOrEqual(2);
    for (const workload of workloads(objects())) {
      for (const container of containers(workload)) {
        const where = `${workload.kind}/${workload.metadata.name} ${container.name}`;
        expect([where, Boolean(container.startupProbe), Boolean(container.readinessProbe), Boolean(container.livenessProbe)]).toEqual([
          where,
          true,
          true,
          true,
        ]);
        expect([where, container.resources?.requests?.cpu, container.resources?.requests?.memory, container.resources?.limits?.memory]).toEqual([
          where,
          expect.any(String),
          expect.any(String),
          expect.any(String),
        ]);
      }
    }
  });

  test('the workers are probed on HEALTH_PORT 9464 (/healthz live, /readyz ready)', () => {
    const worker = containers(find(objects(), 'Deployment', 'worker')!)[0];
    expect(envOf(worker, 'HEALTH_PORT')).toBe('9464');
    expect(envOf(worker, 'HEALTH_HOST')).toBe('0.0.0.0');
    const port = worker.ports.find((entry: any) => entry.containerPort === 9464).name;
    expect(worker.livenessProbe.httpGet).toEqual({ path: '/healthz', port });
    expect(worker.startupProbe.httpGet).toEqual({ path: '/healthz', port });
    expect(worker.readinessProbe.httpGet).toEqual({ path: '/readyz', port });
  });

  test('the app containers run the contract commands', () => {
    for (const workload of ofKind(objects(), 'Deployment')) {
      expect(containers(workload)[0].command).toEqual(COMMANDS[workload.metadata.name]);
    }
  });

  test('images are pinned by a tag (never latest)', () => {
    for (const workload of workloads(objects())) {
      for (const container of containers(workload)) {
        expect(container.image).toMatch(/^[^@]+:(?!latest$)[\w][\w.-]*$/);
      }
    }
  });

  test('containers run as non-root with a read-only root filesystem, no privilege escalation and no capabilities', () => {
    for (const workload of workloads(objects())) {
      const pod = podSpec(workload);
      expect([workload.metadata.name, pod.securityContext?.runAsNonRoot, typeof pod.securityContext?.runAsUser]).toEqual([
        workload.metadata.name,
        true,
        'number',
      ]);
      expect(pod.securityContext.runAsUser).toBeGreaterThan(0);
      for (const container of containers(workload)) {
        expect([workload.metadata.name, container.securityContext]).toEqual([
          workload.metadata.name,
          expect.objectContaining({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } }),
        ]);
      }
    }
  });

  test('every PodDisruptionBudget selects the pods of a workload that exists', () => {
    const budgets = ofKind(objects(), 'PodDisruptionBudget');
    expect(budgets.map((budget) => budget.metadata.name).sort()).toEqual(['api', 'worker']);
    for (const budget of budgets) {
      const selected = workloads(objects()).filter((workload) => selects(budget.spec.selector.matchLabels, workload.spec.template.metadata.labels));
      expect([budget.metadata.name, selected.length]).toEqual([budget.metadata.name, 1]);
    }
  });

  test('every Service selects the pods of a workload that exists, on a port they declare', () => {
    for (const service of ofKind(objects(), 'Service')) {
      const [workload] = workloads(objects()).filter((candidate) => selects(service.spec.selector, candidate.spec.template.metadata.labels));
      expect([service.metadata.name, workload !== undefined]).toEqual([service.metadata.name, true]);
      const portNames = containers(workload!).flatMap((container) => (container.ports ?? []).map((port: any) => port.name));
      for (const port of service.spec.ports) expect(portNames).toContain(port.targetPort);
    }
  });

  test('every ConfigMap a pod uses is rendered with it; the models config parses and is the one the app expects', () => {
    const configMaps = new Set(ofKind(objects(), 'ConfigMap').map((object) => object.metadata.name));
    for (const workload of workloads(objects())) {
      const referenced = [
        ...(podSpec(workload).volumes ?? []).flatMap((volume: any) => (volume.configMap ? [volume.configMap.name] : [])),
        ...containers(workload).flatMap((container) =>
          (container.envFrom ?? []).flatMap((source: any) => (source.configMapRef ? [source.configMapRef.name] : [])),
        ),
      ];
      for (const name of referenced) expect([workload.metadata.name, name, configMaps.has(name)]).toEqual([workload.metadata.name, name, true]);
    }
    expect(Object.keys(modelsConfigOf(objects()).roles).sort()).toEqual(['competitor', 'primary', 'tools', 'validator']);
  });

  test('workers scale on the backlog with a KEDA ScaledObject (metrics-api on /queue/stats), bounded by GPU capacity', () => {
    expect(ofKind(objects(), 'HorizontalPodAutoscaler')).toEqual([]); // one autoscaler only
    const scaled = ofKind(objects(), 'ScaledObject');
    expect(scaled).toHaveLength(1);
    const { spec } = scaled[0]!;
    expect(spec.scaleTargetRef).toMatchObject({ kind: 'Deployment', name: 'worker' });
    const worker = find(objects(), 'Deployment', 'worker')!;
    expect(worker.spec.replicas).toBeUndefined(); // the autoscaler owns the count
    expect(spec.triggers).toHaveLength(1);
    const [trigger] = spec.triggers;
    expect(trigger.type).toBe('metrics-api'); // not `redis`: it misses BullMQ's prioritized jobs
    expect(trigger.metricType).toBe('AverageValue');
    expect(trigger.metadata.valueLocation).toBe('backlog');
    const concurrency = envOf(containers(worker)[0], 'WORKER_CONCURRENCY');
    expect(trigger.metadata.targetValue).toBe(concurrency);

    // The URL names a Service of this namespace whose port reaches the api's metrics listener.
    const url = new URL(trigger.metadata.url);
    expect(url.pathname).toBe('/queue/stats');
    const [serviceName, namespace] = url.hostname.split('.');
    expect(namespace).toBe(NAMESPACE);
    const service = find(objects(), 'Service', serviceName!)!;
    const servicePort = service.spec.ports.find((port: any) => port.port === Number(url.port));
    const api = find(objects(), 'Deployment', 'api')!;
    expect(selects(service.spec.selector, api.spec.template.metadata.labels)).toBe(true);
    const apiContainer = containers(api)[0];
    const containerPort = apiContainer.ports.find((port: any) => port.name === servicePort.targetPort).containerPort;
    expect(String(containerPort)).toBe(envOf(apiContainer, 'METRICS_PORT'));
    expect(envOf(apiContainer, 'METRICS_HOST')).toBe('0.0.0.0');

    const useful = usefulWorkers(modelsConfigOf(objects()), Number(concurrency));
    expect(spec.maxReplicaCount).toBe(Math.max(2, useful));
    expect(spec.minReplicaCount).toBeGreaterThanOrEqual(1);
    expect(spec.minReplicaCount).toBeLessThanOrEqual(spec.maxReplicaCount);
  });

  test('a stopping worker gets its SHUTDOWN_GRACE_MS and the hand-back before Kubernetes kills it', () => {
    const worker = find(objects(), 'Deployment', 'worker')!;
    const grace = Number(envOf(containers(worker)[0], 'SHUTDOWN_GRACE_MS'));
    expect(grace).toBeGreaterThan(0);
    expect(podSpec(worker).terminationGracePeriodSeconds * 1000).toBeGreaterThanOrEqual(grace + HAND_BACK_MS);
  });

  test('the Ingress streams SSE and websockets: buffering off, long timeouts, cookie affinity for polling', () => {
    const [ingress] = ofKind(objects(), 'Ingress');
    expect(ingress!.metadata.annotations).toMatchObject({
      'nginx.ingress.kubernetes.io/proxy-buffering': 'off',
      'nginx.ingress.kubernetes.io/affinity': 'cookie',
    });
    for (const timeout of ['proxy-read-timeout', 'proxy-send-timeout']) {
      expect(Number(ingress!.metadata.annotations?.[`nginx.ingress.kubernetes.io/${timeout}`])).toBeGreaterThanOrEqual(3600);
    }
    expect(ingress!.spec.rules[0].http.paths[0].backend.service).toEqual({ name: 'api', port: { name: 'http' } });
  });

  test('network policies deny by default and open the metrics ports to monitoring and KEDA only', () => {
    const policies = ofKind(objects(), 'NetworkPolicy');
    const deny = find(objects(), 'NetworkPolicy', 'default-deny')!;
    expect(deny.spec).toEqual({ podSelector: {}, policyTypes: ['Ingress', 'Egress'] });
    const fromNamespaces = (rule: any) => rule.from.map((peer: any) => peer.namespaceSelector?.matchLabels?.['kubernetes.io/metadata.name']).sort();
    const apiMetrics = find(objects(), 'NetworkPolicy', 'api')!.spec.ingress.find((rule: any) => rule.ports.some((port: any) => port.port === 9464));
    expect(fromNamespaces(apiMetrics)).toEqual(['keda', 'monitoring']);
    const workerMetrics = find(objects(), 'NetworkPolicy', 'worker')!.spec.ingress.find((rule: any) => rule.ports.some((port: any) => port.port === 9464));
    expect(fromNamespaces(workerMetrics)).toEqual(['monitoring']);
    // api and workers can reach Redis, whichever overlay provides it.
    for (const app of ['api', 'worker']) {
      const egressPorts = policies
        .filter((policy) => policy.spec.policyTypes.includes('Egress'))
        .filter((policy) => {
          const selector = policy.spec.podSelector;
          return (
            selects(selector.matchLabels ?? {}, { 'app.kubernetes.io/name': app }) ||
            selector.matchExpressions?.some((expression: any) => expression.values.includes(app))
          );
        })
        .flatMap((policy) => policy.spec.egress.flatMap((rule: any) => rule.ports.map((port: any) => port.port)));
      expect([app, egressPorts]).toEqual([app, expect.arrayContaining([6379])]);
    }
  });

  test(`${overlay}: Secrets in git are placeholders only`, () => {
    for (const secret of ofKind(objects(), 'Secret')) {
      expect(secret.metadata.labels?.['app.kubernetes.io/component']).toBe('placeholder-secret');
      expect(secret.stringData ?? {}).not.toHaveProperty('WEBHOOK_SECRET');
    }
  });
});

describe('dev overlay', () => {
  test('runs Redis in a StatefulSet on a PersistentVolume with AOF, maxmemory below its limit and noeviction', () => {
    const redis = find(dev, 'StatefulSet', 'redis')!;
    expect(redis.spec.replicas).toBe(1);
    const container = containers(redis)[0];
    const args: string[] = container.args;
    const option = (name: string) => args[args.indexOf(`--${name}`) + 1];
    expect(option('appendonly')).toBe('yes');
    expect(option('maxmemory-policy')).toBe('noeviction');
    expect(option('dir')).toBe('/data');
    const maxmemory = /^(\d+)mb$/.exec(option('maxmemory') ?? '');
    expect(maxmemory).not.toBeNull();
    const limit = /^(\d+)Mi$/.exec(container.resources.limits.memory);
    expect(Number(maxmemory![1])).toBeLessThan(Number(limit![1]) * 0.9);
    const [claim] = redis.spec.volumeClaimTemplates;
    expect(container.volumeMounts).toContainEqual({ name: claim.metadata.name, mountPath: '/data' });
    const env = ofKind(dev, 'ConfigMap').find((object) => object.metadata.name.startsWith('mageagent-env'))!;
    expect(env.data.REDIS_URL).toBe('redis://redis:6379');
    expect(find(dev, 'Service', 'redis')).toBeDefined();
  });

  test('runs the simulator (labelled as such) with the models config the image carries', () => {
    const sim = find(dev, 'Deployment', 'model-sim')!;
    expect(sim.metadata.labels?.['app.kubernetes.io/component']).toBe('simulator');
    expect(find(dev, 'Service', 'model-sim')!.metadata.labels?.['app.kubernetes.io/component']).toBe('simulator');
    // The simulator reads the image's config/models.compose.yaml; the mounted one must equal it.
    expect(envOf(containers(sim)[0], 'MODELS_CONFIG')).toBe('config/models.compose.yaml');
    expect(readFileSync(path.join(ROOT, 'k8s/base/models.yaml'), 'utf8')).toBe(readFileSync(path.join(ROOT, 'config/models.compose.yaml'), 'utf8'));
    for (const role of Object.values(modelsConfigOf(dev).roles)) expect(role.endpoint).toBe('http://model-sim:3458/v1');
  });
});

describe('production overlay', () => {
  test('has no Redis StatefulSet, no simulator and no Secret; Redis is reached through Sentinel', () => {
    expect(ofKind(production, 'StatefulSet')).toEqual([]);
    expect(production.filter((object) => object.metadata.name.includes('redis') && object.kind !== 'NetworkPolicy')).toEqual([]);
    expect(
      production.filter((object) => object.metadata.labels?.['app.kubernetes.io/component'] === 'simulator' || object.metadata.name.includes('model-sim')),
    ).toEqual([]);
    expect(ofKind(production, 'Secret')).toEqual([]); // created out of band
    const env = ofKind(production, 'ConfigMap').find((object) => object.metadata.name.startsWith('mageagent-env'))!;
    expect(env.data.REDIS_URL).toBeUndefined();
    expect(env.data.REDIS_SENTINELS.split(',').length).toBeGreaterThanOrEqual(3);
    expect(env.data.REDIS_SENTINEL_NAME).toBe('mymaster');
  });

  test('uses real model servers whose keys come from the mageagent-model-keys Secret', () => {
    const config = modelsConfigOf(production);
    for (const role of Object.values(config.roles)) {
      expect(role.endpoint).not.toMatch(/model-sim|sim/);
      expect(role.model).not.toMatch(/^sim\//);
      expect(role.apiKeyEnv).toBeDefined();
    }
    const worker = containers(find(production, 'Deployment', 'worker')!)[0];
    expect(worker.envFrom).toContainEqual({ secretRef: { name: 'mageagent-model-keys' } });
    // The drain is tied to the longest model call (a task in its last call is not thrown away).
    const longestCall = Math.max(...Object.values(config.roles).map((role) => role.timeouts.totalMs));
    expect(Number(envOf(worker, 'SHUTDOWN_GRACE_MS'))).toBeGreaterThanOrEqual(longestCall);
  });

  test('pins the image in a registry and runs more api replicas than dev', () => {
    const api = find(production, 'Deployment', 'api')!;
    expect(containers(api)[0].image).toBe('registry.example.com/mageagent/orchestrator:0.1.0');
    expect(api.spec.replicas).toBeGreaterThan(find(dev, 'Deployment', 'api')!.spec.replicas);
  });
});

test('components/hpa, listed instead of components/keda, scales the workers with an HPA on the External metric mageagent_queue_backlog', () => {
  kubectlAvailable();
  // A throwaway overlay (kustomize loads bases from anywhere, by relative path).
  const dir = mkdtempSync(path.join(tmpdir(), 'mageagent-hpa-'));
  const base = (name: string) => path.relative(dir, path.join(ROOT, 'k8s', name));
  try {
    writeFileSync(
      path.join(dir, 'kustomization.yaml'),
      `apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: ${NAMESPACE}\nbases: [${base('base')}, ${base('components/hpa')}]\n`,
    );
    const objects = render(dir);
    expect(ofKind(objects, 'ScaledObject')).toEqual([]);
    const hpas = ofKind(objects, 'HorizontalPodAutoscaler');
    expect(hpas).toHaveLength(1);
    const [hpa] = hpas;
    expect(hpa!.apiVersion).toBe('autoscaling/v2');
    expect(hpa!.spec.scaleTargetRef).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment', name: 'worker' });
    const worker = find(objects, 'Deployment', 'worker')!;
    expect(hpa!.spec.metrics).toEqual([
      {
        type: 'External',
        external: {
          metric: { name: 'mageagent_queue_backlog' },
          target: { type: 'AverageValue', averageValue: envOf(containers(worker)[0], 'WORKER_CONCURRENCY') },
        },
      },
    ]);
    // Same bounds as the ScaledObject it replaces.
    const scaledObject = render(path.join(ROOT, 'k8s/components/keda'))[0]!;
    expect([hpa!.spec.minReplicas, hpa!.spec.maxReplicas]).toEqual([scaledObject.spec.minReplicaCount, scaledObject.spec.maxReplicaCount]);
    expect(validate(hpas)).toEqual([{ kind: 'HorizontalPodAutoscaler', name: 'worker', error: null }]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the schema validator rejects an invalid object and an unknown kind (it is not a silent pass)', () => {
  const results = validate([
    { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'broken' }, spec: { replicas: 'two' } },
    { apiVersion: 'keda.sh/v1alpha1', kind: 'ScaledObject', metadata: { name: 'broken' }, spec: { triggers: [] } },
    { apiVersion: 'example.com/v1', kind: 'Unknown', metadata: { name: 'x' } },
  ]);
  expect(results.map((result) => result.error)).toEqual([
    expect.stringContaining('selector'),
    expect.stringContaining('scaleTargetRef'),
    'no schema for example.com/v1 Unknown',
  ]);
});

describe('docker-compose.yml', () => {
  const compose = parseYaml(readFileSync(path.join(ROOT, 'docker-compose.yml'), 'utf8'));
  const services = compose.services;
  /** The value compose uses when the variable is unset: `${VAR:-default}` -> default. */
  const withDefaults = (value: string) => String(value).replace(/\$\{[A-Z_]+:-([^}]*)\}/g, '$1');

  test('names the services, the volume and the profiles the docs describe', () => {
    expect(Object.keys(services).sort()).toEqual(['api', 'model-sim', 'redis', 'worker']);
    expect(Object.keys(compose.volumes)).toEqual(['redis-data']);
    expect(services['model-sim'].profiles).toEqual(['sim']);
    for (const name of ['redis', 'api', 'worker']) expect(services[name].profiles).toBeUndefined();
    const docs = readFileSync(path.join(ROOT, 'docs/operate/compose.md'), 'utf8');
    for (const word of ['redis-data', 'COMPOSE_PROFILES=sim', 'COMPOSE_PROFILES=mlx', 'config/models.mlx.yaml']) expect(docs).toContain(word);
    // Every variable the file reads is documented.
    const variables = new Set([...readFileSync(path.join(ROOT, 'docker-compose.yml'), 'utf8').matchAll(/\$\{([A-Z_]+)/g)].map((match) => match[1]!));
    expect(variables.size).toBeGreaterThanOrEqual(5);
    for (const variable of variables) expect([variable, docs.includes(`\`${variable}\``)]).toEqual([variable, true]);
  });

  test('keeps the queue: Redis with AOF, maxmemory + noeviction, a named volume on /data and a healthcheck', () => {
    const redis = services.redis;
    const args: string[] = redis.command;
    const option = (name: string) => args[args.indexOf(`--${name}`) + 1];
    expect(args[0]).toBe('redis-server');
    expect(option('appendonly')).toBe('yes');
    expect(option('maxmemory-policy')).toBe('noeviction');
    expect(option('maxmemory')).toMatch(/^\d+mb$/);
    expect(redis.volumes).toEqual(['redis-data:/data']);
    expect(redis.healthcheck.test).toEqual(['CMD', 'redis-cli', 'ping']);
    expect(redis.image).toMatch(/^redis:\d+\.\d+\.\d+-alpine$/);
  });

  test('runs the contract commands; the api is published on loopback only', () => {
    for (const name of ['api', 'worker', 'model-sim']) expect(services[name].command).toEqual(COMMANDS[name]);
    expect(services.api.ports).toEqual(['127.0.0.1:3457:3457']);
    for (const [name, service] of Object.entries<any>(services)) {
      if (name !== 'api') expect(service.ports).toBeUndefined();
    }
    expect(services.api.environment.API_KEYS_FILE).toBe('/run/secrets/api_keys');
    expect(compose.secrets.api_keys.file).toBe('./secrets/api-keys.yaml');
  });

  test('the worker has a healthcheck on HEALTH_PORT /readyz and a depends_on that works with either profile', () => {
    const worker = services.worker;
    expect(worker.environment.HEALTH_PORT).toBe('9464');
    expect(worker.environment.HEALTH_HOST).toBe('0.0.0.0');
    expect(worker.healthcheck.test.join(' ')).toContain('http://127.0.0.1:9464/readyz');
    expect(worker.depends_on.redis).toEqual({ condition: 'service_healthy' });
    expect(worker.depends_on['model-sim']).toEqual({ condition: 'service_healthy', required: false });
    expect(worker.extra_hosts).toEqual(['host.docker.internal:host-gateway']);
    // The stop grace outlasts the drain and the hand-back, with the defaults.
    const grace = Number(withDefaults(worker.environment.SHUTDOWN_GRACE_MS));
    const stop = /^(\d+)s$/.exec(withDefaults(worker.stop_grace_period));
    expect(Number(stop![1]) * 1000).toBeGreaterThan(grace + HAND_BACK_MS);
  });

  test('both profiles have a models config that parses: the simulator by default, the host MLX servers for mlx', () => {
    expect(withDefaults(services.worker.environment.MODELS_CONFIG)).toBe('config/models.compose.yaml');
    expect(services.api.environment.MODELS_CONFIG).toBe(services.worker.environment.MODELS_CONFIG);
    const sim = parseModelsConfig(readFileSync(path.join(ROOT, 'config/models.compose.yaml'), 'utf8'), 'compose', {});
    for (const role of Object.values(sim.roles)) expect(role.endpoint).toBe('http://model-sim:3458/v1');
    const mlx = parseModelsConfig(readFileSync(path.join(ROOT, 'config/models.mlx.yaml'), 'utf8'), 'mlx', {});
    expect(Object.keys(mlx.roles).sort()).toEqual(['competitor', 'primary', 'tools', 'validator']);
    for (const role of Object.values(mlx.roles)) expect(role.endpoint).toMatch(/^http:\/\/host\.docker\.internal:808\d\/v1$/);
  });
});
