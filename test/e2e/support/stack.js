// vitest globalSetup: the stack the suite runs against.
//
// - A gateway already answering GET <gateway>/_api/readyz with 200
//   (`cargo xtask dev` running, plain or --tls: support/gateway.js reads
//   where) is reused as it is: the fast loop.
// - Otherwise this starts one with `cargo xtask dev --detach` and leaves it
//   running afterwards, so the next run (and the person looking at
//   http://demo.localhost:8080/) reuses it; `cargo xtask down` stops it.
//   (`cargo xtask e2e`, which `cargo xtask test` runs, brings the stack up
//   before vitest and stops the gateway it started afterwards itself: then
//   VIEWS_E2E_STACK=managed and this only checks.)
//
// Then it provides the tests with access tokens of the demo users (ana, bob,
// ada), from the provider's real sign-in flow (support/identity.js).

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';

import { artifacts, gatewayReady, gatewayUrl, repoRoot } from './gateway.js';
import { accessTokens } from './identity.js';

export default async function setup({ provide }) {
  await stack();
  provide('tokens', accessTokens());
}

async function stack() {
  mkdirSync(artifacts, { recursive: true });
  if (!existsSync('/usr/bin/chromium')) {
    throw new Error('no Chromium at /usr/bin/chromium: apt-get install -y chromium (cargo xtask e2e does it)');
  }
  if (await gatewayReady()) {
    console.log(`[e2e] a gateway answers at ${gatewayUrl()}: reusing it`);
    return;
  }
  if (process.env.VIEWS_E2E_STACK === 'managed') {
    throw new Error(`the stack was to be up, but ${gatewayUrl('/_api/readyz')} does not answer 200`);
  }
  console.log('[e2e] no gateway at %s: starting one with `cargo xtask dev --detach`', gatewayUrl());
  const started = Date.now();
  const result = spawnSync('cargo', ['xtask', 'dev', '--detach'], { cwd: repoRoot, stdio: 'inherit' });
  if (result.status !== 0) throw new Error(`cargo xtask dev --detach failed (${result.status ?? result.signal})`);
  if (!(await gatewayReady())) throw new Error('cargo xtask dev --detach returned, but the gateway is not ready');
  console.log(
    `[e2e] stack up in ${((Date.now() - started) / 1000).toFixed(1)} s; left running afterwards (cargo xtask down stops it)`,
  );
}
