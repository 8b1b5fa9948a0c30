// Types for the portcullis Node binding (src/index.js). The shapes follow
// wit/portcullis.wit and the decision JSON the engine writes.

/** Graduated outcomes, least severe first. */
export type Outcome = 'allow' | 'redact' | 'challenge' | 'throttle' | 'deny' | 'lock';
export declare const OUTCOMES: readonly Outcome[];
export declare const BUNDLE_EXTENSIONS: readonly string[];
/** Largest request document, in bytes (a larger one is a deny naming the limit). */
export declare const MAX_REQUEST_BYTES: number;
/** Largest bundle (names and texts together), in bytes (a larger one is refused). */
export declare const MAX_BUNDLE_BYTES: number;

/** The request contract (README "The request format"); JSON text is accepted too. */
export interface Request {
  principal?: { type: string; id: string };
  action?: string;
  resource?: { type: string; id: string };
  context?: Record<string, unknown>;
  body?: string;
  body_base64?: string;
  now?: string;
  event?: 'auth_failure' | 'auth_success';
  [field: string]: unknown;
}

/** The fault that forced a deny. */
export interface DecisionError {
  /** `invalid-request`, `no-bundle`, `store`, `evaluation`, `engine-fault`. */
  kind: string;
  message: string;
  /** The request field at fault, for `invalid-request`. */
  field?: string;
}

export interface AuditRecord {
  time: string;
  request_digest: string;
  principal: string;
  action: string;
  resource: string;
  event?: string;
  outcome: Outcome;
  policies: string[];
  reasons: string[];
  pathway: string;
  facts: unknown;
  bundle: string;
  engine: string;
  error?: string;
  [field: string]: unknown;
}

/** A decision exactly as the engine wrote it (nothing dropped). */
export interface Decision {
  outcome: Outcome;
  /** True for `allow` and `redact`. */
  allowed: boolean;
  /** Determining policy ids, sorted. */
  policies: string[];
  reasons: string[];
  escalation: string | null;
  /** Seconds to wait before retrying. */
  retry_after: number | null;
  /** `authentic` or `synthetic`. */
  pathway: string;
  error?: DecisionError;
  audit: AuditRecord;
  [field: string]: unknown;
}

export interface Location {
  file: string;
  line: number;
  column: number;
  snippet: string;
}

export interface BundleProblem {
  /** `manifest`, `schema`, `policy-parse`, `policy-validation`, `entities`, `case-file`, `missing-file`, `limit`. */
  kind: string;
  message: string;
  location?: Location;
}

export interface BundleInfo {
  name: string;
  version: string;
  namespace: string;
  /** SHA-256 over every file (name and text), lowercase hex. */
  hash: string;
  policyIds: string[];
  caseCount: number;
}

/** Bundle files: [name, text] pairs, a Map, or an object of name -> text. */
export type BundleFiles =
  | Array<[string, string]>
  | Array<{ name: string; text: string }>
  | Map<string, string>
  | Record<string, string>;

export interface CaseFailure {
  step: number;
  message: string;
}
export interface CaseResult {
  file: string;
  name: string;
  passed: boolean;
  failures: CaseFailure[];
}
export interface CaseReport {
  passed: number;
  failed: number;
  /** True when no case failed. */
  ok: boolean;
  cases: CaseResult[];
}

export interface PlannedStep {
  step: number;
  /** Request JSON text to decide. */
  request: string;
  expect?: Record<string, unknown>;
}
export interface PlannedCase {
  file: string;
  name: string;
  steps: PlannedStep[];
}

// ---------------------------------------------------------------- store

/** One key as read: version 0 means absent (and value undefined). */
export interface StoreEntry {
  key: string;
  value?: string | null;
  version: bigint | number;
}
/** One conditional write: applied only if the key is still at expectedVersion (0: absent); no value deletes. */
export interface StoreWrite {
  key: string;
  value?: string;
  expectedVersion: bigint;
}
export type WriteResult =
  | { tag: 'written'; val: bigint | number }
  | { tag: 'conflict'; val: StoreEntry }
  | { written: bigint | number }
  | { conflict: StoreEntry };

/**
 * Key-value state behind the engine (lockout counters, token buckets, JIT
 * grants). Synchronous; versions only grow, across deletes too. A thrown
 * error becomes a store failure: the engine fails closed and says so.
 */
export interface Store {
  get(keys: string[]): StoreEntry[];
  compareAndSet(writes: StoreWrite[]): WriteResult[];
}

/** State in process memory (the default). */
export declare class MemoryStore implements Store {
  get(keys: string[]): Array<{ key: string; value?: string; version: bigint }>;
  compareAndSet(writes: StoreWrite[]): Array<{ tag: 'written'; val: bigint } | { tag: 'conflict'; val: { key: string; value?: string; version: bigint } }>;
  readonly size: number;
  clear(): void;
}

// ---------------------------------------------------------------- errors

export declare class PortcullisError extends Error {
  constructor(message: string, options?: { kind?: string; problems?: BundleProblem[]; cause?: unknown });
  name: 'PortcullisError';
  /** `refused` (bundle problems), `no-bundle`, `guest-trap`, `error`. */
  kind: string;
  /** For a refused bundle: what is wrong and where. */
  problems: BundleProblem[];
}

// ---------------------------------------------------------------- engine

export interface Options {
  /** Defaults to a new MemoryStore. */
  store?: Store;
}

/** One guest instance with its own store. */
export declare class Portcullis {
  constructor(options?: Options);
  readonly store: Store;
  /** Install a bundle atomically; throws PortcullisError (kind `refused`, `.problems`). */
  load(bundleFiles: BundleFiles): BundleInfo;
  loadDir(dir: string | URL): BundleInfo;
  /** Always a decision; faults are a `deny` whose `error` names the fault. */
  decide(request: Request | string): Decision;
  decideJson(request: string): string;
  decideBatch(requests: Array<Request | string>): Decision[];
  /** Run the bundle's own cases inside the guest. */
  check(): CaseReport;
  casePlan(): PlannedCase[];
  checkDecision(expect: Record<string, unknown> | string, decision: Decision | string): string[];
  describe(): BundleInfo | null;
}

export declare function create(options?: Options): Portcullis;
export declare function defaultInstance(): Portcullis;
/** Read a bundle directory into (name, text) pairs as the Rust host does. */
export declare function readBundleDir(dir: string | URL): Array<[string, string]>;

// The default instance (in-memory store).
export declare function load(bundleFiles: BundleFiles): BundleInfo;
export declare function loadDir(dir: string | URL): BundleInfo;
export declare function decide(request: Request | string): Decision;
export declare function decideBatch(requests: Array<Request | string>): Decision[];
export declare function check(): CaseReport;
export declare function describe(): BundleInfo | null;
