// Scenarios in the URL fragment and bundles as `portcullis pack` archives.
// Nothing leaves the browser: the fragment is never sent to a server, and
// the archive is a download made from page memory.

// ------------------------------------------------------------ fragment

function toBase64Url(bytes) {
  let bin = '';
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function fromBase64Url(text) {
  const b64 = text.replace(/-/g, '+').replace(/_/g, '/');
  const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

async function pipe(bytes, stream) {
  const out = new Response(new Blob([bytes]).stream().pipeThrough(stream));
  return new Uint8Array(await out.arrayBuffer());
}

/** Largest decompressed scenario accepted from a fragment. */
const MAX_SCENARIO_BYTES = 32 * 1024 * 1024;

/**
 * A scenario as a fragment: `s=` + base64url(deflate-raw(JSON)). The
 * scenario names the default bundle it was made against (`base`, its hash)
 * and carries only the files that differ from it.
 */
export async function encodeScenario(scenario) {
  const json = new TextEncoder().encode(JSON.stringify(scenario));
  return `s=${toBase64Url(await pipe(json, new CompressionStream('deflate-raw')))}`;
}

/** The scenario in a fragment (`#s=…`), or null when there is none; throws on a damaged one. */
export async function decodeScenario(hash) {
  const m = /^#?s=([A-Za-z0-9_-]+)$/.exec(hash);
  if (!m) return null;
  let bytes;
  try {
    bytes = await pipe(fromBase64Url(m[1]), new DecompressionStream('deflate-raw'));
  } catch (e) {
    throw new Error(`the shared scenario in the URL is damaged (${e.message})`);
  }
  if (bytes.length > MAX_SCENARIO_BYTES) throw new Error('the shared scenario in the URL is too large');
  const s = JSON.parse(new TextDecoder().decode(bytes));
  if (s === null || typeof s !== 'object' || s.v !== 1) throw new Error('the shared scenario in the URL is not a version 1 scenario');
  if (typeof s.requests !== 'string') throw new Error('the shared scenario has no `requests` text');
  for (const [name, text] of Object.entries(s.files ?? {})) {
    if (typeof text !== 'string') throw new Error(`the shared scenario's file \`${name}\` is not text`);
  }
  if (s.deleted !== undefined && !Array.isArray(s.deleted)) throw new Error('the shared scenario\'s `deleted` is not a list');
  return s;
}

/** The files of `edited` that differ from `base` ({files: changed or added, deleted: names}). */
export function diffFiles(base, edited) {
  const files = {};
  for (const [name, text] of edited) if (base.get(name) !== text) files[name] = text;
  const deleted = [...base.keys()].filter((n) => !edited.has(n));
  return { files, deleted };
}

// ------------------------------------------------------------- archive

/** The format tag of packed bundles (engine/src/bundle.rs PACKED_FORMAT). */
export const PACKED_FORMAT = 'portcullis-bundle/1';

// Rust orders `String`s by their UTF-8 bytes, which is the order of code
// points (not of UTF-16 code units, as JavaScript's default sort).
function byCodePoint(a, b) {
  const x = Array.from(a);
  const y = Array.from(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

/**
 * The archive `portcullis pack` writes for these files (engine
 * bundle::Packed: format, name, version, hash, files by name in byte
 * order), as the same text: serde_json and JSON.stringify escape alike.
 * `info` is the guest's bundle info for exactly these files.
 */
export function packBundle(info, files) {
  const sorted = [...files].sort((a, b) => byCodePoint(a[0], b[0]));
  const doc = {
    format: PACKED_FORMAT,
    name: info.name,
    version: info.version,
    hash: info.hash,
    files: Object.fromEntries(sorted),
  };
  return `${JSON.stringify(doc)}\n`;
}
