import type { Cluster, Redis } from 'ioredis';
import { hostMemory, type ModelsConfig } from '../config';
import type { HostHealthRecord } from './host-health';
import { HostLeases, type LeaseView } from './host-lease';

/** A host's health as GET /hosts reports it. */
export interface HostHealthReport extends HostHealthRecord {
  /** True when the record is older than three probe intervals: no process is probing. */
  stale?: boolean;
}

/** One host as GET /hosts reports it. */
export interface HostReport {
  name: string;
  /** Role → model id, for the roles resident on the host. */
  models: Record<string, string>;
  memory: {
    memoryGB: number;
    headroomGB: number;
    /** memoryGB − headroomGB: what the models may use. */
    budgetGB: number;
    /** The distinct resident models' memory, summed. */
    modelsGB: number;
  };
  maxConcurrentGenerations: number;
  /** Leases held now, with the task and worker holding each. */
  leases: LeaseView[];
  /** Model calls waiting for the host. */
  waiters: number;
  health: HostHealthReport;
  /** Fraction of the last minute's generation slots that were leased (0..1). */
  busyFraction: number;
}

/** Reads what GET /hosts shows: the config's view of each host joined with its live state in Redis. */
export class HostStatsReader {
  private readonly leases: HostLeases;

  constructor(
    private readonly redis: Redis | Cluster,
    prefix: string,
    private readonly config: ModelsConfig,
  ) {
    this.leases = new HostLeases(redis, prefix);
  }

  async read(): Promise<HostReport[]> {
    const names = Object.keys(this.config.hosts);
    if (names.length === 0) return [];
    const [healthValues, snapshots] = await Promise.all([
      this.redis.mget(...names.map((name) => this.leases.keys.health(name))),
      Promise.all(names.map((name) => this.leases.inspect(name, this.config.hosts[name]?.maxConcurrentGenerations ?? 1))),
    ]);
    return names.map((name, index) => {
      const host = this.config.hosts[name]!;
      const snapshot = snapshots[index]!;
      const models: Record<string, string> = {};
      for (const [role, roleConfig] of Object.entries(this.config.roles)) if (roleConfig.host === name) models[role] = roleConfig.model;
      return {
        name,
        models,
        memory: {
          memoryGB: host.memoryGB,
          headroomGB: host.headroomGB,
          budgetGB: host.memoryGB - host.headroomGB,
          modelsGB: hostMemory(this.config, name).sumGB,
        },
        maxConcurrentGenerations: host.maxConcurrentGenerations,
        leases: snapshot.leases,
        waiters: snapshot.waiters,
        health: healthReport(healthValues[index] ?? null),
        busyFraction: snapshot.busyFraction,
      };
    });
  }
}

function healthReport(text: string | null): HostHealthReport {
  if (text === null) return { status: 'unknown' };
  try {
    const record = JSON.parse(text) as HostHealthRecord;
    const ageMs = record.checkedAt === undefined ? Infinity : Date.now() - Date.parse(record.checkedAt);
    return record.intervalMs !== undefined && ageMs > record.intervalMs * 3 ? { ...record, stale: true } : record;
  } catch {
    return { status: 'unknown' };
  }
}
