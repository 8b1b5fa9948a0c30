// The page's store (src/engine.js MemoryStore) keeps the contract of
// engine/src/store.rs MemoryStore: batched get with versions, per-key
// compare-and-set, independent writes, versions that only grow.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryStore } from '../src/engine.js';

const w = (key, value, expectedVersion) => ({ key, value, expectedVersion: BigInt(expectedVersion) });

test('compare-and-set applies only at the expected version, and writes are independent', () => {
  const s = new MemoryStore();
  const [r1] = s.compareAndSet([w('a', '1', 0)]);
  assert.equal(r1.tag, 'written');
  const v1 = r1.val;
  assert.ok(v1 > 0n);
  // a stale writer that still thinks `a` is absent loses and sees the value
  const r = s.compareAndSet([w('a', '2', 0), w('b', 'x', 0)]);
  assert.deepEqual(r[0], { tag: 'conflict', val: { key: 'a', value: '1', version: v1 } });
  assert.equal(r[1].tag, 'written', 'writes are independent');
  assert.deepEqual(s.get(['a', 'zz']), [
    { key: 'a', value: '1', version: v1 },
    { key: 'zz', value: undefined, version: 0n },
  ]);
  assert.equal(s.size, 2);
});

test('a deleted and re-created key never repeats a version', () => {
  const s = new MemoryStore();
  const v1 = s.compareAndSet([w('a', '1', 0)])[0].val;
  assert.deepEqual(s.compareAndSet([w('a', undefined, v1)]), [{ tag: 'written', val: 0n }]);
  assert.equal(s.get(['a'])[0].version, 0n);
  const again = s.compareAndSet([w('a', '3', 0)])[0];
  assert.equal(again.tag, 'written');
  assert.ok(again.val > v1);
  // deleting at a stale version is a conflict that shows the current entry
  assert.deepEqual(s.compareAndSet([w('a', undefined, v1)]), [{ tag: 'conflict', val: { key: 'a', value: '3', version: again.val } }]);
});
