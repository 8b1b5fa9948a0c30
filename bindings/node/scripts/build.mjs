// Transpile the guest component into gen/ with jco (run by `make bindings-node`
// and `npm run build`). The component is the one `make guest` builds; set
// PORTCULLIS_WASM to use another file.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(dirname(fileURLToPath(import.meta.url)));
const wasm = resolve(process.env.PORTCULLIS_WASM ?? join(here, '../../target/wasm32-wasip2/guest/portcullis_guest.wasm'));
const gen = join(here, 'gen');

if (!existsSync(wasm)) {
  console.error(`portcullis: ${wasm} is missing; build the guest first (make guest)`);
  process.exit(2);
}
const sha = createHash('sha256').update(readFileSync(wasm)).digest('hex');
const stamp = join(gen, 'SOURCE');
const jcoDir = join(here, 'node_modules/@bytecodealliance/jco');
if (!existsSync(jcoDir)) {
  console.error('portcullis: jco is not installed; run `npm ci` in bindings/node (make bindings-node does)');
  process.exit(2);
}
const jcoPkg = JSON.parse(readFileSync(join(jcoDir, 'package.json'), 'utf8'));
const want = `${sha} jco ${jcoPkg.version}\n`;
if (existsSync(stamp) && readFileSync(stamp, 'utf8') === want && !process.argv.includes('--force')) {
  console.log(`gen/ is up to date (guest ${sha.slice(0, 12)}, jco ${jcoPkg.version})`);
  process.exit(0);
}

rmSync(gen, { recursive: true, force: true });
mkdirSync(gen, { recursive: true });
const jco = join(jcoDir, typeof jcoPkg.bin === 'string' ? jcoPkg.bin : jcoPkg.bin.jco);
execFileSync(
  process.execPath,
  [jco, 'transpile', wasm, '--out-dir', gen, '--name', 'portcullis', '--instantiation', 'sync', '--quiet'],
  { stdio: 'inherit' },
);
writeFileSync(stamp, want);
console.log(`transpiled ${wasm} (sha256 ${sha.slice(0, 12)}) with jco ${jcoPkg.version} into gen/`);
