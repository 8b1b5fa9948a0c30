// A fetch-style edge worker that enforces portcullis decisions before
// forwarding to an upstream. The handler is the standard
// `fetch(Request) -> Response` of edge runtimes; serve.mjs runs it on
// node:http for local use and tests.
//
//   method + path      -> action + resource (ROUTES below)
//   x-principal        -> principal ("User:alice@example.com", "Service:etl")
//   x-client-ip        -> context.ip (set by the adapter from the socket;
//                         an edge runtime has its own, e.g. cf-connecting-ip)
//   x-region, x-destination-region, x-legal-basis, x-crm-module, ?fields=
//                      -> context
//   authorization: Bearer <jwt> -> context.token (verified by the engine)
//
// allow / redact -> forwarded; challenge -> 401 (forwarded only when the
// caller's verifyChallenge accepts the request); throttle -> 429; deny and
// lock -> 403. Refusals answer JSON naming the outcome and reasons.
// After a forwarded login the upstream's verdict (2xx / 401 / 403) is fed
// back as an auth_success / auth_failure event, which drives the lockout.
// Failures the identity provider sees elsewhere (another channel, SSO) can
// be reported to POST /auth-events with the shared `eventsToken`.

import { timingSafeEqual } from 'node:crypto';
import { Portcullis } from 'portcullis';

/** [method regexp, path regexp, (match, url, headers) -> {action, resource}] */
export const ROUTES = [
  [/^POST$/, /^\/login$/, (_m, _u, h) => ({ action: 'login', resource: { type: 'App', id: h.get('x-app') ?? 'sales-cloud' } })],
  [/^(GET|HEAD)$/, /^\/records\/([^/]+)$/, (m) => ({ action: 'read', resource: { type: 'Record', id: decodeURIComponent(m[1]) } })],
  [/^(PUT|PATCH|POST|DELETE)$/, /^\/records\/([^/]+)$/, (m) => ({ action: 'write', resource: { type: 'Record', id: decodeURIComponent(m[1]) } })],
  [/^(GET|POST)$/, /^\/admin(\/.*)?$/, () => ({ action: 'admin', resource: { type: 'App', id: 'admin-console' } })],
  [/^POST$/, /^\/models\/([^/]+)\/infer$/, (m) => ({ action: 'infer', resource: { type: 'Model', id: decodeURIComponent(m[1]) } })],
  [/^(GET|POST)$/, /^\/export$/, (_m, _u, h) => ({ action: 'export', resource: { type: 'App', id: h.get('x-app') ?? 'sales-cloud' } })],
];

export const STATUS = { challenge: 401, throttle: 429, deny: 403, lock: 403 };
const HOP_BY_HOP = ['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'proxy-authorization', 'proxy-authenticate', 'host', 'content-length'];

function rfc3339(d) {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function json(status, body, headers = {}) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json', ...headers },
  });
}

/** The fields of a decision a client may see (no audit record). */
function publicView(d) {
  const body = {
    outcome: d.outcome,
    reasons: d.reasons,
    policies: d.policies,
    escalation: d.escalation,
    retry_after: d.retry_after,
    pathway: d.pathway,
  };
  if (d.error) body.error = d.error;
  return body;
}

/**
 * @param {object} options
 * @param {string} options.upstream        base URL of the upstream, e.g. http://127.0.0.1:8081
 * @param {string|URL} [options.bundleDir] bundle directory (or pass `engine`)
 * @param {Portcullis} [options.engine]    a loaded engine (its store holds the lockout state)
 * @param {(req: Request) => boolean} [options.verifyChallenge]  true when the caller solved the challenge (default: never)
 * @param {() => Date} [options.now]
 * @param {(decision: object) => void} [options.audit]  receives every decision (with its audit record)
 * @param {string} [options.eventsToken]  enables POST /auth-events for callers presenting it in x-events-token
 */
export function createWorker({ upstream, bundleDir, engine, verifyChallenge = () => false, now = () => new Date(), audit = () => {}, eventsToken }) {
  if (!engine) {
    engine = new Portcullis();
    engine.loadDir(bundleDir);
  }
  const base = new URL(upstream);

  const decide = (request) => {
    const d = engine.decide(request);
    audit(d);
    return d;
  };

  async function forward(request, url, decision) {
    const headers = new Headers(request.headers);
    for (const h of HOP_BY_HOP) headers.delete(h);
    headers.set('x-portcullis-outcome', decision.outcome);
    headers.set('x-portcullis-policies', decision.policies.join(','));
    const target = new URL(url.pathname + url.search, base);
    const hasBody = !['GET', 'HEAD'].includes(request.method);
    const res = await fetch(target, {
      method: request.method,
      headers,
      body: hasBody ? await request.arrayBuffer() : undefined,
      redirect: 'manual',
    });
    const out = new Headers(res.headers);
    for (const h of HOP_BY_HOP) out.delete(h);
    out.delete('content-encoding');
    out.set('x-portcullis-outcome', decision.outcome);
    return { res, body: await res.arrayBuffer(), headers: out };
  }

  const sameToken = (given) => {
    if (!eventsToken || !given) return false;
    const a = Buffer.from(given);
    const b = Buffer.from(eventsToken);
    return a.length === b.length && timingSafeEqual(a, b);
  };

  // {principal: "User:id", event: "auth_failure" | "auth_success", ip?, app?}
  async function authEvent(request) {
    let body;
    try {
      body = await request.json();
    } catch {
      return json(400, { error: 'body must be JSON' });
    }
    const sep = typeof body.principal === 'string' ? body.principal.indexOf(':') : -1;
    if (sep <= 0 || !['auth_failure', 'auth_success'].includes(body.event)) {
      return json(400, { error: 'need principal "Type:id" and event auth_failure | auth_success' });
    }
    const d = decide({
      principal: { type: body.principal.slice(0, sep), id: body.principal.slice(sep + 1) },
      action: 'login',
      resource: { type: 'App', id: body.app ?? 'sales-cloud' },
      context: body.ip ? { ip: body.ip } : {},
      event: body.event,
      now: rfc3339(now()),
    });
    return json(200, publicView(d));
  }

  return {
    async fetch(request) {
      const url = new URL(request.url);
      if (url.pathname === '/auth-events' && request.method === 'POST' && sameToken(request.headers.get('x-events-token'))) {
        return authEvent(request);
      }
      let route = null;
      for (const [method, path, map] of ROUTES) {
        const m = method.test(request.method) && path.exec(url.pathname);
        if (m) {
          route = map(m, url, request.headers);
          break;
        }
      }
      if (!route) return json(404, { error: 'no route', method: request.method, path: url.pathname });
      const principalHeader = request.headers.get('x-principal');
      const sep = principalHeader ? principalHeader.indexOf(':') : -1;
      if (sep <= 0) {
        return json(401, { outcome: 'deny', reasons: ['unauthenticated: send x-principal: Type:id'] }, { 'www-authenticate': 'Portcullis' });
      }
      const { action, resource } = route;
      const context = {};
      const ip = request.headers.get('x-client-ip');
      if (ip) context.ip = ip;
      const optional = { 'x-region': 'region', 'x-destination-region': 'destination_region', 'x-legal-basis': 'legal_basis', 'x-crm-module': 'module' };
      for (const [h, field] of Object.entries(optional)) {
        const v = request.headers.get(h);
        if (v) context[field] = v;
      }
      const auth = request.headers.get('authorization');
      if (auth?.startsWith('Bearer ')) context.token = auth.slice(7);
      if (url.searchParams.has('fields')) context.fields = url.searchParams.get('fields').split(',').filter(Boolean);
      const portcullisRequest = {
        principal: { type: principalHeader.slice(0, sep), id: principalHeader.slice(sep + 1) },
        action,
        resource,
        context,
        now: rfc3339(now()),
      };

      const d = decide(portcullisRequest);
      const solved = d.outcome === 'challenge' && verifyChallenge(request);
      if (!d.allowed && !solved) {
        const headers = { 'x-portcullis-outcome': d.outcome };
        if (d.retry_after != null) headers['retry-after'] = String(d.retry_after);
        if (d.outcome === 'challenge') headers['www-authenticate'] = 'Portcullis-Challenge';
        return json(STATUS[d.outcome] ?? 403, publicView(d), headers);
      }

      let up;
      try {
        up = await forward(request, url, d);
      } catch (e) {
        return json(502, { error: 'upstream unreachable', message: String(e?.cause?.message ?? e?.message ?? e) });
      }
      if (action === 'login') {
        // Feed the upstream's verdict back: failures drive the lockout ladder.
        const s = up.res.status;
        const event = s >= 200 && s < 300 ? 'auth_success' : s === 401 || s === 403 ? 'auth_failure' : null;
        if (event) {
          const after = decide({ ...portcullisRequest, event, now: rfc3339(now()) });
          up.headers.set('x-portcullis-after', after.outcome);
        }
      }
      return new Response(up.body.byteLength ? up.body : null, { status: up.res.status, headers: up.headers });
    },
  };
}

/** Module-worker style: `export default { fetch(request, env) }`, configured from env. */
let fromEnv;
export default {
  fetch(request, env = process.env) {
    fromEnv ??= createWorker({
      upstream: env.PORTCULLIS_UPSTREAM ?? 'http://127.0.0.1:8081',
      bundleDir: env.PORTCULLIS_BUNDLE ?? new URL('../../policies', import.meta.url),
    });
    return fromEnv.fetch(request);
  },
};
