// Build the playground into dist/ (run by `make playground`):
//   1. transpile the guest component for the browser with jco (async
//      instantiation, no Node compatibility) into build/gen/;
//   2. embed the default bundle: policies/ read exactly as the Rust host
//      reads a bundle directory, into build/bundle.json;
//   3. expand the examples (examples.json) through the guest's case-plan
//      into build/examples.json;
//   4. bundle src/ with esbuild into dist/, with index.html and the core
//      wasm files beside it.
// Steps 2 and 3 run the guest through the Node binding (bindings/node,
// `make bindings-node`), whose jco is also the one used in step 1.
// Set PORTCULLIS_WASM to use another guest component file, PORTCULLIS_BUNDLE
// to embed another default bundle directory.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const HERE = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const ROOT = resolve(HERE, '..');
const WASM = resolve(process.env.PORTCULLIS_WASM ?? join(ROOT, 'target/wasm32-wasip2/guest/portcullis_guest.wasm'));
const BUNDLE_DIR = resolve(process.env.PORTCULLIS_BUNDLE ?? join(ROOT, 'policies'));
const NODE_BINDING = join(ROOT, 'bindings/node');
const BUILD = join(HERE, 'build');
const GEN = join(BUILD, 'gen');
const DIST = join(HERE, 'dist');

function fail(message) {
  console.error(`playground build: ${message}`);
  process.exit(2);
}

// ------------------------------------------------------------ 1. transpile

if (!existsSync(WASM)) fail(`${WASM} is missing; build the guest first (make guest)`);
const jcoDir = join(NODE_BINDING, 'node_modules/@bytecodealliance/jco');
if (!existsSync(jcoDir)) fail('jco is not installed in bindings/node; run `make bindings-node`');
const jcoPkg = JSON.parse(readFileSync(join(jcoDir, 'package.json'), 'utf8'));
const wasmSha = createHash('sha256').update(readFileSync(WASM)).digest('hex');
const stamp = join(GEN, 'SOURCE');
const want = `${wasmSha} jco ${jcoPkg.version} browser\n`;
if (existsSync(stamp) && readFileSync(stamp, 'utf8') === want) {
  console.log(`build/gen is up to date (guest ${wasmSha.slice(0, 12)}, jco ${jcoPkg.version})`);
} else {
  rmSync(GEN, { recursive: true, force: true });
  mkdirSync(GEN, { recursive: true });
  const jco = join(jcoDir, typeof jcoPkg.bin === 'string' ? jcoPkg.bin : jcoPkg.bin.jco);
  execFileSync(
    process.execPath,
    [jco, 'transpile', WASM, '--out-dir', GEN, '--name', 'portcullis', '--instantiation', 'async',
      '--no-nodejs-compat', '--no-typescript', '--quiet'],
    { stdio: 'inherit' },
  );
  writeFileSync(stamp, want);
  console.log(`transpiled the guest (sha256 ${wasmSha.slice(0, 12)}) for the browser with jco ${jcoPkg.version}`);
}

// ------------------------------------------------ 2. bundle and 3. examples

let binding;
try {
  binding = await import(pathToFileURL(join(NODE_BINDING, 'src/index.js')).href);
} catch (e) {
  fail(`cannot load the Node binding (run \`make bindings-node\`): ${e.message}`);
}
const files = binding.readBundleDir(BUNDLE_DIR);
const engine = binding.create();
let info;
try {
  info = engine.load(files);
} catch (e) {
  fail(`the default bundle is refused: ${e.message}`);
}
const report = engine.check();
if (!report.ok) fail(`the default bundle has ${report.failed} failing case(s); run \`portcullis check policies\``);
const plan = engine.casePlan();

const defs = JSON.parse(readFileSync(join(HERE, 'examples.json'), 'utf8')).examples;
const examples = defs.map((ex) => {
  const requests = [];
  for (const src of ex.from) {
    const c = plan.find((p) => p.file === src.file && p.name === src.case);
    if (!c) fail(`example \`${ex.id}\`: no case \`${src.case}\` in ${src.file}`);
    const steps = src.steps ? c.steps.filter((s) => src.steps.includes(s.step)) : c.steps;
    for (const n of src.steps ?? []) {
      if (!c.steps.some((s) => s.step === n)) fail(`example \`${ex.id}\`: case \`${src.case}\` has no step ${n}`);
    }
    for (const s of steps) requests.push(JSON.parse(s.request));
  }
  return {
    id: ex.id,
    title: ex.title,
    description: ex.description,
    sources: ex.from.map((s) => `${s.file} › ${s.case}${s.steps ? ` (steps ${s.steps.join(', ')})` : ''}`),
    requests,
  };
});

writeFileSync(join(BUILD, 'bundle.json'), JSON.stringify({ info, files }));
writeFileSync(join(BUILD, 'examples.json'), JSON.stringify(examples, null, 1));
console.log(
  `embedded ${info.name} ${info.version} (${files.length} files, hash ${info.hash.slice(0, 16)}, ` +
    `${report.passed} cases pass) and ${examples.length} examples`,
);

// --------------------------------------------------------------- 4. bundle

const esbuild = await import('esbuild');
rmSync(DIST, { recursive: true, force: true });
mkdirSync(DIST, { recursive: true });
const result = await esbuild.build({
  absWorkingDir: HERE,
  entryPoints: { app: 'src/main.js' },
  outdir: DIST,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['chrome111', 'firefox115', 'safari16.4'],
  minify: true,
  sourcemap: 'linked',
  legalComments: 'linked',
  metafile: true,
  logLevel: 'warning',
});
copyFileSync(join(HERE, 'src/index.html'), join(DIST, 'index.html'));
const cores = readdirSync(GEN).filter((f) => f.endsWith('.wasm'));
for (const f of cores) copyFileSync(join(GEN, f), join(DIST, f));

const sizes = Object.entries(result.metafile.outputs)
  .filter(([p]) => !p.endsWith('.map'))
  .map(([p, o]) => `${relative(DIST, resolve(HERE, p))} ${(o.bytes / 1024).toFixed(0)} KiB`);
console.log(`dist/: index.html, ${sizes.join(', ')}, ${cores.join(', ')}`);
