// portcullis for Node: the same guest component as every other host
// (target/wasm32-wasip2/guest/portcullis_guest.wasm), transpiled by jco
// into ../gen at build time. No decision logic lives here: this file only
// moves JSON text and store entries across the component boundary.

import { readFileSync, readdirSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as cli from '@bytecodealliance/preview2-shim/cli';
import * as clocks from '@bytecodealliance/preview2-shim/clocks';
import * as io from '@bytecodealliance/preview2-shim/io';
import * as random from '@bytecodealliance/preview2-shim/random';

const GEN = new URL('../gen/', import.meta.url);

let generated;
try {
  generated = await import(new URL('portcullis.js', GEN).href);
} catch (e) {
  throw new Error(
    `portcullis: the transpiled component is missing (${fileURLToPath(GEN)}); ` +
      'build it with `make bindings-node` (or `npm run build` in bindings/node)',
    { cause: e },
  );
}

/** Extensions of the files a bundle holds; anything else is left out. */
export const BUNDLE_EXTENSIONS = Object.freeze(['toml', 'cedarschema', 'cedar', 'json', 'yaml', 'yml']);

/**
 * The engine's input limits (engine/src/limits.rs), checked here too so that
 * an oversized request or bundle is refused by name without being copied
 * into the guest.
 */
export const MAX_REQUEST_BYTES = 4 * 1024 * 1024;
export const MAX_BUNDLE_BYTES = 16 * 1024 * 1024;

/** Every outcome, least severe first. */
export const OUTCOMES = Object.freeze(['allow', 'redact', 'challenge', 'throttle', 'deny', 'lock']);

/**
 * An error from portcullis, carrying the engine's own message. A refused
 * bundle has `.problems` (the engine's bundle problems, with locations).
 */
export class PortcullisError extends Error {
  constructor(message, { kind = 'error', problems = [], cause } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'PortcullisError';
    /** `refused` (bundle problems), `no-bundle`, `guest-trap`, `store`, `error`. */
    this.kind = kind;
    /** @type {Array<{kind: string, message: string, location?: object}>} */
    this.problems = problems;
  }
}

// ---------------------------------------------------------------- stores

const ABSENT = (key) => ({ key, value: undefined, version: 0n });

/**
 * State kept in process memory, as in the CLI: versions only grow (across
 * deletes too, so a re-created key never repeats a version).
 */
export class MemoryStore {
  #map = new Map();
  #next = 0n;

  get(keys) {
    return keys.map((key) => {
      const e = this.#map.get(key);
      return e ? { key, value: e.value, version: e.version } : ABSENT(key);
    });
  }

  compareAndSet(writes) {
    return writes.map((w) => {
      const cur = this.#map.get(w.key);
      const version = cur ? cur.version : 0n;
      if (version !== BigInt(w.expectedVersion)) {
        return { tag: 'conflict', val: cur ? { key: w.key, value: cur.value, version } : ABSENT(w.key) };
      }
      if (w.value === undefined || w.value === null) {
        this.#map.delete(w.key);
        return { tag: 'written', val: 0n };
      }
      this.#next += 1n;
      this.#map.set(w.key, { value: w.value, version: this.#next });
      return { tag: 'written', val: this.#next };
    });
  }

  /** Number of keys held. */
  get size() {
    return this.#map.size;
  }

  /** Forget every key (versions keep growing). */
  clear() {
    this.#map.clear();
  }
}

function version(v, what) {
  if (typeof v === 'bigint') {
    if (v < 0n || v > 0xffffffffffffffffn) throw new Error(`${what}: version ${v} is out of u64 range`);
    return v;
  }
  if (Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  throw new Error(`${what}: version must be a non-negative integer or bigint, got ${String(v)}`);
}

function entry(e, what) {
  if (e === null || typeof e !== 'object' || typeof e.key !== 'string') {
    throw new Error(`${what}: expected {key, value, version}`);
  }
  const value = e.value === null || e.value === undefined ? undefined : e.value;
  if (value !== undefined && typeof value !== 'string') throw new Error(`${what}: value of \`${e.key}\` must be a string`);
  const v = version(e.version ?? 0n, what);
  return { key: e.key, value: v === 0n ? undefined : value, version: v };
}

function message(e) {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Adapt a caller's store to the component's `store` import. A store that
 * throws or answers out of shape becomes a WIT `err` (the engine then fails
 * closed and names it), never an exception crossing the guest's frames.
 * jco turns a thrown object with a `payload` into `err(payload)`.
 */
function storeImport(store) {
  return {
    get(keys) {
      let out;
      try {
        out = store.get(keys);
        if (out && typeof out.then === 'function') throw new Error('store.get returned a Promise; the store interface is synchronous');
        if (!Array.isArray(out) || out.length !== keys.length) throw new Error(`store.get answered ${Array.isArray(out) ? out.length : typeof out} entries for ${keys.length} keys`);
        return out.map((e, i) => {
          const x = entry(e, 'store.get');
          if (x.key !== keys[i]) throw new Error(`store.get answered key \`${x.key}\` where \`${keys[i]}\` was asked`);
          return x;
        });
      } catch (e) {
        throw { payload: `store get failed: ${message(e)}` };
      }
    },
    compareAndSet(writes) {
      try {
        const plain = writes.map((w) => ({ key: w.key, value: w.value, expectedVersion: w.expectedVersion }));
        const out = store.compareAndSet(plain);
        if (out && typeof out.then === 'function') throw new Error('store.compareAndSet returned a Promise; the store interface is synchronous');
        if (!Array.isArray(out) || out.length !== writes.length) throw new Error(`store.compareAndSet answered ${Array.isArray(out) ? out.length : typeof out} results for ${writes.length} writes`);
        return out.map((r) => {
          if (r && r.tag === 'written') return { tag: 'written', val: version(r.val, 'store.compareAndSet') };
          if (r && r.tag === 'conflict') return { tag: 'conflict', val: entry(r.val, 'store.compareAndSet') };
          if (r && 'written' in r) return { tag: 'written', val: version(r.written, 'store.compareAndSet') };
          if (r && 'conflict' in r) return { tag: 'conflict', val: entry(r.conflict, 'store.compareAndSet') };
          throw new Error('store.compareAndSet: each result must be {tag: "written", val} or {tag: "conflict", val: entry}');
        });
      } catch (e) {
        throw { payload: `store compare-and-set failed: ${message(e)}` };
      }
    },
  };
}

// ---------------------------------------------------------------- component

// The guest needs a few WASI interfaces because Rust std links them. It is
// given no environment, no arguments and no way to end the process.
const environment = { getEnvironment: () => [], getArguments: () => [], initialCwd: () => undefined };
const exit = {
  exit() {
    throw new Error('the guest asked to exit');
  },
  exitWithCode() {
    throw new Error('the guest asked to exit');
  },
};

function imports(store, raw) {
  const named = {
    'portcullis:engine/store': raw ? store : storeImport(store),
    'wasi:cli/environment': environment,
    'wasi:cli/exit': exit,
    'wasi:cli/stderr': cli.stderr,
    'wasi:cli/stdin': cli.stdin,
    'wasi:cli/stdout': cli.stdout,
    'wasi:cli/terminal-input': cli.terminalInput,
    'wasi:cli/terminal-output': cli.terminalOutput,
    'wasi:cli/terminal-stderr': cli.terminalStderr,
    'wasi:cli/terminal-stdin': cli.terminalStdin,
    'wasi:cli/terminal-stdout': cli.terminalStdout,
    'wasi:clocks/monotonic-clock': clocks.monotonicClock,
    'wasi:clocks/wall-clock': clocks.wallClock,
    'wasi:io/error': io.error,
    'wasi:io/poll': io.poll,
    'wasi:io/streams': io.streams,
    'wasi:random/insecure-seed': random.insecureSeed,
    'wasi:random/insecure': random.insecure,
    'wasi:random/random': random.random,
  };
  // jco names imports with or without their version depending on release;
  // answer both spellings.
  const out = {};
  for (const [name, value] of Object.entries(named)) {
    out[name] = value;
    out[`${name}@0.1.0`] = value;
    out[`${name}@0.2.6`] = value;
  }
  return out;
}

// Core modules are compiled once per process and shared by every instance.
const modules = new Map();
function coreModule(path) {
  let m = modules.get(path);
  if (!m) {
    m = new WebAssembly.Module(readFileSync(new URL(path, GEN)));
    modules.set(path, m);
  }
  return m;
}

// Tests only: hand the caller's store to the component unguarded, so that a
// thrown Error unwinds through the guest's frames as a trap would.
const RAW_STORE = Symbol.for('portcullis.test.rawStore');

function instantiate(store, raw = false) {
  const root = generated.instantiate(coreModule, imports(store, raw));
  return root.engine ?? root['portcullis:engine/engine@0.1.0'];
}

// ---------------------------------------------------------------- helpers

function bundleInfo(i) {
  return {
    name: i.name,
    version: i.version,
    namespace: i.namespace,
    hash: i.hash,
    policyIds: [...i.policyIds],
    caseCount: i.caseCount,
  };
}

function problem(p) {
  const out = { kind: p.kind, message: p.message };
  if (p.location) out.location = { ...p.location };
  return out;
}

function describeProblem(p) {
  const l = p.location;
  const where = l ? `${l.file}${l.line ? `:${l.line}` : ''}${l.column ? `:${l.column}` : ''}: ` : '';
  return `${where}${p.kind}: ${p.message}`;
}

function normaliseFiles(files) {
  let pairs;
  if (files instanceof Map) pairs = [...files.entries()];
  else if (Array.isArray(files)) pairs = files.map((f) => (Array.isArray(f) ? f : [f.name, f.text]));
  else if (files && typeof files === 'object') pairs = Object.entries(files);
  else throw new PortcullisError('bundle files must be [name, text] pairs, a Map or an object of name -> text');
  for (const [name, text] of pairs) {
    if (typeof name !== 'string' || typeof text !== 'string') {
      throw new PortcullisError('every bundle file must be a (name, text) pair of strings');
    }
  }
  return pairs;
}

/**
 * Read a bundle directory into (relative name, text) pairs, exactly as the
 * Rust host does: files ending in .toml .cedarschema .cedar .json .yaml .yml,
 * hidden files and folders skipped, names with `/`, sorted.
 */
export function readBundleDir(dir) {
  const root = dir instanceof URL ? fileURLToPath(dir) : String(dir);
  let st;
  try {
    st = statSync(root);
  } catch {
    st = null;
  }
  if (!st || !st.isDirectory()) throw new PortcullisError(`bundle \`${root}\` is not a directory`);
  const out = [];
  const walk = (abs, rel) => {
    for (const name of readdirSync(abs)) {
      if (name.startsWith('.')) continue;
      const p = join(abs, name);
      const r = rel ? `${rel}/${name}` : name;
      const s = statSync(p);
      if (s.isDirectory()) {
        walk(p, r);
        continue;
      }
      const dot = name.lastIndexOf('.');
      if (dot <= 0 || !BUNDLE_EXTENSIONS.includes(name.slice(dot + 1))) continue;
      out.push([r, readFileSync(p, 'utf8')]);
    }
  };
  walk(root, '');
  out.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return out;
}

function requestText(request) {
  if (typeof request === 'string') return request;
  if (request instanceof Uint8Array) return new TextDecoder().decode(request);
  return JSON.stringify(request);
}

// ---------------------------------------------------------------- the engine

/**
 * One guest instance with its own store. Calls are synchronous; an
 * instance is not shared across worker threads.
 */
export class Portcullis {
  #store;
  #engine;
  #files = null;
  #engineVersion = '';
  #raw;

  /**
   * @param {{store?: {get(keys: string[]): any[], compareAndSet(writes: any[]): any[]}}} [options]
   */
  constructor({ store, [RAW_STORE]: raw = false } = {}) {
    this.#store = store ?? new MemoryStore();
    this.#raw = raw;
    if (typeof this.#store.get !== 'function' || typeof this.#store.compareAndSet !== 'function') {
      throw new PortcullisError('a store needs get(keys) and compareAndSet(writes)');
    }
    this.#engine = instantiate(this.#store, this.#raw);
  }

  /** The store this instance reads and writes. */
  get store() {
    return this.#store;
  }

  // After a trap the instance must not be re-entered: build a new one on
  // the same store and reload the last accepted bundle.
  #call(what, f) {
    try {
      return f(this.#engine);
    } catch (e) {
      if (e && e.constructor && e.constructor.name === 'ComponentError') throw e;
      this.#recover();
      throw new PortcullisError(`guest trapped in ${what}: ${message(e)}`, { kind: 'guest-trap', cause: e });
    }
  }

  #recover() {
    this.#engine = instantiate(this.#store, this.#raw);
    if (this.#files) {
      try {
        this.#engine.load(this.#files);
      } catch {
        // The bundle was accepted before; if it is refused now, calls
        // answer `no-bundle` denies, which is fail closed.
      }
    }
  }

  /**
   * Parse, validate strictly and install a bundle. Atomic: on any problem
   * the previous bundle stays. Throws PortcullisError with `.problems`.
   * @returns the bundle info {name, version, namespace, hash, policyIds, caseCount}
   */
  load(bundleFiles) {
    const files = normaliseFiles(bundleFiles);
    const total = files.reduce((n, [name, text]) => n + Buffer.byteLength(name) + Buffer.byteLength(text), 0);
    if (total > MAX_BUNDLE_BYTES) {
      const problems = [{ kind: 'limit', message: `bundle is ${total} bytes, over the limit of ${MAX_BUNDLE_BYTES}` }];
      throw new PortcullisError(`bundle refused: ${describeProblem(problems[0])}`, { kind: 'refused', problems });
    }
    try {
      const info = this.#call('load', (g) => g.load(files));
      this.#files = files;
      return bundleInfo(info);
    } catch (e) {
      if (e instanceof PortcullisError) throw e;
      const problems = Array.isArray(e?.payload) ? e.payload.map(problem) : [];
      const summary = problems.length ? problems.map(describeProblem).join('; ') : message(e);
      throw new PortcullisError(`bundle refused: ${summary}`, { kind: 'refused', problems, cause: e });
    }
  }

  /** Read a bundle directory (see readBundleDir) and load it. */
  loadDir(dir) {
    return this.load(readBundleDir(dir));
  }

  /**
   * Decide on one request (an object or JSON text). Always a decision,
   * parsed, with every field the engine wrote; faults are a `deny` whose
   * `error` names the fault.
   */
  decide(request) {
    return JSON.parse(this.decideJson(requestText(request)));
  }

  /** decide() on JSON text, answering JSON text (no parse). */
  decideJson(request) {
    const size = Buffer.byteLength(request);
    if (size > MAX_REQUEST_BYTES) return JSON.stringify(this.#oversized(size, request));
    try {
      const d = this.#call('decide', (g) => g.decide(request));
      this.#noteEngine(d);
      return d;
    } catch (e) {
      return JSON.stringify(this.#fault(e, request));
    }
  }

  /** Decide many in order, state carried between them. */
  decideBatch(requests) {
    const texts = requests.map(requestText);
    const sizes = texts.map((t) => Buffer.byteLength(t));
    if (sizes.some((n) => n > MAX_REQUEST_BYTES)) {
      // Oversized ones are denied here; the rest cross, in order.
      const decided = this.decideBatch(texts.filter((_, i) => sizes[i] <= MAX_REQUEST_BYTES))[Symbol.iterator]();
      return texts.map((t, i) => (sizes[i] > MAX_REQUEST_BYTES ? this.#oversized(sizes[i], t) : decided.next().value));
    }
    try {
      return this.#call('decide-batch', (g) => g.decideBatch(texts)).map((d) => JSON.parse(d));
    } catch (e) {
      return texts.map((r) => this.#fault(e, r));
    }
  }

  /**
   * Run the bundle's own cases inside the guest (a fresh in-memory store
   * per case, never this instance's store).
   * @returns {{passed: number, failed: number, ok: boolean, cases: Array<{file, name, passed, failures}>}}
   */
  check() {
    const report = JSON.parse(this.#result('run-cases', (g) => g.runCases()));
    report.ok = report.failed === 0;
    return report;
  }

  /** Every case expanded into the requests to send: [{file, name, steps: [{step, request, expect?}]}]. */
  casePlan() {
    return JSON.parse(this.#result('case-plan', (g) => g.casePlan()));
  }

  /** The failures of a decision against an expectation (both objects or JSON text); empty when it holds. */
  checkDecision(expect, decision) {
    const e = typeof expect === 'string' ? expect : JSON.stringify(expect);
    const d = typeof decision === 'string' ? decision : JSON.stringify(decision);
    return this.#result('check-decision', (g) => g.checkDecision(e, d));
  }

  /** The loaded bundle's info, or null. */
  describe() {
    const i = this.#call('describe', (g) => g.describe());
    return i ? bundleInfo(i) : null;
  }

  #result(what, f) {
    try {
      return this.#call(what, f);
    } catch (e) {
      if (e instanceof PortcullisError) throw e;
      const msg = typeof e?.payload === 'string' ? e.payload : message(e);
      throw new PortcullisError(msg, { kind: /no bundle/.test(msg) ? 'no-bundle' : 'error', cause: e });
    }
  }

  #noteEngine(text) {
    if (this.#engineVersion) return;
    const m = /"engine":"([^"]*)"/.exec(text);
    if (m) this.#engineVersion = m[1];
  }

  // The deny for a request over the size limit, worded as the engine does.
  #oversized(size, request) {
    return this.#fault(new Error(`request is ${size} bytes, over the limit of ${MAX_REQUEST_BYTES}`), request, 'invalid-request');
  }

  // The same fail-closed deny the engine writes for a fault
  // (Decision::fault), for a guest that trapped.
  #fault(e, request, kind = 'engine-fault') {
    const msg = message(e);
    return {
      outcome: 'deny',
      allowed: false,
      policies: [],
      reasons: [`error: ${msg}`],
      escalation: null,
      retry_after: null,
      pathway: 'authentic',
      error: { kind, message: msg },
      audit: {
        time: '',
        request_digest: createHash('sha256').update(request).digest('hex'),
        principal: '',
        action: '',
        resource: '',
        outcome: 'deny',
        policies: [],
        reasons: [],
        pathway: 'authentic',
        facts: null,
        bundle: '',
        engine: this.#engineVersion,
        error: `${kind}: ${msg}`,
      },
    };
  }
}

/** A new instance: `create({store})`. */
export function create(options) {
  return new Portcullis(options);
}

// ---------------------------------------------------------------- default instance

let shared;
/** The module's default instance (in-memory store), made on first use. */
export function defaultInstance() {
  shared ??= new Portcullis();
  return shared;
}

/** Load a bundle into the default instance. */
export const load = (bundleFiles) => defaultInstance().load(bundleFiles);
/** Load a bundle directory into the default instance. */
export const loadDir = (dir) => defaultInstance().loadDir(dir);
/** Decide with the default instance. */
export const decide = (request) => defaultInstance().decide(request);
/** Decide many with the default instance. */
export const decideBatch = (requests) => defaultInstance().decideBatch(requests);
/** Run the default instance's bundle cases. */
export const check = () => defaultInstance().check();
/** The default instance's bundle info, or null. */
export const describe = () => defaultInstance().describe();
