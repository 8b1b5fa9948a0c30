// The copy-paste example of bindings/node/README.md "Use from Node" runs and
// prints what the README shows.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, PKG, linkPackage } from './helpers.mjs';

const EXAMPLE = join(ROOT, 'examples/node/quickstart.mjs');

test('examples/node/quickstart.mjs prints the outcome and reasons', () => {
  linkPackage(join(ROOT, 'examples/node'));
  const out = execFileSync(process.execPath, [EXAMPLE], { encoding: 'utf8', cwd: ROOT });
  assert.match(out, /^bundle: portcullis-default \S+, \d+ policies\noutcome: allow\nreasons: login permitted\n$/);
});

test('the README quotes the example verbatim, with its output', () => {
  const readme = readFileSync(join(PKG, 'README.md'), 'utf8');
  assert.match(readme, /^## Use from Node$/m);
  assert.ok(readme.includes(readFileSync(EXAMPLE, 'utf8').trim()), 'README does not quote examples/node/quickstart.mjs as it is');
  assert.ok(readme.includes('outcome: allow\nreasons: login permitted'), 'README does not show the output');
});
