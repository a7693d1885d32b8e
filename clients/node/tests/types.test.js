'use strict';
// index.d.ts against the TypeScript compiler: a program using the API as
// documented type-checks (as CommonJS, and as an ES module importing the
// package by name), and each misuse in types/bad.ts is an error.
const test = require('node:test');
const assert = require('node:assert');
const { execFile } = require('child_process');
const fs = require('fs');
const path = require('path');

const TSC = path.join(__dirname, '..', 'node_modules', '.bin', 'tsc');
const DIR = path.join(__dirname, 'types');

// Resolves with tsc's exit code and output for a project of tests/types.
function tsc(project) {
  return new Promise((resolve) => {
    execFile(TSC, ['--noEmit', '-p', path.join(DIR, project)], { timeout: 120000 },
      (error, stdout, stderr) => resolve({ code: error ? error.code : 0, output: stdout + stderr }));
  });
}

test('index.d.ts: the documented API type-checks', async () => {
  const { code, output } = await tsc('tsconfig.json');
  assert.strictEqual(code, 0, output);
});

test('index.d.ts: an ES module importing the package by name type-checks', async () => {
  const { code, output } = await tsc('tsconfig.esm.json');
  assert.strictEqual(code, 0, output);
});

test('index.d.ts: each misuse is a type error, and only those', async () => {
  const { code, output } = await tsc('tsconfig.bad.json');
  assert.strictEqual(code, 2, output); // type errors (1: the project could not be read)
  const reported = new Set([...output.matchAll(/bad\.ts\((\d+),\d+\): error/g)].map((m) => Number(m[1])));
  const marked = fs.readFileSync(path.join(DIR, 'bad.ts'), 'utf8').split('\n')
    .flatMap((line, index) => (line.endsWith('// error') ? [index + 1] : []));
  assert.deepStrictEqual([...reported].sort((a, b) => a - b), marked, output);
});
