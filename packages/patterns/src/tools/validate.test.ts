import { BUILT_IN_TOOL_SPECS } from './definitions';
import { validateToolCalls } from './validate';

const readCall = { tool: 'Read', arguments: { file_path: 'src/app.ts' } };

test('validateToolCalls keeps valid calls, drops unknown tools and numbers the errors', () => {
  const raw = [
    readCall,
    { tool: 'Browse', arguments: { url: 'https://example.com' } },
    { tool: 'bash', arguments: { command: 'ls' } },
    { tool: 'Write', arguments: { file_path: 'a.txt' } },
  ];
  expect(validateToolCalls(raw, BUILT_IN_TOOL_SPECS)).toEqual({
    calls: [readCall, { tool: 'Bash', arguments: { command: 'ls' } }],
    unknown: ['Browse'],
    errors: ['call 4: Write.content is required'],
  });
});
