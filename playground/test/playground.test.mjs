// The playground in headless Chromium (Debian's, driven by playwright-core),
// served from playground/dist by a tiny static server on loopback. Every
// decision the page shows is compared with the Rust host's for the same
// input (`portcullis replay`, the guest in wasmtime). Screenshots, the
// exported archive and the load timings go to target/playground-artifacts/.
//
// Run with `make test-playground` (builds the page first).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serveStatic } from './server.mjs';

const HERE = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const ROOT = resolve(HERE, '..');
const DIST = join(HERE, 'dist');
const POLICIES = resolve(process.env.PORTCULLIS_BUNDLE ?? join(ROOT, 'policies'));
const BIN = resolve(process.env.PORTCULLIS_BIN ?? join(ROOT, 'target/release/portcullis'));
const ART = join(ROOT, 'target/playground-artifacts');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const EXAMPLES = JSON.parse(readFileSync(join(HERE, 'build/examples.json'), 'utf8'));

let server;
let browser;
const loads = []; // page load -> first decision, per fresh page
const scratch = mkdtempSync(join(tmpdir(), 'portcullis-playground-'));

before(async () => {
  for (const [what, p] of [['the built page (make playground)', join(DIST, 'index.html')], ['the portcullis CLI (make build)', BIN], ['Chromium (apt-get install chromium)', CHROMIUM]]) {
    if (!existsSync(p)) throw new Error(`${p} is missing: ${what}`);
  }
  mkdirSync(ART, { recursive: true });
  server = await serveStatic(DIST);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
  });
});

after(async () => {
  await browser?.close();
  await server?.close();
  rmSync(scratch, { recursive: true, force: true });
  if (loads.length) {
    const sorted = loads.map((l) => l.firstDecision).sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)];
    writeFileSync(join(ART, 'load-timings.json'), `${JSON.stringify({ loads, median_first_decision_ms: median }, null, 2)}\n`);
    console.log(`# page load -> first decision: median ${median.toFixed(0)} ms over ${loads.length} cold page loads (${sorted.map((x) => x.toFixed(0)).join(', ')})`);
  }
});

// ------------------------------------------------------------ helpers

/** A fresh browser context (cold cache), the page loaded and its first decision made. */
async function openPage(url = server.url) {
  const context = await browser.newContext({ viewport: { width: 1600, height: 1000 }, acceptDownloads: true });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(url);
  await page.waitForSelector('body[data-ready]', { timeout: 60_000 });
  assert.equal(await page.getAttribute('body', 'data-ready'), '1', `the page failed to start: ${await page.textContent('#bundle-status')}`);
  const marks = Object.fromEntries((await page.evaluate(() => window.playground.marks())).map((m) => [m.name, m.at]));
  for (const m of ['pg:script', 'pg:engine-ready', 'pg:bundle-loaded', 'pg:first-decision']) assert.ok(marks[m] > 0, `mark ${m} missing`);
  loads.push({ script: marks['pg:script'], engineReady: marks['pg:engine-ready'], bundleLoaded: marks['pg:bundle-loaded'], firstDecision: marks['pg:first-decision'] });
  return { page, context, errors };
}

const runs = (page) => page.evaluate(() => Number(document.body.dataset.runs ?? 0));
async function afterRun(page, before) {
  await page.waitForFunction((n) => Number(document.body.dataset.runs ?? 0) > n, before, { timeout: 30_000 });
}

/** The decisions as the page shows them in its table. */
function shownDecisions(page) {
  return page.$$eval('#decision-table tr.decision', (rows) =>
    rows.map((r) => {
      const cell = (f) => r.querySelector(`[data-field="${f}"]`);
      const items = (f) => [...cell(f).querySelectorAll('li')].map((li) => li.textContent);
      const text = (f) => cell(f).textContent.trim();
      return {
        outcome: text('outcome'),
        policies: items('policies'),
        reasons: items('reasons'),
        escalation: text('escalation') || null,
        retry_after: text('retry_after') === '' ? null : Number(text('retry_after')),
        pathway: text('pathway'),
        stage: text('stage'),
        findings: text('findings'),
      };
    }),
  );
}

/** The Rust host's decision, projected onto what the page's table shows. */
function projected(d) {
  return {
    outcome: d.outcome,
    policies: d.policies,
    reasons: d.reasons,
    escalation: d.escalation ?? null,
    retry_after: d.retry_after ?? null,
    pathway: d.pathway,
    stage: d.stage && d.stage !== 'none' ? d.stage : '',
    findings: (d.findings ?? []).map((f) => f.kind).join(', '),
  };
}

function run(args) {
  const r = spawnSync(BIN, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (r.error) throw r.error;
  return r;
}

/** `portcullis replay` of these request lines, from empty state: the host's decisions. */
function hostReplay(texts, bundle) {
  const file = join(scratch, `replay-${Date.now()}-${Math.random().toString(36).slice(2)}.jsonl`);
  writeFileSync(file, `${texts.join('\n')}\n`);
  const r = run(['--format', 'json', 'replay', '--bundle', bundle, file]);
  assert.ok(r.status === 0 || r.status === 2, `replay failed (${r.status}): ${r.stderr}`);
  const out = r.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
  assert.equal(out.length, texts.length, `replay answered ${out.length} decisions for ${texts.length} requests: ${r.stderr}`);
  return out;
}

/** Write [name, text] pairs as a bundle directory. */
function writeBundle(files, name) {
  const dir = join(scratch, name);
  rmSync(dir, { recursive: true, force: true });
  for (const [n, text] of files) {
    const p = join(dir, n);
    mkdirSync(dirname(p), { recursive: true });
    writeFileSync(p, text);
  }
  return dir;
}

/**
 * As a person would: find `text` in the open file with the editor's search
 * panel (Ctrl-F), close it, go to the end of that line and `left` characters back.
 */
async function caretInLine(page, text, left) {
  await page.click('#bundle-editor .cm-content');
  await page.keyboard.press('Control+f');
  const search = page.locator('#bundle-editor .cm-search input[name="search"]');
  await search.fill(text);
  await search.press('End'); // the panel takes the query on a key press in its field
  await search.press('Enter');
  await page.keyboard.press('Escape');
  await page.keyboard.press('End');
  for (let i = 0; i < left; i++) await page.keyboard.press('ArrowLeft');
}

/** `text` occurs exactly once in the page's `file`. */
async function assertUnique(page, file, text) {
  const files = new Map(await page.evaluate(() => window.playground.bundleFiles()));
  assert.equal(files.get(file).split(text).length - 1, 1, `\`${text}\` must occur once in ${file}`);
}

// ------------------------------------------------------------ tests

test('the page loads the default bundle, decides, and runs the bundle cases like the host', { timeout: 120_000 }, async () => {
  const { page, context, errors } = await openPage();
  // the page embeds policies/ as it was at build time; the host checks the same files
  const bundle = writeBundle(await page.evaluate(() => window.playground.bundleFiles()), 'default');
  const host = JSON.parse(run(['--format', 'json', 'check', bundle]).stdout);
  const current = run(['--format', 'json', 'describe', POLICIES]);
  assert.equal(current.status, 0, `policies/ is refused by the host: ${current.stdout}${current.stderr}`);
  assert.equal(host.bundle.hash, JSON.parse(current.stdout).hash, 'policies/ changed since the page was built: run `make playground`');
  const status = await page.textContent('#bundle-status');
  assert.equal(status, `${host.bundle.name} ${host.bundle.version} · ${host.bundle.policy_ids.length} policies · hash ${host.bundle.hash.slice(0, 12)}`);

  // the bundle's own cases, run in the page's guest: the same verdicts as the host's
  const shown = await page.$$eval('#cases li.case', (lis) =>
    lis.map((li) => ({ file: li.dataset.file, name: li.dataset.name, passed: li.classList.contains('pass') })),
  );
  const want = host.cases.cases.map((c) => ({ file: c.file, name: c.name, passed: c.passed }));
  const key = (c) => `${c.file} ${c.name}`;
  assert.deepEqual(shown.sort((a, b) => key(a).localeCompare(key(b))), want.sort((a, b) => key(a).localeCompare(key(b))));
  assert.equal(await page.textContent('#cases-summary'), `${host.cases.passed} passed, ${host.cases.failed} failed`);

  // the first example ran on load, and its decisions are the host's
  const first = await page.evaluate(() => window.playground.lastRun());
  assert.ok(first.texts.length > 0);
  assert.deepEqual(await shownDecisions(page), hostReplay(first.texts, bundle).map(projected));
  assert.deepEqual(errors, []);
  await context.close();
});

test('each example decides exactly as the Rust host', { timeout: 300_000 }, async () => {
  const { page, context, errors } = await openPage();
  const bundle = writeBundle(await page.evaluate(() => window.playground.bundleFiles()), 'examples');
  assert.deepEqual(await page.$$eval('#examples button.example', (bs) => bs.map((b) => b.dataset.example)), EXAMPLES.map((e) => e.id));
  for (const ex of EXAMPLES) {
    const n = await runs(page);
    await page.click(`#examples button[data-example="${ex.id}"]`);
    await afterRun(page, n);
    const last = await page.evaluate(() => window.playground.lastRun());
    assert.deepEqual(last.texts, ex.requests.map((r) => JSON.stringify(r)), `${ex.id}: the page ran the example's requests`);
    const shown = await shownDecisions(page);
    const host = hostReplay(last.texts, bundle);
    assert.deepEqual(shown, host.map(projected), `${ex.id}: decisions differ from the host's`);
    // the page's own decisions are the host's byte for byte, but for the audit time of requests without `now`
    assert.deepEqual(last.decisions, host, `${ex.id}: full decisions differ`);
    await page.screenshot({ path: join(ART, `example-${ex.id}.png`), fullPage: true });

    if (ex.id === 'dlp') {
      // the card number's bytes are marked in the body, from the finding's offsets
      await page.click('#decision-table tr.decision[data-index="0"]');
      const marked = await page.$$eval('#detail mark.finding', (ms) => ms.map((m) => ({ kind: m.dataset.kind, text: m.textContent })));
      const body = ex.requests[0].body;
      const f = host[0].findings[0];
      const bytes = new TextEncoder().encode(body);
      assert.deepEqual(marked, [{ kind: 'card', text: new TextDecoder().decode(bytes.subarray(f.offset, f.offset + f.length)) }]);
      assert.match(marked[0].text, /^4111[ 0-9]+1111$/);
      await page.screenshot({ path: join(ART, 'example-dlp-card.png'), fullPage: true });
      await page.click('#decision-table tr.decision[data-index="1"]');
      assert.deepEqual(await page.$$eval('#detail mark.finding', (ms) => ms.map((m) => m.dataset.kind)), ['model_weights.safetensors']);
    }
    // each example shows what its title says (the tokens verify at the example's `now`)
    const facts = last.decisions.map((d) => d.audit.facts);
    if (ex.id === 'synthetic') {
      assert.deepEqual([...new Set(shown.map((d) => d.pathway))].sort(), ['authentic', 'synthetic']);
      assert.ok(facts.some((f) => f.synthetic.status === 'verified'));
      assert.ok(facts.some((f) => f.synthetic.failure === 'bad-signature'));
    }
    if (ex.id === 'transfer') {
      assert.deepEqual(facts.map((f) => [f.transfer.destination, f.transfer.basis, f.transfer.mechanism]), [
        ['US', 'adequacy', 'eu-us-dpf'],
        ['US', 'none', ''],
        ['US', 'art46', 'scc'],
      ]);
    }
    if (ex.id === 'lockout-dos') {
      assert.ok(shown.some((d) => d.outcome === 'lock'), 'the attacker is locked');
      assert.ok(!last.texts.some((t, i) => JSON.parse(t).context?.ip === '203.0.113.7' && shown[i].outcome === 'lock'), 'the victim never is');
    }
  }
  assert.deepEqual(errors, []);
  await context.close();
});

test('a policy error is shown at its line, as the host reports it', { timeout: 120_000 }, async () => {
  const { page, context, errors } = await openPage();
  await page.click('#file-tabs button[data-file="lockout.cedar"]');
  const target = 'context.lockout.account_ip.stage == "temporary_lock"';
  await assertUnique(page, 'lockout.cedar', target);
  // delete the `e` of `stage`: `stag` is no attribute of the context
  await caretInLine(page, target, ' == "temporary_lock" };'.length);
  await page.keyboard.press('Backspace');
  await page.waitForSelector('#bundle-status[data-state="refused"]', { timeout: 30_000 });

  const files = await page.evaluate(() => window.playground.bundleFiles());
  const edited = new Map(files).get('lockout.cedar');
  assert.ok(edited.includes('account_ip.stag == "temporary_lock"'));
  const host = run(['--format', 'json', 'check', writeBundle(files, 'typo')]);
  assert.equal(host.status, 2);
  const hostProblem = JSON.parse(host.stdout).problems.find((p) => p.location?.file === 'lockout.cedar');
  assert.ok(hostProblem, host.stdout);
  const line = edited.split('\n').findIndex((l) => l.includes('account_ip.stag == "temporary_lock"')) + 1;
  assert.ok(line > 0);
  assert.equal(hostProblem.location.line, line);

  // the problem list names the file, line and column the host names
  const shown = await page.$eval('#problems li.problem', (li) => ({ file: li.dataset.file, line: Number(li.dataset.line), column: Number(li.dataset.column), kind: li.querySelector('.kind').textContent }));
  assert.deepEqual(shown, { file: 'lockout.cedar', line, column: hostProblem.location.column, kind: hostProblem.kind });
  // and the editor marks that line, with a lint marker in the gutter
  const marked = await page.$$eval('#bundle-editor .cm-problem-line', (ls) => ls.map((l) => ({ line: Number(l.dataset.problemLine), text: l.textContent })));
  assert.equal(marked.length, 1);
  assert.equal(marked[0].line, line);
  assert.ok(marked[0].text.includes('account_ip.stag =='), marked[0].text);
  assert.ok(await page.$('#bundle-editor .cm-lint-marker-error'));
  assert.match(await page.textContent('#bundle-editor .cm-lintRange-error'), /^context\.lockout\.account_ip\.stag/);
  assert.ok(await page.$('#file-tabs button.has-problem[data-file="lockout.cedar"]'));
  await page.screenshot({ path: join(ART, 'validation-error.png'), fullPage: true });

  // a refused bundle is not exported, as `portcullis pack` refuses it
  await page.click('#export');
  await page.waitForSelector('#notice:not([hidden])');
  assert.match(await page.textContent('#notice'), /^Not exported: the bundle is refused/);

  // typing the `e` back makes it whole again
  await caretInLine(page, 'account_ip.stag ==', ' == "temporary_lock" };'.length);
  await page.keyboard.press('e');
  await page.waitForSelector('#bundle-status[data-state="accepted"]', { timeout: 30_000 });
  assert.equal(await page.$('#bundle-editor .cm-problem-line'), null);
  assert.deepEqual(errors, []);
  await context.close();
});

test('a shared scenario reloads with the same decisions, and the edited bundle exports as `portcullis pack` writes it', { timeout: 180_000 }, async () => {
  const { page, context, errors } = await openPage();
  let n = await runs(page);
  await page.click('#examples button[data-example="dlp"]');
  await afterRun(page, n);

  // edit a policy's reason: the scenario re-runs on the accepted bundle
  await page.click('#file-tabs button[data-file="dlp.cedar"]');
  await assertUnique(page, 'dlp.cedar', '@reason("export permitted")');
  n = await runs(page);
  await caretInLine(page, '@reason("export permitted")', 2);
  await page.keyboard.type(' (edited in the playground)');
  await afterRun(page, n);
  await page.waitForSelector('#bundle-status[data-state="accepted"]');
  const decisions = await shownDecisions(page);
  assert.ok(decisions.some((d) => d.reasons.includes('export permitted (edited in the playground)')), JSON.stringify(decisions));
  const files = await page.evaluate(() => window.playground.bundleFiles());
  const editedDir = writeBundle(files, 'edited');
  const last = await page.evaluate(() => window.playground.lastRun());
  assert.deepEqual(decisions, hostReplay(last.texts, editedDir).map(projected));

  // share: the whole scenario is in the fragment
  await page.click('#share');
  await page.waitForSelector('#share-box:not([hidden])');
  const url = await page.inputValue('#share-url');
  const u = new URL(url);
  assert.equal(u.origin + u.pathname, new URL(server.url).origin + '/');
  assert.equal(u.search, '');
  assert.match(u.hash, /^#s=[A-Za-z0-9_-]+$/);

  // export: the archive `portcullis pack` makes of the same files
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export')]);
  const exported = join(ART, 'exported-bundle.json');
  await download.saveAs(exported);
  const text = readFileSync(exported, 'utf8');
  const archive = JSON.parse(text);
  assert.deepEqual(Object.keys(archive), ['format', 'name', 'version', 'hash', 'files']);
  assert.equal(archive.format, 'portcullis-bundle/1');
  const packed = run(['pack', editedDir, '-o', '-']);
  assert.equal(packed.status, 0, packed.stderr);
  assert.equal(text, packed.stdout, 'the export is byte for byte what `portcullis pack` writes');
  const checked = JSON.parse(run(['--format', 'json', 'check', writeBundle(Object.entries(archive.files), 'unpacked')]).stdout);
  assert.equal(checked.accepted, true);
  assert.equal(checked.bundle.hash, archive.hash);
  assert.notEqual(archive.hash, await page.evaluate(() => window.playground.defaultHash), 'the export carries the edit');
  // `describe` of the archive itself, where this CLI reads packed files
  const described = run(['--format', 'json', 'describe', exported]);
  if (described.status === 0) assert.equal(JSON.parse(described.stdout).hash, archive.hash);
  else assert.match(described.stderr, /not a directory/, described.stderr);

  // the shared URL in a fresh browser context: the same bundle, requests and decisions
  const shared = await openPage(url);
  assert.deepEqual(await shownDecisions(shared.page), decisions);
  assert.ok(await shared.page.$('#file-tabs button.edited[data-file="dlp.cedar"]'));
  assert.equal(await shared.page.textContent('#bundle-status'), await page.textContent('#bundle-status'));
  assert.equal(await shared.page.getAttribute('#examples button.current', 'data-example'), 'dlp');
  await shared.page.screenshot({ path: join(ART, 'shared-scenario.png'), fullPage: true });
  assert.deepEqual(shared.errors, []);
  await shared.context.close();
  assert.deepEqual(errors, []);
  await context.close();
});
