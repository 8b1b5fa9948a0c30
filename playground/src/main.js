// The portcullis playground: the bundle in editors, a request sequence, the
// guest's decisions, the bundle's own cases, examples, sharing and export.
// Every decision is made by the guest component (engine.js); this file is
// only the page.
import './style.css';
import { basicSetup, EditorView } from 'codemirror';
import { EditorState, Prec, StateEffect, StateField } from '@codemirror/state';
import { Decoration, keymap } from '@codemirror/view';
import { StreamLanguage } from '@codemirror/language';
import { json } from '@codemirror/lang-json';
import { yaml } from '@codemirror/lang-yaml';
import { toml } from '@codemirror/legacy-modes/mode/toml';
import { lintGutter, setDiagnostics } from '@codemirror/lint';
import { cedar, cedarSchema } from './cedar.js';
import { Engine, prefetch } from './engine.js';
import { decodeScenario, diffFiles, encodeScenario, packBundle } from './share.js';
import DEFAULT_BUNDLE from '../build/bundle.json';
import EXAMPLES from '../build/examples.json';

performance.mark('pg:script');
prefetch();

const $ = (sel) => document.querySelector(sel);
const BUNDLE_EXTENSIONS = ['toml', 'cedarschema', 'cedar', 'json', 'yaml', 'yml'];
const DEFAULT_FILES = new Map(DEFAULT_BUNDLE.files);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function notice(text, kind = 'info') {
  const n = $('#notice');
  n.textContent = text;
  n.dataset.kind = kind;
  n.hidden = false;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => (n.hidden = true), kind === 'error' ? 12000 : 6000);
}

// ------------------------------------------------------------ editors

const setProblemLines = StateEffect.define();
const problemLines = StateField.define({
  create: () => Decoration.none,
  update(deco, tr) {
    deco = deco.map(tr.changes);
    for (const e of tr.effects) if (e.is(setProblemLines)) deco = e.value;
    return deco;
  },
  provide: (f) => EditorView.decorations.from(f),
});

function languageFor(name) {
  const ext = name.slice(name.lastIndexOf('.') + 1);
  switch (ext) {
    case 'cedar':
      return cedar;
    case 'cedarschema':
      return cedarSchema;
    case 'toml':
      return StreamLanguage.define(toml);
    case 'json':
      return json();
    case 'yaml':
    case 'yml':
      return yaml();
    default:
      return [];
  }
}

const states = new Map(); // bundle file name -> EditorState
let currentFile = null;
let bundleView;
let requestView;

function fileState(name, text) {
  return EditorState.create({
    doc: text,
    extensions: [
      basicSetup,
      languageFor(name),
      lintGutter(),
      problemLines,
      EditorView.updateListener.of((u) => {
        if (u.view !== bundleView) return;
        states.set(currentFile, u.state);
        if (u.docChanged) {
          renderTabs();
          scheduleValidate();
        }
      }),
    ],
  });
}

function byCodePoint(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

function bundleFiles() {
  return [...states.entries()].map(([n, s]) => [n, s.doc.toString()]).sort((a, b) => byCodePoint(a[0], b[0]));
}

function setBundle(files, select) {
  states.clear();
  for (const [name, text] of files) states.set(name, fileState(name, text));
  const names = [...states.keys()];
  currentFile = names.includes(select) ? select : names.find((n) => n.endsWith('.cedar')) ?? names[0];
  bundleView.setState(states.get(currentFile));
  renderTabs();
}

function openFile(name, line, column) {
  if (!states.has(name)) return;
  if (name !== currentFile) {
    states.set(currentFile, bundleView.state);
    currentFile = name;
    bundleView.setState(states.get(name));
    renderTabs();
  }
  if (line) {
    const doc = bundleView.state.doc;
    const l = doc.line(Math.min(Math.max(line, 1), doc.lines));
    const pos = Math.min(l.from + Math.max((column || 1) - 1, 0), l.to);
    bundleView.dispatch({ selection: { anchor: pos }, effects: EditorView.scrollIntoView(pos, { y: 'center' }) });
    bundleView.focus();
  }
}

function renderTabs() {
  const tabs = $('#file-tabs');
  const problemFiles = new Set((refused ?? []).map((p) => p.location?.file).filter(Boolean));
  tabs.replaceChildren(
    ...[...states.keys()].sort(byCodePoint).map((name) => {
      const edited = DEFAULT_FILES.get(name) !== states.get(name).doc.toString();
      return el(
        'button',
        {
          class: ['tab', name === currentFile && 'current', edited && 'edited', problemFiles.has(name) && 'has-problem']
            .filter(Boolean)
            .join(' '),
          'data-file': name,
          title: edited ? `${name} (edited)` : name,
          onclick: () => openFile(name),
        },
        name,
      );
    }),
    el('button', { class: 'tab add', title: 'add a file to the bundle', onclick: addFile }, '+ file'),
    el('button', { class: 'tab remove', title: 'remove the open file from the bundle', onclick: removeFile }, '− file'),
  );
}

/** Why `name` cannot be a bundle file (the host reads only these), or null. */
function badName(name) {
  const dot = name.lastIndexOf('.');
  if (dot <= 0 || !BUNDLE_EXTENSIONS.includes(name.slice(dot + 1))) {
    return `\`${name}\`: a bundle file ends in .${BUNDLE_EXTENSIONS.join(', .')} (others are not part of a bundle)`;
  }
  if (name.split('/').some((p) => p === '' || p.startsWith('.'))) return `\`${name}\`: no empty, hidden or parent path parts`;
  return null;
}

function addFile() {
  const name = prompt(`New bundle file (a path ending in .${BUNDLE_EXTENSIONS.join(', .')}):`, 'extra.cedar');
  if (!name) return;
  const bad = badName(name);
  if (bad) {
    notice(bad, 'error');
    return;
  }
  if (states.has(name)) {
    openFile(name);
    return;
  }
  states.set(currentFile, bundleView.state);
  states.set(name, fileState(name, ''));
  openFile(name);
  scheduleValidate();
}

function removeFile() {
  if (!currentFile || !confirm(`Remove ${currentFile} from the bundle?`)) return;
  states.delete(currentFile);
  const next = [...states.keys()].sort(byCodePoint)[0];
  currentFile = next;
  if (next) bundleView.setState(states.get(next));
  renderTabs();
  scheduleValidate();
}

// ------------------------------------------------------------ problems

let refused = null; // the problems of the current files, or null when accepted
let accepted = null; // {info, files} of the last accepted bundle

function lineRange(doc, line, column) {
  const l = doc.line(Math.min(Math.max(line, 1), doc.lines));
  const from = Math.min(l.from + Math.max(column - 1, 0), l.to);
  let to = from;
  const text = doc.sliceString(from, l.to);
  const word = /^[A-Za-z0-9_.:@"-]+/.exec(text);
  to = word ? from + word[0].length : l.to;
  if (to === from) return { from: l.from, to: l.to, line: l };
  return { from, to, line: l };
}

function applyProblems(problems) {
  const byFile = new Map([...states.keys()].map((n) => [n, []]));
  for (const p of problems) {
    const f = p.location?.file;
    if (f && byFile.has(f)) byFile.get(f).push(p);
  }
  for (const [name, list] of byFile) {
    let state = name === currentFile ? bundleView.state : states.get(name);
    const doc = state.doc;
    const diagnostics = [];
    const lines = new Map();
    for (const p of list) {
      const line = p.location.line || 1;
      const r = lineRange(doc, line, p.location.column || 1);
      diagnostics.push({ from: r.from, to: r.to, severity: 'error', source: p.kind, message: `${p.kind}: ${p.message}` });
      lines.set(r.line.number, r.line.from);
    }
    const deco = Decoration.set(
      [...lines.entries()]
        .sort((a, b) => a[1] - b[1])
        .map(([n, from]) => Decoration.line({ class: 'cm-problem-line', attributes: { 'data-problem-line': String(n) } }).range(from)),
    );
    const spec = setDiagnostics(state, diagnostics);
    const effects = [...[spec.effects ?? []].flat(), setProblemLines.of(deco)];
    if (name === currentFile) bundleView.dispatch({ effects });
    else states.set(name, state.update({ effects }).state);
  }
  renderProblems(problems);
  renderTabs();
}

function renderProblems(problems) {
  const list = $('#problems');
  list.replaceChildren(
    ...problems.map((p) => {
      const l = p.location;
      const where = l ? `${l.file}${l.line ? `:${l.line}` : ''}${l.column ? `:${l.column}` : ''}` : '(bundle)';
      return el(
        'li',
        {
          class: 'problem',
          'data-file': l?.file,
          'data-line': l?.line,
          'data-column': l?.column,
          onclick: () => l && openFile(l.file, l.line, l.column),
        },
        el('span', { class: 'where', text: where }),
        ' ',
        el('span', { class: 'kind', text: p.kind }),
        ': ',
        el('span', { class: 'message', text: p.message }),
        l?.snippet ? el('pre', { class: 'snippet', text: l.snippet }) : null,
      );
    }),
  );
  list.hidden = problems.length === 0;
}

// ------------------------------------------------------------ bundle status

function renderStatus(state) {
  const s = $('#bundle-status');
  s.dataset.state = state;
  if (state === 'checking') {
    s.textContent = 'checking the bundle…';
  } else if (state === 'refused') {
    s.textContent = `bundle refused: ${refused.length} problem${refused.length === 1 ? '' : 's'}`;
  } else if (accepted) {
    const i = accepted.info;
    const edited = i.hash !== DEFAULT_BUNDLE.info.hash;
    s.textContent = `${i.name} ${i.version} · ${i.policyIds.length} policies · hash ${i.hash.slice(0, 12)}${edited ? ' · edited' : ''}`;
    s.title = `sha256 ${i.hash}`;
  }
}

let validateTimer = 0;
let generation = 0;

function scheduleValidate(delay = 350) {
  clearTimeout(validateTimer);
  renderStatus('checking');
  validateTimer = setTimeout(() => validate(), delay);
}

/** Load the editors' files into the guest; on acceptance, run the cases and the scenario again. */
async function validate({ rerun = true } = {}) {
  clearTimeout(validateTimer);
  const gen = ++generation;
  const files = bundleFiles();
  const r = await engine.load(files);
  if (gen !== generation) return r;
  if (r.ok) {
    if (!accepted) performance.mark('pg:bundle-loaded');
    accepted = { info: r.info, files };
    refused = null;
    applyProblems([]);
    renderStatus('accepted');
    if (rerun) {
      await runScenario();
      await runCases();
    }
  } else {
    refused = r.problems;
    applyProblems(r.problems);
    renderStatus('refused');
    renderStaleNote();
  }
  return r;
}

// ------------------------------------------------------------ requests

function formatRequests(requests) {
  return `[\n${requests.map((r) => `  ${JSON.stringify(r)}`).join(',\n')}\n]\n`;
}

/** The requests in the pane: one JSON object, a JSON array of them, or JSON lines. */
function parseRequests(text) {
  const trimmed = text.trim();
  if (!trimmed) return { error: { line: 1, message: 'no request: write a JSON object, an array of them, or one per line' } };
  let whole;
  try {
    whole = JSON.parse(trimmed);
  } catch (e) {
    whole = e;
  }
  if (!(whole instanceof Error)) {
    const list = Array.isArray(whole) ? whole : [whole];
    const bad = list.findIndex((r) => r === null || typeof r !== 'object' || Array.isArray(r));
    if (bad >= 0) return { error: { line: 1, message: `request ${bad + 1} is not a JSON object` } };
    if (list.length === 0) return { error: { line: 1, message: 'the array holds no request' } };
    return { requests: list };
  }
  if (trimmed.startsWith('[')) return { error: { line: jsonErrorLine(whole, text), message: whole.message } };
  const requests = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i].trim();
    if (!l || l.startsWith('#') || l.startsWith('//')) continue;
    try {
      const r = JSON.parse(l);
      if (r === null || typeof r !== 'object' || Array.isArray(r)) throw new Error('not a JSON object');
      requests.push(r);
    } catch (e) {
      return { error: { line: i + 1, message: `line ${i + 1}: ${e.message}` } };
    }
  }
  return { requests };
}

function jsonErrorLine(err, text) {
  const m = /line (\d+)/.exec(err.message) ?? null;
  if (m) return Number(m[1]);
  const p = /position (\d+)/.exec(err.message);
  return p ? text.slice(0, Number(p[1])).split('\n').length : 1;
}

let lastRun = null; // {requests, texts, decisions, bundleHash}
let currentExample = null;
let firstDecision = true;
let selected = 0;

async function runScenario() {
  const text = requestView.state.doc.toString();
  const parsed = parseRequests(text);
  const errBox = $('#request-error');
  if (parsed.error) {
    const doc = requestView.state.doc;
    const l = doc.line(Math.min(parsed.error.line, doc.lines));
    requestView.dispatch(setDiagnostics(requestView.state, [{ from: l.from, to: l.to, severity: 'error', message: parsed.error.message }]));
    errBox.textContent = parsed.error.message;
    errBox.hidden = false;
    return;
  }
  requestView.dispatch(setDiagnostics(requestView.state, []));
  errBox.hidden = true;
  engine.resetState(); // every run starts from empty state, like `portcullis replay`
  const texts = parsed.requests.map((r) => JSON.stringify(r));
  const t0 = performance.now();
  const decisions = await engine.decideBatch(texts);
  const ms = performance.now() - t0;
  lastRun = { requests: parsed.requests, texts, decisions, bundleHash: accepted?.info.hash ?? null, ms };
  const withFindings = decisions.findIndex((d) => d.findings?.length);
  selected = withFindings >= 0 ? withFindings : decisions.length - 1;
  renderDecisions();
  if (firstDecision) {
    firstDecision = false;
    performance.mark('pg:first-decision');
  }
  document.body.dataset.runs = String(Number(document.body.dataset.runs ?? 0) + 1);
}

// ------------------------------------------------------------ decisions

function timeOf(now) {
  return typeof now === 'string' ? now.replace(/^\d{4}-\d{2}-\d{2}T/, '') : '';
}

function requestSummary(r) {
  const what = r.event ?? r.action;
  const extra = [
    timeOf(r.now),
    r.context?.ip,
    r.context?.destination_region && `→ ${r.context.destination_region}`,
    r.context?.recipient,
    r.context?.legal_basis,
  ]
    .filter(Boolean)
    .join(' · ');
  return el(
    'span',
    {},
    el('b', { text: what }),
    ` ${r.principal?.id ?? ''}`,
    r.context?.synthetic ? el('span', { class: 'tag', text: 'synthetic claim' }) : null,
    r.body !== undefined || r.body_base64 !== undefined ? el('span', { class: 'tag', text: 'body' }) : null,
    extra ? el('div', { class: 'dim', text: extra }) : null,
  );
}

function list(items, cls) {
  return el('ul', { class: cls }, (items ?? []).map((x) => el('li', { text: x })));
}

function renderStaleNote() {
  const n = $('#decisions-note');
  if (refused && lastRun) {
    n.textContent = `The edited bundle is refused (${refused.length} problem${refused.length === 1 ? '' : 's'}); decisions below come from the last accepted bundle (hash ${lastRun.bundleHash?.slice(0, 12)}).`;
    n.hidden = false;
  } else {
    n.hidden = true;
  }
}

function renderDecisions() {
  const { requests, decisions, ms } = lastRun;
  const rows = decisions.map((d, i) =>
    el(
      'tr',
      {
        class: ['decision', i === selected && 'selected'].filter(Boolean).join(' '),
        'data-index': i,
        onclick: () => {
          selected = i;
          renderDecisions();
        },
      },
      el('td', { class: 'idx', text: String(i + 1) }),
      el('td', { class: 'req' }, requestSummary(requests[i])),
      el('td', { 'data-field': 'outcome' }, el('span', { class: `badge outcome-${d.outcome}`, text: d.outcome })),
      el('td', { 'data-field': 'pathway' }, el('span', { class: `pathway pathway-${d.pathway}`, text: d.pathway })),
      el('td', { 'data-field': 'policies' }, list(d.policies, 'ids')),
      el('td', { 'data-field': 'reasons' }, list(d.reasons, 'reasons')),
      el('td', { 'data-field': 'escalation', text: d.escalation ?? '' }),
      el('td', { 'data-field': 'retry_after', text: d.retry_after ?? '' }),
      el('td', { 'data-field': 'stage', text: d.stage && d.stage !== 'none' ? d.stage : '' }),
      el('td', { 'data-field': 'findings', text: (d.findings ?? []).map((f) => f.kind).join(', ') }),
    ),
  );
  const head = el(
    'tr',
    {},
    ['#', 'request', 'outcome', 'pathway', 'policies', 'reasons', 'escalation', 'retry after (s)', 'stage', 'DLP findings'].map((h) =>
      el('th', { text: h }),
    ),
  );
  const table = el('table', { id: 'decision-table' }, el('thead', {}, head), el('tbody', {}, rows));
  $('#decisions').replaceChildren(table);
  $('#decisions-meta').textContent =
    `${decisions.length} decision${decisions.length === 1 ? '' : 's'} from empty state in ${ms.toFixed(1)} ms (the guest, in this page)`;
  const sel = $('#decision-table tr.selected');
  if (sel && typeof sel.scrollIntoView === 'function') sel.scrollIntoView({ block: 'nearest' });
  renderDetail(requests[selected], decisions[selected], selected);
  renderStaleNote();
}

function bodyBytes(r) {
  if (typeof r.body === 'string') return new TextEncoder().encode(r.body);
  if (typeof r.body_base64 === 'string') {
    try {
      return Uint8Array.from(atob(r.body_base64), (c) => c.charCodeAt(0));
    } catch {
      return null;
    }
  }
  return null;
}

const MAX_BODY_SHOWN = 8192;

/** The body with each finding's [offset, offset + length) bytes marked. */
function renderBody(bytes, findings) {
  let text = true;
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    text = false;
  }
  const show = (from, to) => {
    const slice = bytes.subarray(from, Math.min(to, MAX_BODY_SHOWN));
    if (text) return new TextDecoder().decode(slice);
    return Array.from(slice, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '·')).join('');
  };
  const spans = [...findings].sort((a, b) => a.offset - b.offset);
  const out = [];
  let at = 0;
  for (const f of spans) {
    const from = Math.max(f.offset, at);
    const to = Math.min(f.offset + f.length, bytes.length);
    if (from >= MAX_BODY_SHOWN) break;
    if (from > at) out.push(show(at, from));
    if (to > from) {
      out.push(el('mark', { class: 'finding', 'data-kind': f.kind, 'data-offset': f.offset, 'data-length': f.length, title: `${f.kind} at byte ${f.offset}, ${f.length} bytes` }, show(from, to)));
    }
    at = Math.max(at, to);
  }
  if (at < Math.min(bytes.length, MAX_BODY_SHOWN)) out.push(show(at, bytes.length));
  const pre = el('pre', { class: `body ${text ? 'text' : 'binary'}` }, out);
  if (bytes.length > MAX_BODY_SHOWN) pre.append(el('span', { class: 'dim', text: `\n… ${bytes.length - MAX_BODY_SHOWN} more bytes` }));
  return pre;
}

function field(name, value) {
  if (value === undefined || value === null || value === '' || (Array.isArray(value) && value.length === 0)) return null;
  return [el('dt', { text: name }), el('dd', {}, value)];
}

// A few of the facts the engine derived (from the decision's audit record).
function provenanceFact(s) {
  if (!s || s.status === 'none') return null;
  return `${s.status}${s.failure ? ` (${s.failure})` : ''}${s.issuer ? `, issuer ${s.issuer}` : ''}${s.dataset ? `, dataset ${s.dataset}` : ''}`;
}
function lockoutFact(l) {
  if (!l) return null;
  const keys = ['account_ip', 'account', 'ip'].filter((k) => l[k] && (l[k].failures > 0 || l[k].stage !== 'none'));
  return keys.map((k) => `${k}: ${l[k].failures} failure${l[k].failures === 1 ? '' : 's'}${l[k].stage !== 'none' ? `, ${l[k].stage}` : ''}`).join('; ') || null;
}
function transferFact(t) {
  if (!t || t.basis === 'not-a-transfer') return null;
  return `${t.origin || '?'} → ${t.destination || '?'}: ${t.basis}${t.mechanism ? ` (${t.mechanism})` : ''}${t.recipient ? `, recipient ${t.recipient}` : ''}, ${t.allowed ? 'allowed' : 'not allowed'}`;
}

function renderDetail(r, d, i) {
  const box = $('#detail');
  if (!d) {
    box.replaceChildren();
    return;
  }
  const retry = d.retry ? `${d.retry.max_attempts} attempts, ${d.retry.backoff} backoff from ${d.retry.base_seconds}s to ${d.retry.max_seconds}s` : null;
  const err = d.error ? `${d.error.kind}${d.error.field ? ` (field ${d.error.field})` : ''}: ${d.error.message}` : null;
  const bytes = bodyBytes(r);
  const findings = d.findings ?? [];
  const parts = [
    el('h3', { text: `Decision ${i + 1}` }),
    el(
      'dl',
      {},
      field('outcome', el('span', { class: `badge outcome-${d.outcome}`, text: d.outcome })),
      field('determining policies', (d.policies ?? []).join(', ')),
      field('reasons', list(d.reasons, 'reasons')),
      field('escalation', d.escalation),
      field('alert threshold', d.alert_threshold),
      field('retry after', d.retry_after === null || d.retry_after === undefined ? null : `${d.retry_after} s`),
      field('retry advice', retry),
      field('pathway', d.pathway),
      field('stage', d.stage),
      field('provenance', provenanceFact(d.audit?.facts?.synthetic)),
      field('lockout counters', lockoutFact(d.audit?.facts?.lockout)),
      field('transfer', transferFact(d.audit?.facts?.transfer)),
      field('error', err),
      field('dropped fields', (d.dropped_fields ?? []).join(', ')),
    ),
    findings.length
      ? el(
          'div',
          { class: 'findings' },
          el('h4', { text: 'DLP findings (offsets in bytes of the body)' }),
          el(
            'table',
            {},
            el('tr', {}, ['kind', 'offset', 'length', 'confidence', 'digest'].map((h) => el('th', { text: h }))),
            findings.map((f) => el('tr', {}, [f.kind, f.offset, f.length, f.confidence, f.digest].map((v) => el('td', { text: String(v) })))),
          ),
        )
      : null,
    bytes ? el('h4', { text: `Body (${bytes.length} bytes${findings.length ? ', findings marked' : ''})` }) : null,
    bytes ? renderBody(bytes, findings) : null,
    d.redacted_body !== undefined && d.redacted_body !== null ? el('h4', { text: 'Redacted body' }) : null,
    d.redacted_body !== undefined && d.redacted_body !== null ? el('pre', { class: 'body redacted', text: d.redacted_body }) : null,
    el('details', {}, el('summary', { text: 'request' }), el('pre', { class: 'json', text: JSON.stringify(r, null, 2) })),
    el('details', {}, el('summary', { text: 'decision (JSON, with its audit record)' }), el('pre', { class: 'json', text: JSON.stringify(d, null, 2) })),
  ];
  box.replaceChildren(...parts.filter(Boolean));
}

// ------------------------------------------------------------ cases

async function runCases() {
  let report;
  try {
    report = await engine.runCases();
  } catch (e) {
    $('#cases-summary').textContent = `cases not run: ${e.message}`;
    return null;
  }
  const summary = $('#cases-summary');
  summary.textContent = `${report.passed} passed, ${report.failed} failed`;
  summary.dataset.failed = String(report.failed);
  const sorted = [...report.cases].sort((a, b) => Number(a.passed) - Number(b.passed));
  $('#cases').replaceChildren(
    ...sorted.map((c) =>
      el(
        'li',
        { class: `case ${c.passed ? 'pass' : 'fail'}`, 'data-file': c.file, 'data-name': c.name },
        el('span', { class: 'verdict', text: c.passed ? 'PASS' : 'FAIL' }),
        ' ',
        el('span', { class: 'file', text: c.file }),
        ' › ',
        el('span', { class: 'name', text: c.name }),
        ' ',
        el('button', { class: 'open-case', title: 'put this case\'s requests in the request pane', onclick: () => openCase(c.file, c.name) }, 'try'),
        c.failures.length ? el('ul', { class: 'failures' }, c.failures.map((f) => el('li', { text: `step ${f.step}: ${f.message}` }))) : null,
      ),
    ),
  );
  return report;
}

async function openCase(file, name) {
  const plan = await engine.casePlan();
  const c = plan.find((p) => p.file === file && p.name === name);
  if (!c) return;
  currentExample = null;
  renderExamples();
  $('#example-info').replaceChildren(el('b', { text: name }), el('span', { class: 'dim', text: ` — from ${file}` }));
  setRequests(formatRequests(c.steps.map((s) => JSON.parse(s.request))));
  await runScenario();
}

// ------------------------------------------------------------ examples

function renderExamples() {
  $('#examples').replaceChildren(
    el('span', { class: 'label', text: 'Examples' }),
    ...EXAMPLES.map((ex) =>
      el(
        'button',
        { class: ['example', ex.id === currentExample && 'current'].filter(Boolean).join(' '), 'data-example': ex.id, title: ex.description, onclick: () => runExample(ex.id) },
        ex.title,
      ),
    ),
  );
}

function describeExample(ex) {
  $('#example-info').replaceChildren(
    el('b', { text: ex.title }),
    ` — ${ex.description} `,
    el('span', { class: 'dim', text: `(from ${ex.sources.join('; ')})` }),
  );
}

function setRequests(text) {
  requestView.dispatch({ changes: { from: 0, to: requestView.state.doc.length, insert: text } });
}

async function runExample(id) {
  const ex = EXAMPLES.find((e) => e.id === id);
  if (!ex) return;
  currentExample = id;
  renderExamples();
  describeExample(ex);
  setRequests(formatRequests(ex.requests));
  await runScenario();
}

// ------------------------------------------------------------ share and export

async function share() {
  states.set(currentFile, bundleView.state);
  const { files, deleted } = diffFiles(DEFAULT_FILES, new Map(bundleFiles()));
  const scenario = {
    v: 1,
    base: DEFAULT_BUNDLE.info.hash,
    files,
    deleted,
    requests: requestView.state.doc.toString(),
    example: currentExample,
    file: currentFile,
  };
  const frag = await encodeScenario(scenario);
  history.replaceState(null, '', `#${frag}`);
  const url = location.href;
  const box = $('#share-box');
  box.hidden = false;
  const input = $('#share-url');
  input.value = url;
  input.select();
  let copied = false;
  try {
    await navigator.clipboard.writeText(url);
    copied = true;
  } catch {
    // no clipboard permission: the link is selected in the box
  }
  const edited = Object.keys(files).length + deleted.length;
  $('#share-note').textContent = `${copied ? 'Copied. ' : ''}${url.length} characters; the scenario (requests${edited ? ` and ${edited} edited file${edited === 1 ? '' : 's'}` : ''}) is in the fragment after #, which browsers never send to a server.`;
}

async function applyScenario(s) {
  const files = new Map(DEFAULT_FILES);
  for (const name of s.deleted ?? []) files.delete(name);
  const skipped = [];
  for (const [name, text] of Object.entries(s.files ?? {})) {
    if (badName(name)) skipped.push(name);
    else files.set(name, text);
  }
  if (skipped.length) notice(`Left out of the shared bundle (not bundle files): ${skipped.join(', ')}`, 'error');
  setBundle([...files.entries()], s.file);
  setRequests(s.requests);
  currentExample = EXAMPLES.some((e) => e.id === s.example) ? s.example : null;
  renderExamples();
  const ex = EXAMPLES.find((e) => e.id === currentExample);
  if (ex) describeExample(ex);
  else $('#example-info').replaceChildren(el('b', { text: 'Shared scenario' }));
  if (s.base && s.base !== DEFAULT_BUNDLE.info.hash) {
    notice(`This scenario was made against another default bundle (hash ${s.base.slice(0, 12)}); its edits are applied to this one (${DEFAULT_BUNDLE.info.hash.slice(0, 12)}).`, 'error');
  }
  const r = await validate({ rerun: false });
  if (r.ok) {
    await runScenario();
    await runCases();
  }
}

async function exportBundle() {
  states.set(currentFile, bundleView.state);
  const r = await validate({ rerun: false });
  if (!r.ok) {
    notice(`Not exported: the bundle is refused (${r.problems.length} problem${r.problems.length === 1 ? '' : 's'}); \`portcullis pack\` refuses it too.`, 'error');
    return;
  }
  const report = await runCases();
  if (!report || report.failed > 0) {
    notice(`Not exported: ${report ? report.failed : 'the'} case(s) fail; \`portcullis pack\` refuses such a bundle too.`, 'error');
    return;
  }
  const text = packBundle(accepted.info, accepted.files);
  const blob = new Blob([text], { type: 'application/json' });
  const a = el('a', { href: URL.createObjectURL(blob), download: `${accepted.info.name}-${accepted.info.version}.bundle.json` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  notice(`Exported ${accepted.info.name} ${accepted.info.version} (${accepted.files.length} files, hash ${accepted.info.hash.slice(0, 12)}), as \`portcullis pack\` writes it.`);
}

async function reset() {
  history.replaceState(null, '', location.pathname + location.search);
  $('#share-box').hidden = true;
  setBundle(DEFAULT_BUNDLE.files);
  await validate({ rerun: false });
  await runExample(EXAMPLES[0].id);
  await runCases();
}

// ------------------------------------------------------------ start

let engine;

async function main() {
  bundleView = new EditorView({ parent: $('#bundle-editor') });
  requestView = new EditorView({
    parent: $('#request-editor'),
    state: EditorState.create({
      doc: '',
      extensions: [
        Prec.highest(keymap.of([{ key: 'Mod-Enter', run: () => (runScenario(), true) }])),
        basicSetup,
        json(),
        lintGutter(),
        EditorView.lineWrapping,
      ],
    }),
  });
  setBundle(DEFAULT_BUNDLE.files);
  renderExamples();
  $('#run').addEventListener('click', () => runScenario());
  $('#share').addEventListener('click', () => share());
  $('#export').addEventListener('click', () => exportBundle());
  $('#reset').addEventListener('click', () => reset());
  $('#run-cases').addEventListener('click', () => runCases());

  renderStatus('checking');
  $('#bundle-status').textContent = 'loading the guest…';
  engine = await Engine.create();
  performance.mark('pg:engine-ready');

  let scenario = null;
  try {
    scenario = await decodeScenario(location.hash);
  } catch (e) {
    notice(e.message, 'error');
  }
  if (scenario) {
    await applyScenario(scenario);
  } else {
    const r = await validate({ rerun: false });
    if (r.ok) await runExample(EXAMPLES[0].id);
    await runCases();
  }
  document.body.dataset.ready = '1';

  window.addEventListener('hashchange', async () => {
    try {
      const s = await decodeScenario(location.hash);
      if (s) await applyScenario(s);
    } catch (e) {
      notice(e.message, 'error');
    }
  });
}

// For tests and the curious: what the page decided on, read-only.
window.playground = {
  lastRun: () => (lastRun ? { texts: [...lastRun.texts], decisions: structuredClone(lastRun.decisions), bundleHash: lastRun.bundleHash } : null),
  bundleFiles: () => bundleFiles(),
  defaultHash: DEFAULT_BUNDLE.info.hash,
  marks: () => performance.getEntriesByType('mark').filter((m) => m.name.startsWith('pg:')).map((m) => ({ name: m.name, at: m.startTime })),
};

main().catch((e) => {
  console.error(e);
  const s = $('#bundle-status');
  s.dataset.state = 'error';
  s.textContent = `the playground failed to start: ${e.message}`;
  document.body.dataset.ready = 'error';
});
