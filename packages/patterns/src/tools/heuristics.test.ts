import { needsTools } from './heuristics';

test.each([
  'read src/app.ts',
  'Read the file config.yaml and summarise it',
  'please edit package.json to add a test script',
  'create a new file called notes.md',
  'Write the results to a file',
  'write them into a new json file',
  'modify the config file so the port is 8080',
  'delete the build directory',
  'save it to disk',
  'rename utils.js to helpers.js',
  'list the files in src',
  'show me the directory tree',
  'run the tests',
  'Execute this script and tell me what it prints',
  'run npm install',
  'run `ls -la` for me',
  'search for TODO in the files',
  'find all usages of parseConfig in the codebase',
  'grep for "timeout"',
  'use bash to count the lines',
  'open a terminal and check the node version',
  'what is the command line to start it?',
  'glob every test under packages',
  'call the weather API for Paris',
  'make a function call to getUser',
])('needs tools: %s', (text) => {
  expect(needsTools(text)).toBe(true);
});

test.each([
  'explain quicksort',
  'write a poem about autumn',
  'Write a short story about a dragon',
  'create a marketing plan for a bakery',
  'what is the capital of France?',
  'run a marathon training plan for beginners',
  'find the derivative of x^2 + 3x',
  'search for meaning in life',
  'list three fruits that are red',
  'how does a for loop work in Python?',
  'summarise this paragraph',
  'edit my essay for grammar',
  'update me on the news',
  'in a nutshell, what is a monad?',
])('needs no tools: %s', (text) => {
  expect(needsTools(text)).toBe(false);
});
