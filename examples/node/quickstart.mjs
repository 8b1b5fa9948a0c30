// Quickstart: load the default bundle, decide one request, print the outcome.
// Run from the repository: `make bindings-node && node examples/node/quickstart.mjs`
// (elsewhere: `npm install path/to/portcullis/bindings/node`).
import { loadDir, decide } from 'portcullis';

const bundle = loadDir(new URL('../../policies', import.meta.url));
console.log(`bundle: ${bundle.name} ${bundle.version}, ${bundle.policyIds.length} policies`);

const decision = decide({
  principal: { type: 'User', id: 'alice@example.com' },
  action: 'login',
  resource: { type: 'App', id: 'sales-cloud' },
  context: { ip: '203.0.113.7', module: 'sales_cloud' },
  now: '2026-11-22T10:00:00Z',
});
console.log(`outcome: ${decision.outcome}`);
console.log(`reasons: ${decision.reasons.join('; ')}`);
