// The edge worker in front of a loopback upstream: allow -> forwarded,
// no permit -> 403, failures -> refusals with the outcome's status, a
// lockout -> 403 lock.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { lstatSync, mkdirSync, readlinkSync, rmSync, symlinkSync } from 'node:fs';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../..');

// `import 'portcullis'` resolves through node_modules/portcullis, a link to
// bindings/node (what `npm install` of file:../../bindings/node makes).
function linkPackage() {
  const nm = join(here, 'node_modules');
  const link = join(nm, 'portcullis');
  const target = relative(nm, join(root, 'bindings/node'));
  try {
    if (readlinkSync(link) === target) return;
  } catch {}
  rmSync(link, { recursive: true, force: true });
  mkdirSync(nm, { recursive: true });
  symlinkSync(target, link, 'dir');
}
linkPackage();
const { createWorker, STATUS } = await import('./worker.mjs');
const OUTCOMES = ['allow', 'redact', 'challenge', 'throttle', 'deny', 'lock'];
const { serve } = await import('./serve.mjs');

const CHALLENGE_ANSWER = 'solved-captcha-for-tests';
const EVENTS_TOKEN = 'idp-shared-secret-for-tests';
let upstream, gateway, base;
const upstreamHits = [];

before(async () => {
  upstream = createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = Buffer.concat(chunks).toString('utf8');
    upstreamHits.push({ method: req.method, url: req.url, headers: req.headers, body });
    if (req.url === '/login') {
      const ok = JSON.parse(body || '{}').password === 'correct horse';
      res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ login: ok ? 'ok' : 'bad password' }));
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': 'echo' });
    res.end(JSON.stringify({ echo: true, method: req.method, url: req.url, outcome: req.headers['x-portcullis-outcome'], body }));
  });
  await new Promise((r) => upstream.listen(0, '127.0.0.1', r));
  const worker = createWorker({
    upstream: `http://127.0.0.1:${upstream.address().port}`,
    bundleDir: join(root, 'policies'),
    verifyChallenge: (req) => req.headers.get('x-challenge-answer') === CHALLENGE_ANSWER,
    eventsToken: EVENTS_TOKEN,
  });
  gateway = await serve(worker, { host: '127.0.0.1', port: 0 });
  base = `http://127.0.0.1:${gateway.address().port}`;
});

after(async () => {
  await new Promise((r) => gateway.close(r));
  await new Promise((r) => upstream.close(r));
});

const as = (principal, extra = {}) => ({ 'x-principal': principal, ...extra });
const login = (principal, password, headers = {}) =>
  fetch(`${base}/login`, { method: 'POST', headers: { ...as(principal), 'content-type': 'application/json', ...headers }, body: JSON.stringify({ password }) });

test('an allowed read is forwarded to the upstream', async () => {
  const n = upstreamHits.length;
  const res = await fetch(`${base}/records/001000000000001AAA?x=1`, { headers: as('User:alice@example.com', { 'x-region': 'eu-central' }) });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('x-upstream'), 'echo');
  assert.equal(res.headers.get('x-portcullis-outcome'), 'allow');
  const body = await res.json();
  assert.deepEqual(body, { echo: true, method: 'GET', url: '/records/001000000000001AAA?x=1', outcome: 'allow', body: '' });
  assert.equal(upstreamHits.length, n + 1);
});

test('no permit -> 403 naming the reason, upstream untouched', async () => {
  const n = upstreamHits.length;
  const res = await fetch(`${base}/admin/users`, { headers: as('User:alice@example.com') });
  assert.equal(res.status, 403);
  const body = await res.json();
  assert.equal(body.outcome, 'deny');
  assert.deepEqual(body.reasons, ['no-permit']);
  assert.equal(upstreamHits.length, n);
});

test('a forbid -> 403 naming the policy, the reason and the escalation field', async () => {
  // a cross-region read without a declared legal basis
  const res = await fetch(`${base}/records/0015g00000AbCdEAAV`, {
    headers: as('User:alice@example.com', { 'x-region': 'eu-central', 'x-destination-region': 'us-east' }),
  });
  assert.equal(res.status, 403);
  const body = await res.json();
  assert.equal(body.outcome, 'deny');
  assert.ok(body.policies.length > 0, 'a forbid names its policy');
  assert.ok(body.reasons.length > 0 && !body.reasons.includes('no-permit'));
  assert.ok('escalation' in body && 'retry_after' in body);
});

test('no principal -> 401; unknown route -> 404', async () => {
  const anon = await fetch(`${base}/records/1`);
  assert.equal(anon.status, 401);
  assert.equal((await anon.json()).outcome, 'deny');
  assert.equal((await fetch(`${base}/nowhere`, { headers: as('User:alice@example.com') })).status, 404);
});

test('failed logins through the worker are counted until the worker refuses, with the status of the outcome', async () => {
  const who = 'User:bob@example.com';
  let refused = null;
  for (let i = 1; i <= 60 && !refused; i++) {
    const n = upstreamHits.length;
    const res = await login(who, 'wrong');
    const body = await res.json();
    if (body.login === 'bad password') {
      // forwarded, refused by the upstream, and reported as a failure
      assert.equal(res.status, 401);
      assert.ok(OUTCOMES.includes(res.headers.get('x-portcullis-after')), `attempt ${i}`);
      assert.equal(upstreamHits.length, n + 1);
      continue;
    }
    refused = { res, body, attempt: i };
    assert.equal(upstreamHits.length, n, 'a refused login never reaches the upstream');
  }
  assert.ok(refused, 'the worker never refused a login after 60 failures');
  const { res, body } = refused;
  assert.ok(refused.attempt > 1, 'the very first login was refused');
  assert.ok(['challenge', 'throttle', 'deny', 'lock'].includes(body.outcome), body.outcome);
  assert.equal(res.status, STATUS[body.outcome]);
  assert.equal(res.headers.get('x-portcullis-outcome'), body.outcome);
  assert.ok(body.reasons.length > 0 && body.policies.length > 0);
  if (body.outcome === 'challenge') assert.equal(res.headers.get('www-authenticate'), 'Portcullis-Challenge');
  if (body.retry_after != null) assert.equal(res.headers.get('retry-after'), String(body.retry_after));
});

test('a lockout after failures: the login is answered 403 with the lock outcome and never forwarded', async () => {
  const who = 'User:carol@example.com';
  // The identity provider reports failures it saw for this account and address.
  let last;
  for (let i = 0; i < 200; i++) {
    const res = await fetch(`${base}/auth-events`, {
      method: 'POST',
      headers: { 'x-events-token': EVENTS_TOKEN, 'content-type': 'application/json' },
      body: JSON.stringify({ principal: who, event: 'auth_failure', ip: '127.0.0.1' }),
    });
    assert.equal(res.status, 200);
    last = await res.json();
    if (last.outcome === 'lock') break;
  }
  assert.equal(last.outcome, 'lock', 'no lock after 200 reported failures');
  const n = upstreamHits.length;
  const locked = await login(who, 'correct horse', { 'x-challenge-answer': CHALLENGE_ANSWER });
  assert.equal(locked.status, 403);
  const body = await locked.json();
  assert.equal(body.outcome, 'lock');
  assert.ok(body.policies.length > 0, 'the lock names its policies');
  assert.ok(body.reasons.length > 0, 'the lock names its reasons');
  assert.ok(!('audit' in body), 'the audit record stays inside');
  assert.equal(locked.headers.get('x-portcullis-outcome'), 'lock');
  if (body.retry_after != null) assert.equal(locked.headers.get('retry-after'), String(body.retry_after));
  assert.equal(upstreamHits.length, n, 'a locked login never reaches the upstream');
  // another account is unaffected and logs in through the worker
  const dave = await login('User:dave@example.com', 'correct horse');
  assert.equal(dave.status, 200);
  assert.deepEqual(await dave.json(), { login: 'ok' });
  assert.equal(dave.headers.get('x-portcullis-after'), 'allow');
});

test('the events endpoint needs its token', async () => {
  const post = (headers) =>
    fetch(`${base}/auth-events`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: '{"principal":"User:eve@example.com","event":"auth_failure"}' });
  assert.equal((await post({})).status, 404);
  assert.equal((await post({ 'x-events-token': 'wrong' })).status, 404);
  assert.equal((await post({ 'x-events-token': EVENTS_TOKEN })).status, 200);
});
