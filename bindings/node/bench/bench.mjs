// Decide per call and first load from Node (not part of the tests).
//   node bench/bench.mjs [--calls N] [--runs R] [--json]
// first load = import the binding (jco output + preview2-shim) + compile and
// instantiate the component + load the bundle, in a fresh process.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(here, '../../..');
const BUNDLE = process.env.PORTCULLIS_BUNDLE ?? join(ROOT, 'policies');
const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const CALLS = arg('--calls', 20000);
const RUNS = arg('--runs', 5);
const LOGIN = '{"principal":{"type":"User","id":"alice@example.com"},"action":"login","resource":{"type":"App","id":"sales-cloud"},"context":{"ip":"203.0.113.7","module":"sales_cloud"},"now":"2026-11-22T10:00:00Z"}';
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

if (process.argv.includes('--first-load-child')) {
  const t0 = performance.now();
  const { loadDir } = await import('../src/index.js');
  const t1 = performance.now();
  loadDir(BUNDLE);
  const t2 = performance.now();
  process.stdout.write(JSON.stringify({ import_ms: t1 - t0, instantiate_load_ms: t2 - t1, total_ms: t2 - t0 }));
  process.exit(0);
}

const firsts = [];
for (let i = 0; i < RUNS; i++) {
  firsts.push(JSON.parse(execFileSync(process.execPath, [fileURLToPath(import.meta.url), '--first-load-child'], { encoding: 'utf8' })));
}

const { Portcullis } = await import('../src/index.js');
const p = new Portcullis();
p.loadDir(BUNDLE);
const d = p.decide(LOGIN);
if (d.outcome !== 'allow') throw new Error(`unexpected decision ${JSON.stringify(d)}`);
for (let i = 0; i < 5000; i++) p.decideJson(LOGIN); // warm up (tier-up of the wasm and the glue)

const time = (f) => {
  const runs = [];
  for (let r = 0; r < RUNS; r++) {
    const t = process.hrtime.bigint();
    for (let i = 0; i < CALLS; i++) f();
    runs.push(Number(process.hrtime.bigint() - t) / 1000 / CALLS);
  }
  return { median_us: median(runs), runs_us: runs.map((x) => +x.toFixed(2)) };
};
const req = JSON.parse(LOGIN);
const result = {
  runtime: `node ${process.version}`,
  calls: CALLS,
  runs: RUNS,
  decide_json: time(() => p.decideJson(LOGIN)),
  decide_object: time(() => p.decide(req)),
  first_load_ms: {
    median_total: median(firsts.map((f) => f.total_ms)),
    median_import: median(firsts.map((f) => f.import_ms)),
    median_instantiate_load: median(firsts.map((f) => f.instantiate_load_ms)),
  },
};
if (process.argv.includes('--json')) console.log(JSON.stringify(result));
else console.log(JSON.stringify(result, null, 2));
