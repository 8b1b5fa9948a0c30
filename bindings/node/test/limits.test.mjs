// Input limits in the Node host (issue 12): an oversized request or bundle
// is refused by name here, before it is copied into the guest; deep JSON
// and duplicate keys are refused by the engine. Node has no preemptive
// deadline (V8 has no epoch interruption); the guest module caps its own
// memory at 1 GiB (.cargo/config.toml), so a runaway allocation is a trap,
// then a fail-closed deny, not an unbounded process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Portcullis, PortcullisError, readBundleDir, MAX_REQUEST_BYTES, MAX_BUNDLE_BYTES } from '../src/index.js';
import { BUNDLE, LOGIN } from './helpers.mjs';

const files = readBundleDir(BUNDLE);
const withBody = (n) => JSON.stringify({ ...LOGIN, body: 'a'.repeat(n) });

test('a request over the size limit is denied naming the limit, alone or in a batch', () => {
  const p = new Portcullis();
  p.load(files);
  const over = withBody(MAX_REQUEST_BYTES);
  const d = p.decide(over);
  assert.equal(d.outcome, 'deny');
  assert.equal(d.error.kind, 'invalid-request');
  assert.match(d.error.message, new RegExp(`over the limit of ${MAX_REQUEST_BYTES}`));
  const out = p.decideBatch([over, LOGIN, over]);
  assert.deepEqual(out.map((d) => d.error?.kind ?? null), ['invalid-request', null, 'invalid-request']);
  assert.equal(out[1].outcome, 'allow');
  assert.equal(p.decide(withBody(MAX_REQUEST_BYTES - 1024)).error, undefined);
});

test('a bundle over the size limit is refused naming the limit; the old one stays', () => {
  const p = new Portcullis();
  const info = p.load(files);
  const huge = [...files, ['padding.cedar', 'x'.repeat(MAX_BUNDLE_BYTES + 1)]];
  assert.throws(
    () => p.load(huge),
    (e) => e instanceof PortcullisError && e.kind === 'refused' && e.problems[0].kind === 'limit' && /over the limit/.test(e.problems[0].message),
  );
  assert.deepEqual(p.describe(), info);
});

test('deep JSON and duplicate keys are refused by the engine, naming what', () => {
  const p = new Portcullis();
  p.load(files);
  const deep = JSON.stringify({ ...LOGIN, context: { record: { x: 0 } } }).replace('0', '['.repeat(100000) + ']'.repeat(100000));
  const d = p.decide(deep);
  assert.equal(d.outcome, 'deny');
  assert.match(d.error.message, /limit of 64 levels/);
  const dup = JSON.stringify(LOGIN).replace('"action":"login"', '"action":"login","action":"admin"');
  const e = p.decide(dup);
  assert.deepEqual([e.error.kind, e.error.field], ['invalid-request', 'action']);
});

// The memory section of a core module: [{min, max}] in 64 KiB pages.
function memories(bytes) {
  let i = 8;
  const leb = () => {
    let r = 0, shift = 0, b;
    do { b = bytes[i++]; r += (b & 0x7f) * 2 ** shift; shift += 7; } while (b & 0x80);
    return r;
  };
  const out = [];
  while (i < bytes.length) {
    const id = bytes[i++];
    const size = leb();
    const end = i + size;
    if (id === 5) {
      for (let n = leb(); n > 0; n--) {
        const flags = bytes[i++];
        const min = leb();
        out.push({ min, max: flags & 1 ? leb() : null });
      }
    }
    i = end;
  }
  return out;
}

test('the guest module caps its own memory at 1 GiB (V8 enforces it; Node sets no limit of its own)', () => {
  const core = readFileSync(new URL('../gen/portcullis.core.wasm', import.meta.url));
  const mems = memories(core);
  assert.ok(mems.length >= 1, 'the main module defines its memory');
  assert.equal(mems[0].max, 16384, `memory limits ${JSON.stringify(mems)}`);
});
