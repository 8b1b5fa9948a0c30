// A tiny node:http adapter for fetch-style workers: IncomingMessage ->
// Request, worker.fetch, Response -> ServerResponse. Loopback by default.
//
//   PORTCULLIS_UPSTREAM=http://127.0.0.1:8081 node examples/edge-worker/serve.mjs
import { createServer } from 'node:http';
import { pathToFileURL } from 'node:url';

/** Serve `worker` ({fetch(Request)}) on host:port (0: any free port). Resolves to the server. */
export function serve(worker, { host = '127.0.0.1', port = 0 } = {}) {
  const server = createServer(async (req, res) => {
    try {
      const chunks = [];
      for await (const c of req) chunks.push(c);
      const headers = new Headers();
      for (const [k, v] of Object.entries(req.headers)) {
        if (v === undefined) continue;
        for (const one of Array.isArray(v) ? v : [v]) headers.append(k, one);
      }
      // The client address comes from the socket, never from the client.
      headers.set('x-client-ip', (req.socket.remoteAddress ?? '').replace(/^::ffff:/, ''));
      const body = ['GET', 'HEAD'].includes(req.method) || chunks.length === 0 ? undefined : Buffer.concat(chunks);
      const request = new Request(`http://${req.headers.host ?? `${host}:${port}`}${req.url}`, { method: req.method, headers, body });
      const response = await worker.fetch(request);
      const out = {};
      response.headers.forEach((v, k) => (out[k] = v));
      const buf = Buffer.from(await response.arrayBuffer());
      res.writeHead(response.status, out);
      res.end(req.method === 'HEAD' ? undefined : buf);
    } catch (e) {
      // Fail closed.
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ outcome: 'deny', reasons: ['gateway fault'], error: String(e?.message ?? e) }));
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { default: worker } = await import('./worker.mjs');
  const server = await serve(worker, { port: Number(process.env.PORT ?? 8080) });
  const a = server.address();
  console.log(`portcullis edge worker on http://${a.address}:${a.port} -> ${process.env.PORTCULLIS_UPSTREAM ?? 'http://127.0.0.1:8081'}`);
}
