import { ConfigError } from '@mageagent/core';
import type { HostConfig, ModelsConfig, RoleConfig } from './config';
import { OpenAICompatibleModel } from './openai-client';
import { TracedModel } from './traced-model';
import type { ChatModel } from './types';

/** Builds the model for one role; tests pass one that returns in-process fakes. */
export type ChatModelFactory = (roleName: string, roleConfig: RoleConfig, env: NodeJS.ProcessEnv) => ChatModel;

const createOpenAICompatibleModel: ChatModelFactory = (roleName, roleConfig, env) => OpenAICompatibleModel.fromRole(roleName, roleConfig, env);

/** The models of a config by role name: one client per role, built once at start-up. */
export class ModelRegistry {
  private readonly models = new Map<string, ChatModel>();

  constructor(
    private readonly config: ModelsConfig,
    env: NodeJS.ProcessEnv = process.env,
    createModel: ChatModelFactory = createOpenAICompatibleModel,
  ) {
    for (const [roleName, roleConfig] of Object.entries(config.roles)) {
      // Outermost, so a call's span covers its host lease wait and its HTTP request.
      this.models.set(roleName, new TracedModel(roleName, createModel(roleName, roleConfig, env)));
    }
  }

  /** The model serving a role; an unknown role is a configuration mistake, so the error lists the known ones. */
  role(name: string): ChatModel {
    const model = this.models.get(name);
    if (model === undefined) throw this.unknownRole(name);
    return model;
  }

  has(name: string): boolean {
    return this.models.has(name);
  }

  /** Role names in config order. */
  roles(): string[] {
    return [...this.models.keys()];
  }

  /** Host names declared under `hosts`, in config order. */
  hosts(): string[] {
    return Object.keys(this.config.hosts);
  }

  roleConfig(name: string): RoleConfig {
    const roleConfig = this.config.roles[name];
    if (roleConfig === undefined) throw this.unknownRole(name);
    return roleConfig;
  }

  hostConfig(name: string): HostConfig {
    const hostConfig = this.config.hosts[name];
    if (hostConfig === undefined) {
      throw new ConfigError(`unknown host "${name}"; known hosts: ${this.hosts().join(', ')}`);
    }
    return hostConfig;
  }

  private unknownRole(name: string): ConfigError {
    return new ConfigError(`unknown model role "${name}"; known roles: ${this.roles().join(', ')}`, {
      role: name,
      knownRoles: this.roles(),
    });
  }
}
