// The local OpenID Connect provider (`cargo xtask oidc up`: oidc-provider,
// issuer http://localhost:32702) as the suite meets it: its demo users and
// their passwords (`<cache>/oidc/oidc.json`, written by the provider), and
// the access tokens the global setup obtained from it (support/stack.js).

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { cacheDir, repoRoot } from './gateway.js';

/// The users whose API calls the suite makes with bearer tokens.
export const tokenUsers = ['ana', 'bob', 'ada'];

/// `oidc.json`: { issuer, port, clients, users: [{ name, password, groups }] }.
export function provider() {
  return JSON.parse(readFileSync(join(cacheDir, 'oidc', 'oidc.json'), 'utf8'));
}

export function password(user) {
  const found = provider().users.find((u) => u.name === user);
  if (!found) throw new Error(`no demo user ${user} in oidc.json`);
  return found.password;
}

/// Access tokens for `tokenUsers`: from VIEWS_E2E_TOKEN_<USER> (`cargo xtask
/// e2e` signs them in before the suite), else from `cargo xtask token <user>`
/// (the same real authorization-code flow, run here). Never minted by us.
export function accessTokens() {
  const tokens = {};
  for (const user of tokenUsers) {
    const fromEnv = process.env[`VIEWS_E2E_TOKEN_${user.toUpperCase()}`];
    if (fromEnv) {
      tokens[user] = fromEnv;
      continue;
    }
    const result = spawnSync('cargo', ['xtask', 'token', user], {
      cwd: repoRoot,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const lines = (result.stdout || '').trim().split('\n');
    if (result.status !== 0 || !lines.at(-1)) {
      throw new Error(`cargo xtask token ${user} failed (${result.status ?? result.signal})`);
    }
    tokens[user] = lines.at(-1).trim();
  }
  return tokens;
}
