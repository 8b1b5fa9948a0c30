// The bundle's shared cases, run through THIS binding's own store and
// decide calls, must give exactly the native engine's decisions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Portcullis, MemoryStore, readBundleDir } from '../src/index.js';
import { BUNDLE, nativeCheck } from './helpers.mjs';

const native = nativeCheck();
const files = readBundleDir(BUNDLE);

// One guest instance; its store is swapped for a fresh MemoryStore per
// case, through the pluggable-store interface.
let current = new MemoryStore();
const calls = { get: 0, cas: 0 };
const engine = new Portcullis({
  store: {
    get: (keys) => (calls.get++, current.get(keys)),
    compareAndSet: (writes) => (calls.cas++, current.compareAndSet(writes)),
  },
});
const info = engine.load(files);
const plan = engine.casePlan();

test('the native engine accepted the bundle and ran the same cases', () => {
  assert.equal(native.accepted, true);
  assert.equal(native.bundle.hash, info.hash, 'bundle hash differs between native and binding');
  assert.equal(info.caseCount, plan.length);
  assert.ok(plan.length > 0, 'the bundle has no cases');
  assert.deepEqual(
    plan.map((c) => [c.file, c.name]),
    native.decisions.map((c) => [c.file, c.name]),
  );
});

for (const [i, c] of plan.entries()) {
  test(`${c.file} › ${c.name}`, () => {
    const want = native.decisions[i];
    assert.ok(want, 'no native decisions for this case');
    assert.equal(want.name, c.name);
    assert.equal(want.decisions.length, c.steps.length, 'number of decisions');
    current = new MemoryStore();
    for (const [j, step] of c.steps.entries()) {
      const got = engine.decide(step.request);
      assert.deepEqual(got, want.decisions[j], `step ${step.step} (request ${j + 1}): decision differs from native`);
      if (step.expect) {
        const failures = engine.checkDecision(step.expect, got);
        assert.deepEqual(failures, [], `step ${step.step}: ${failures.join('; ')}`);
      }
    }
  });
}

test('at most one batched get and one batched compare-and-set per decision', () => {
  const decisions = plan.reduce((n, c) => n + c.steps.length, 0);
  assert.ok(calls.get <= decisions, `${calls.get} gets for ${decisions} decisions`);
  assert.ok(calls.cas <= decisions, `${calls.cas} compare-and-sets for ${decisions} decisions`);
});

test('check() in the guest agrees with the native case report', () => {
  const report = engine.check();
  assert.equal(report.ok, true, JSON.stringify(report.cases.filter((c) => !c.passed)));
  assert.equal(report.failed, 0);
  assert.deepEqual({ passed: report.passed, failed: report.failed, cases: report.cases }, native.cases);
});
