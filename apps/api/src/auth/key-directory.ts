import type { Logger } from '@mageagent/core';
import type { KeyDirectory } from './authenticator';

/** The keys of API_KEYS_FILE, reloaded on SIGHUP and when the file changes. */
export function openKeyDirectory(path: string, logger: Logger): KeyDirectory {
  void path;
  void logger;
  throw new Error('API_KEYS_FILE is not supported yet');
}
