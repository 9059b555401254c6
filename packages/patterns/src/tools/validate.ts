import type { ToolSpec } from './definitions';
import type { RawToolCall } from './parse';

/** A call to a known tool whose arguments passed its parameters. */
export interface ValidToolCall {
  tool: string;
  arguments: Record<string, unknown>;
}

/** Raw calls sorted into the valid ones, the names of unknown tools, and what is wrong with the rest. */
export interface ToolCallsValidation {
  calls: ValidToolCall[];
  /** Names of tools that are not offered; their calls are dropped. */
  unknown: string[];
  /** `call <n>: <tool>.<path> <message>`, numbered as the model wrote the calls. */
  errors: string[];
}

function findSpec(specs: readonly ToolSpec[], name: string): ToolSpec | undefined {
  const exact = specs.find((spec) => spec.name === name);
  if (exact) return exact;
  // "read" for "Read" is a slip, not a different tool, as long as only one tool fits.
  const folded = specs.filter((spec) => spec.name.toLowerCase() === name.toLowerCase());
  return folded.length === 1 ? folded[0] : undefined;
}

/** Checks each call's tool against the offered specs and its arguments against the tool's parameters. */
export function validateToolCalls(raw: readonly RawToolCall[], specs: readonly ToolSpec[]): ToolCallsValidation {
  const result: ToolCallsValidation = { calls: [], unknown: [], errors: [] };
  for (const [index, call] of raw.entries()) {
    const spec = findSpec(specs, call.tool);
    if (!spec) {
      result.unknown.push(call.tool);
      continue;
    }
    const check = spec.validate(call.arguments);
    if (check.ok) result.calls.push({ tool: spec.name, arguments: check.value });
    else result.errors.push(...check.errors.map((error) => `call ${index + 1}: ${error}`));
  }
  return result;
}
