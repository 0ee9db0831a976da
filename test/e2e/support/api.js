// The views API as the demo users call it: with their access tokens, which
// the global setup (support/stack.js) obtained from the provider and provides
// to the tests. (Not imported by the global setup: `inject` exists only in
// test workers.)

import { inject } from 'vitest';

import { eventually, gatewayUrl, json, pods, request } from './gateway.js';

/// A demo user's access token (`ana`, `bob`, `ada`), obtained from the local
/// provider through its real sign-in flow by the global setup (support/stack.js).
export function token(user) {
  const tokens = inject('tokens');
  if (!tokens?.[user]) throw new Error(`no access token for ${user} (the global setup provides ana, bob and ada)`);
  return tokens[user];
}

/// `Authorization: Bearer <user's token>`, as API clients send it.
export const bearer = (user) => ({ authorization: `Bearer ${token(user)}` });

/// The views API as `user` (bearer token).
export function api(user) {
  const url = (path) => gatewayUrl(`/_api${path}`);
  return {
    async create(spec) {
      const response = await request(url('/views'), {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...bearer(user) },
        body: JSON.stringify(spec),
      });
      if (response.status !== 201) throw new Error(`POST /_api/views as ${user}: ${response.status} ${response.body}`);
      return json(response);
    },
    async get(name) {
      const response = await request(url(`/views/${name}`), { headers: bearer(user) });
      return { status: response.status, view: json(response) };
    },
    async delete(name) {
      const response = await request(url(`/views/${name}`), { method: 'DELETE', headers: bearer(user) });
      return response.status;
    },
  };
}

/// Views a test file created as `user` (their owner), deleted (and waited
/// for) by `deleteAll`.
export class Views {
  names = new Set();

  constructor(user) {
    this.user = user;
    this.api = api(user);
  }

  async create(spec) {
    this.names.add(spec.name);
    return this.api.create(spec);
  }

  /// Delete every view still there and wait until its pods are gone, so a
  /// run leaves no processes behind.
  async deleteAll() {
    for (const name of this.names) {
      const status = await this.api.delete(name);
      if (status !== 204 && status !== 404) throw new Error(`DELETE view ${name}: ${status}`);
    }
    for (const name of this.names) {
      await eventually(`the pods of ${name} are gone`, async () => (await pods(name)).length === 0, 60_000);
    }
    this.names.clear();
  }
}

