// The binding's own surface: errors, stores, isolation, batch, trap safety.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as portcullis from '../src/index.js';
import { Portcullis, MemoryStore, PortcullisError, readBundleDir } from '../src/index.js';
import { BUNDLE, LOGIN, PKG } from './helpers.mjs';

const files = readBundleDir(BUNDLE);
const failure = (now) => ({ ...LOGIN, event: 'auth_failure', now });
const at = (i) => new Date(Date.parse('2026-11-22T10:00:00Z') + i * 1000).toISOString().replace('.000Z', 'Z');

/** Report failures (one a second) until the login is locked; the locking decision. */
function lockOut(p, max = 200) {
  for (let i = 0; i < max; i++) {
    const d = p.decide(failure(at(i)));
    if (d.outcome === 'lock') return d;
  }
  assert.fail(`no lock after ${max} failures`);
}

test('module-level load, decide, check and describe use one default instance', () => {
  const info = portcullis.load(files);
  assert.equal(info.name, 'portcullis-default');
  assert.deepEqual(portcullis.describe(), info);
  const d = portcullis.decide(LOGIN);
  assert.equal(d.outcome, 'allow');
  assert.deepEqual(d.reasons, ['login permitted']);
  const report = portcullis.check();
  assert.equal(report.ok, true);
  assert.equal(report.passed, info.caseCount);
  assert.deepEqual(portcullis.loadDir(BUNDLE), info);
});

test('a decision keeps every field the engine wrote', () => {
  const p = new Portcullis();
  p.loadDir(BUNDLE);
  const text = p.decideJson(JSON.stringify(LOGIN));
  assert.deepEqual(p.decide(LOGIN), JSON.parse(text));
  for (const field of ['outcome', 'allowed', 'policies', 'reasons', 'escalation', 'retry_after', 'pathway', 'audit']) {
    assert.ok(field in p.decide(LOGIN), field);
  }
  // a lock names its policies and reasons; escalation and retry-after are kept as written
  const locked = lockOut(p);
  assert.equal(locked.outcome, 'lock');
  assert.equal(locked.allowed, false);
  assert.ok(locked.policies.length > 0 && locked.reasons.length > 0);
  assert.ok(locked.escalation === null || typeof locked.escalation === 'string');
  assert.ok(locked.retry_after === null || Number.isInteger(locked.retry_after));
  assert.equal(locked.audit.outcome, 'lock');
});

test('a refused bundle is a PortcullisError with located problems; the old bundle stays', () => {
  const p = new Portcullis();
  const before = p.loadDir(BUNDLE);
  const broken = files.map(([n, t]) => [n, n === 'access.cedar' ? `${t}\npermit (principal, action, resource) when { context.nope };` : t]);
  assert.throws(
    () => p.load(broken),
    (e) => {
      assert.ok(e instanceof PortcullisError);
      assert.ok(e instanceof Error);
      assert.equal(e.name, 'PortcullisError');
      assert.equal(e.kind, 'refused');
      assert.ok(e.problems.length > 0);
      const pr = e.problems[0];
      assert.equal(typeof pr.kind, 'string');
      assert.match(e.message, new RegExp(pr.message.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
      assert.equal(pr.location?.file, 'access.cedar');
      assert.ok(pr.location.line > 0);
      return true;
    },
  );
  assert.deepEqual(p.describe(), before);
  assert.equal(p.decide(LOGIN).outcome, 'allow');
});

test('bundle files may be pairs, a Map or an object', () => {
  const a = new Portcullis().load(files);
  assert.deepEqual(new Portcullis().load(new Map(files)), a);
  assert.deepEqual(new Portcullis().load(Object.fromEntries(files)), a);
  assert.throws(() => new Portcullis().load(42), PortcullisError);
});

test('without a bundle: decide fails closed, check throws no-bundle', () => {
  const p = new Portcullis();
  assert.equal(p.describe(), null);
  const d = p.decide(LOGIN);
  assert.equal(d.outcome, 'deny');
  assert.equal(d.allowed, false);
  assert.equal(d.error.kind, 'no-bundle');
  assert.throws(() => p.check(), (e) => e instanceof PortcullisError && e.kind === 'no-bundle');
  assert.throws(() => p.casePlan(), PortcullisError);
});

test('a malformed request is a deny naming the field', () => {
  const p = new Portcullis();
  p.loadDir(BUNDLE);
  const d = p.decide({ ...LOGIN, action: 'logon' });
  assert.equal(d.outcome, 'deny');
  assert.equal(d.error.kind, 'invalid-request');
  assert.equal(d.error.field, 'action');
  assert.equal(p.decide('{not json').error.kind, 'invalid-request');
});

test('a failing store makes the engine fail closed, and the instance keeps working', () => {
  let broken = true;
  const mem = new MemoryStore();
  const p = new Portcullis({
    store: {
      get(keys) {
        if (broken) throw new Error('redis unreachable');
        return mem.get(keys);
      },
      compareAndSet: (w) => mem.compareAndSet(w),
    },
  });
  p.loadDir(BUNDLE);
  const d = p.decide(LOGIN);
  assert.equal(d.outcome, 'deny');
  assert.equal(d.error.kind, 'store');
  assert.match(d.error.message, /redis unreachable/);
  broken = false;
  assert.equal(p.decide(LOGIN).outcome, 'allow');
});

test('a store answering out of shape is a store failure, not a crash', () => {
  const shapes = [
    { get: () => 'nope', compareAndSet: () => [] },
    { get: (k) => k.map(() => ({ key: 'other', version: 0 })), compareAndSet: () => [] },
    { get: (k) => k.map((key) => ({ key, value: 5, version: 1 })), compareAndSet: () => [] },
    { get: (k) => k.map((key) => ({ key, version: -1 })), compareAndSet: () => [] },
    { get: () => Promise.resolve([]), compareAndSet: () => [] },
    { get: () => { throw 'a string'; }, compareAndSet: () => [] },
  ];
  for (const store of shapes) {
    const p = new Portcullis({ store });
    p.loadDir(BUNDLE);
    const d = p.decide(LOGIN);
    assert.equal(d.outcome, 'deny');
    assert.equal(d.error.kind, 'store', JSON.stringify(d.error));
  }
  // a compare-and-set that fails: the failure event must not count as allowed silently
  const mem = new MemoryStore();
  const p = new Portcullis({ store: { get: (k) => mem.get(k), compareAndSet: () => { throw new Error('cas down'); } } });
  p.loadDir(BUNDLE);
  const d = p.decide(failure('2026-11-22T10:00:00Z'));
  assert.equal(d.outcome, 'deny');
  assert.equal(d.error.kind, 'store');
});

test('plain-number versions and {written}/{conflict} results are accepted from a store', () => {
  const map = new Map();
  let next = 0;
  const store = {
    get: (keys) => keys.map((key) => (map.has(key) ? { key, value: map.get(key)[0], version: map.get(key)[1] } : { key, value: null, version: 0 })),
    compareAndSet: (writes) =>
      writes.map((w) => {
        const cur = map.get(w.key)?.[1] ?? 0;
        if (BigInt(cur) !== w.expectedVersion) return { conflict: { key: w.key, value: map.get(w.key)?.[0] ?? null, version: cur } };
        if (w.value === undefined) { map.delete(w.key); return { written: 0 }; }
        map.set(w.key, [w.value, ++next]);
        return { written: next };
      }),
  };
  const p = new Portcullis({ store });
  const q = new Portcullis();
  p.loadDir(BUNDLE);
  q.loadDir(BUNDLE);
  for (let i = 0; i < 30; i++) {
    const r = failure(at(i));
    assert.deepEqual(p.decide(r), q.decide(r));
  }
  assert.ok(map.size > 0, 'the engine wrote state through the store');
});

test('a conflicting write is retried by the engine', () => {
  // Another writer gets in first on the first compare-and-set: the engine
  // sees a conflict (with the current entry) and retries.
  const mem = new MemoryStore();
  let cas = 0;
  let conflicts = 0;
  const store = {
    get: (keys) => mem.get(keys),
    compareAndSet(writes) {
      cas += 1;
      if (cas === 1) {
        for (const w of writes) {
          if (w.value !== undefined) mem.compareAndSet([{ key: w.key, value: w.value, expectedVersion: mem.get([w.key])[0].version }]);
        }
      }
      const out = mem.compareAndSet(writes);
      conflicts += out.filter((r) => r.tag === 'conflict').length;
      return out;
    },
  };
  const p = new Portcullis({ store });
  p.loadDir(BUNDLE);
  const d = p.decide(failure(at(0)));
  assert.ok(conflicts > 0, 'the race did not happen');
  assert.ok(cas >= 2, 'the engine did not retry after the conflict');
  assert.equal(d.error, undefined, JSON.stringify(d.error));
});

test('MemoryStore: compare-and-set per key, versions only grow across deletes', () => {
  const s = new MemoryStore();
  const [w1] = s.compareAndSet([{ key: 'a', value: '1', expectedVersion: 0n }]);
  assert.equal(w1.tag, 'written');
  const [stale] = s.compareAndSet([{ key: 'a', value: '2', expectedVersion: 0n }]);
  assert.deepEqual(stale, { tag: 'conflict', val: { key: 'a', value: '1', version: w1.val } });
  const [del] = s.compareAndSet([{ key: 'a', value: undefined, expectedVersion: w1.val }]);
  assert.deepEqual(del, { tag: 'written', val: 0n });
  assert.deepEqual(s.get(['a']), [{ key: 'a', value: undefined, version: 0n }]);
  const [w2] = s.compareAndSet([{ key: 'a', value: '3', expectedVersion: 0n }]);
  assert.ok(w2.val > w1.val, 'a re-created key never repeats a version');
  const rs = s.compareAndSet([
    { key: 'b', value: 'x', expectedVersion: 5n },
    { key: 'c', value: 'y', expectedVersion: 0n },
  ]);
  assert.equal(rs[0].tag, 'conflict');
  assert.equal(rs[1].tag, 'written', 'a conflict on one write does not undo the others');
  assert.equal(s.size, 2);
});

test('instances are isolated: state in one store never reaches another', () => {
  const a = new Portcullis();
  const b = new Portcullis();
  a.loadDir(BUNDLE);
  b.loadDir(BUNDLE);
  lockOut(a);
  assert.equal(b.decide(LOGIN).outcome, 'allow');
  assert.ok(a.store.size > 0);
  assert.equal(b.store.size, 0);
});

test('decideBatch carries state like sequential decides', () => {
  const reqs = [];
  for (let i = 0; i < 30; i++) reqs.push(failure(at(i)));
  reqs.push({ ...LOGIN, now: at(31) });
  const a = new Portcullis();
  const b = new Portcullis();
  a.loadDir(BUNDLE);
  b.loadDir(BUNDLE);
  assert.deepEqual(a.decideBatch(reqs), reqs.map((r) => b.decide(r)));
});

test('readBundleDir keeps bundle files only, hidden ones skipped, sorted with /', () => {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-'));
  mkdirSync(join(dir, 'tests/sub'), { recursive: true });
  mkdirSync(join(dir, '.git'));
  writeFileSync(join(dir, 'portcullis.toml'), 'a');
  writeFileSync(join(dir, 'README.md'), 'no');
  writeFileSync(join(dir, '.hidden.cedar'), 'no');
  writeFileSync(join(dir, '.git/x.json'), 'no');
  writeFileSync(join(dir, 'tests/sub/c.yml'), 'c');
  writeFileSync(join(dir, 'tests/b.yaml'), 'b');
  writeFileSync(join(dir, 'a.cedar'), 'p');
  assert.deepEqual(readBundleDir(dir), [
    ['a.cedar', 'p'],
    ['portcullis.toml', 'a'],
    ['tests/b.yaml', 'b'],
    ['tests/sub/c.yml', 'c'],
  ]);
  assert.throws(() => readBundleDir(join(dir, 'absent')), PortcullisError);
});

test('a guest trap is recovered: a fail-closed deny, then a fresh instance with the same bundle and store', () => {
  let trap = false;
  const mem = new MemoryStore();
  const p = new Portcullis({
    // Unguarded store (tests only): its Error unwinds through the guest's
    // frames, as a trap does, and leaves that instance unusable.
    [Symbol.for('portcullis.test.rawStore')]: true,
    store: {
      get(keys) {
        if (trap) throw new Error('boom');
        return mem.get(keys);
      },
      compareAndSet: (w) => mem.compareAndSet(w),
    },
  });
  const info = p.loadDir(BUNDLE);
  trap = true;
  const d = p.decide(LOGIN);
  assert.equal(d.outcome, 'deny');
  assert.equal(d.allowed, false);
  assert.equal(d.error.kind, 'engine-fault');
  assert.match(d.error.message, /guest trapped in decide: boom/);
  assert.equal(d.audit.request_digest.length, 64);
  trap = false;
  assert.deepEqual(p.describe(), info);
  assert.equal(p.decide(LOGIN).outcome, 'allow');
});

test('every runtime export is declared in index.d.ts', () => {
  const dts = readFileSync(join(PKG, 'src/index.d.ts'), 'utf8');
  for (const name of Object.keys(portcullis)) {
    assert.match(dts, new RegExp(`export declare (const|function|class) ${name}\\b`), name);
  }
});
