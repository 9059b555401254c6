import type { ToolDefinition } from '@mageagent/core';

/** A request-supplied tool for tests: one required string, an integer with a floor, an enum. */
export const searchTool: ToolDefinition = {
  type: 'function',
  function: {
    name: 'search',
    description: 'Search the web',
    parameters: {
      type: 'object',
      properties: { query: { type: 'string' }, limit: { type: 'integer', minimum: 1 }, mode: { enum: ['fast', 'deep'] } },
      required: ['query'],
      additionalProperties: false,
    },
  },
};
