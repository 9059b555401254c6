// The loader hook of record-imports.mjs (it runs on the loader's thread).
import { appendFileSync } from 'node:fs';

const file = process.env.RECORD_IMPORTS_FILE;

export async function resolve(specifier, context, nextResolve) {
  const result = await nextResolve(specifier, context);
  if (file) appendFileSync(file, `${result.url}\n`);
  return result;
}
