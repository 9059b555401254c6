import type { QuotaLimits } from '@mageagent/core';
import type { Caller } from '../task-service';
import type { ApiKeyRegistry } from './api-keys';
import type { KeyDirectory } from './authenticator';

/** The keys file's registry as the authenticator's key directory. */
export function keyDirectoryOf(registry: ApiKeyRegistry): KeyDirectory {
  return {
    identify(presented: string, defaults: QuotaLimits): Caller | undefined {
      const entry = registry.authenticate(presented);
      return entry === undefined ? undefined : { principal: registry.principalOf(entry), limits: registry.limitsOf(entry, defaults) };
    },
    webhookSecretOf: (tenant) => registry.webhookSecretOf(tenant),
  };
}
