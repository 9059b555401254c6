// Loaded with `node --import` into a service under test: records the URL of every module the
// ESM loader resolves (dynamic imports included) into RECORD_IMPORTS_FILE, one a line, so a test
// can tell which packages a real process loaded.
import { register } from 'node:module';

register('./record-imports-hooks.mjs', import.meta.url);
