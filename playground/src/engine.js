// The guest component in the browser: the same portcullis_guest.wasm every
// host runs, transpiled by jco at build time (build/gen). No decision logic
// lives here: this file moves JSON text and store entries across the
// component boundary, as bindings/node/src/index.js does for Node.

import * as cli from '@bytecodealliance/preview2-shim/cli';
import * as clocks from '@bytecodealliance/preview2-shim/clocks';
import * as io from '@bytecodealliance/preview2-shim/io';
import * as random from '@bytecodealliance/preview2-shim/random';
import { instantiate } from '../build/gen/portcullis.js';

// ---------------------------------------------------------------- store

const absent = (key) => ({ key, value: undefined, version: 0n });

/**
 * State in page memory, exactly as engine/src/store.rs MemoryStore: a
 * batched get answers every key with its version (0: absent); each write
 * of a batched compare-and-set applies only at its expected version,
 * independently of the others, and answers the current entry on conflict.
 * Versions only grow, across deletes too (no ABA).
 */
export class MemoryStore {
  #map = new Map();
  #next = 0n;

  get(keys) {
    return keys.map((key) => this.#entry(key));
  }

  compareAndSet(writes) {
    return writes.map((w) => {
      const cur = this.#map.get(w.key);
      const version = cur ? cur.version : 0n;
      if (version !== BigInt(w.expectedVersion)) return { tag: 'conflict', val: this.#entry(w.key) };
      if (w.value === undefined || w.value === null) {
        this.#map.delete(w.key);
        return { tag: 'written', val: 0n };
      }
      this.#next += 1n;
      this.#map.set(w.key, { value: w.value, version: this.#next });
      return { tag: 'written', val: this.#next };
    });
  }

  #entry(key) {
    const e = this.#map.get(key);
    return e ? { key, value: e.value, version: e.version } : absent(key);
  }

  /** Number of keys held. */
  get size() {
    return this.#map.size;
  }
}

// ---------------------------------------------------------------- component

// Core modules: fetched and compiled once (compileStreaming when the server
// says application/wasm), shared by every instance.
const compiled = new Map();
async function compile(path) {
  const url = new URL(path, import.meta.url);
  const res = await fetch(url);
  if (!res.ok) throw new Error(`cannot fetch ${url.pathname}: HTTP ${res.status}`);
  if (typeof WebAssembly.compileStreaming === 'function' && /^application\/wasm/.test(res.headers.get('content-type') ?? '')) {
    return WebAssembly.compileStreaming(res);
  }
  return WebAssembly.compile(await res.arrayBuffer());
}
export function coreModule(path) {
  let m = compiled.get(path);
  if (!m) {
    const early = globalThis.__portcullisEarly?.[path];
    m = early ? early.catch(() => compile(path)) : compile(path);
    compiled.set(path, m);
  }
  return m;
}

/** Start fetching and compiling the core modules before anything asks for them. */
export function prefetch() {
  for (const p of ['portcullis.core.wasm', 'portcullis.core2.wasm', 'portcullis.core3.wasm', 'portcullis.core4.wasm']) {
    coreModule(p).catch(() => {});
  }
}

// The guest links a few WASI interfaces because Rust std does; it gets no
// environment, no arguments and no way to end the page.
const environment = { getEnvironment: () => [], getArguments: () => [], initialCwd: () => undefined };
const exit = {
  exit() {
    throw new Error('the guest asked to exit');
  },
  exitWithCode() {
    throw new Error('the guest asked to exit');
  },
};

function message(e) {
  return e instanceof Error ? e.message : String(e);
}

// A store that throws becomes a WIT `err` (the engine fails closed and names
// it), never an exception unwinding through the guest's frames.
function storeImport(holder) {
  return {
    get(keys) {
      try {
        return holder.store.get(keys);
      } catch (e) {
        throw { payload: `store get failed: ${message(e)}` };
      }
    },
    compareAndSet(writes) {
      try {
        return holder.store.compareAndSet(writes);
      } catch (e) {
        throw { payload: `store compare-and-set failed: ${message(e)}` };
      }
    },
  };
}

function imports(holder) {
  return {
    'portcullis:engine/store': storeImport(holder),
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
}

async function instantiateGuest(holder) {
  const root = await instantiate(coreModule, imports(holder));
  return root.engine ?? root['portcullis:engine/engine@0.1.0'];
}

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

/**
 * One guest instance. Its store can be swapped (a scenario runs from empty
 * state, like `portcullis replay`). After a trap the instance is rebuilt and
 * the last accepted bundle reloaded before the next call.
 */
export class Engine {
  #holder = { store: new MemoryStore() };
  #guest = null;
  #files = null;
  #broken = false;

  static async create() {
    const e = new Engine();
    e.#guest = await instantiateGuest(e.#holder);
    return e;
  }

  /** Use a new empty store from now on. */
  resetState() {
    this.#holder.store = new MemoryStore();
  }

  get store() {
    return this.#holder.store;
  }

  async #ready() {
    if (!this.#broken) return;
    this.#guest = await instantiateGuest(this.#holder);
    this.#broken = false;
    if (this.#files) {
      try {
        this.#guest.load(this.#files);
      } catch {
        // accepted before; if refused now, decisions are `no-bundle` denies (fail closed)
      }
    }
  }

  #call(what, f) {
    try {
      return f(this.#guest);
    } catch (e) {
      if (e && Object.prototype.hasOwnProperty.call(e, 'payload')) throw e; // a WIT `err`, not a trap
      this.#broken = true;
      const err = new Error(`guest trapped in ${what}: ${message(e)}`);
      err.trap = true;
      throw err;
    }
  }

  /**
   * Parse, validate strictly and install a bundle ([name, text] pairs).
   * @returns {{ok: true, info} | {ok: false, problems: Array<{kind, message, location?}>}}
   */
  async load(files) {
    await this.#ready();
    try {
      const info = this.#call('load', (g) => g.load(files));
      this.#files = files;
      return { ok: true, info: bundleInfo(info) };
    } catch (e) {
      if (Array.isArray(e?.payload)) return { ok: false, problems: e.payload.map(problem) };
      return { ok: false, problems: [{ kind: 'engine-fault', message: message(e) }] };
    }
  }

  /** Decide each request (JSON text) in order, state carried between them. */
  async decideBatch(texts) {
    await this.#ready();
    try {
      return this.#call('decide-batch', (g) => g.decideBatch(texts)).map((d) => JSON.parse(d));
    } catch (e) {
      return texts.map(() => fault(message(e)));
    }
  }

  /** The bundle's own cases, run inside the guest on a fresh store per case. */
  async runCases() {
    await this.#ready();
    return JSON.parse(this.#result('run-cases', (g) => g.runCases()));
  }

  /** Every case expanded into its requests: [{file, name, steps: [{step, request, expect?}]}]. */
  async casePlan() {
    await this.#ready();
    return JSON.parse(this.#result('case-plan', (g) => g.casePlan()));
  }

  #result(what, f) {
    try {
      return this.#call(what, f);
    } catch (e) {
      throw new Error(typeof e?.payload === 'string' ? e.payload : message(e));
    }
  }
}

// The fail-closed deny the engine writes for a fault (Decision::fault), for
// a guest that trapped.
function fault(msg) {
  return {
    outcome: 'deny',
    allowed: false,
    policies: [],
    reasons: [`error: ${msg}`],
    escalation: null,
    retry_after: null,
    pathway: 'authentic',
    error: { kind: 'engine-fault', message: msg },
  };
}
