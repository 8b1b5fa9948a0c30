// Shared by the tests: where the repository's artefacts are, and the
// native engine's decisions for the case plan.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, symlinkSync, lstatSync, readlinkSync, rmSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const PKG = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const ROOT = resolve(PKG, '../..');
export const BUNDLE = resolve(process.env.PORTCULLIS_BUNDLE ?? join(ROOT, 'policies'));
export const NATIVE = resolve(process.env.PORTCULLIS_BIN ?? join(ROOT, 'target/release/portcullis'));

export const LOGIN = {
  principal: { type: 'User', id: 'alice@example.com' },
  action: 'login',
  resource: { type: 'App', id: 'sales-cloud' },
  context: { ip: '203.0.113.7', module: 'sales_cloud' },
  now: '2026-11-22T10:00:00Z',
};

/** The native engine's run of the case plan: {accepted, cases, decisions: [{file, name, decisions}]}. */
export function nativeCheck(bundle = BUNDLE) {
  if (!existsSync(NATIVE)) throw new Error(`${NATIVE} is missing: run \`make build\``);
  let out;
  try {
    out = execFileSync(NATIVE, ['--engine', 'native', '--format', 'json', 'check', '--decisions', bundle], {
      encoding: 'utf8',
      maxBuffer: 256 * 1024 * 1024,
    });
  } catch (e) {
    // exit 1 (a case failed) still prints the report
    if (e.stdout) out = e.stdout;
    else throw e;
  }
  return JSON.parse(out);
}

/** Make `import 'portcullis'` resolve from an example directory (what `npm install` of file:../../bindings/node does). */
export function linkPackage(exampleDir) {
  const nm = join(exampleDir, 'node_modules');
  const link = join(nm, 'portcullis');
  const target = relative(nm, PKG);
  try {
    if (lstatSync(link).isSymbolicLink() && readlinkSync(link) === target) return;
    rmSync(link, { recursive: true, force: true });
  } catch {
    // absent
  }
  mkdirSync(nm, { recursive: true });
  symlinkSync(target, link, 'dir');
}
