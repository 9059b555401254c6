// Validates Kubernetes objects against the JSON schemas that kubernetes-models (Kubernetes
// OpenAPI) and @kubernetes-models/keda (KEDA's CRDs) ship, offline. A plain Node ES module,
// run as a child process: both packages are ES modules only, which jest's CommonJS runtime
// cannot load. Reads a JSON array of objects on stdin; writes a JSON array of
// { kind, name, error } (error null when valid). An apiVersion/kind without a schema is an
// error, never a pass.
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const objects = JSON.parse(Buffer.concat(chunks).toString('utf8'));

/** The module that exports the model class of one apiVersion and kind. */
function modulePath(apiVersion, kind) {
  if (apiVersion.startsWith('keda.sh/')) return `@kubernetes-models/keda/${apiVersion}/${kind}`;
  return `kubernetes-models/${apiVersion}/${kind}`;
}

const results = [];
for (const object of objects) {
  const { apiVersion, kind } = object;
  const name = object.metadata?.name ?? '';
  let error = null;
  try {
    const Model = (await import(modulePath(apiVersion, kind)))[kind];
    if (typeof Model !== 'function') throw new Error(`no schema for ${apiVersion} ${kind}`);
    // The model's constructor copies the object; validate() throws with every violation.
    new Model(object).validate();
  } catch (failure) {
    error =
      failure.code === 'ERR_MODULE_NOT_FOUND' || failure.code === 'ERR_PACKAGE_PATH_NOT_EXPORTED'
        ? `no schema for ${apiVersion} ${kind}`
        : String(failure.message ?? failure);
  }
  results.push({ kind, name, error });
}
process.stdout.write(JSON.stringify(results));
