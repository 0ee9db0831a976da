// The local OpenID Connect provider: panva's certified `oidc-provider`,
// configured to play the organisation's identity provider for the views
// gateway in `cargo xtask dev` and the tests. Run by `cargo xtask oidc up` as
//
//     node provider.mjs <state dir> [<pod network address>]
//
// It listens on 127.0.0.1 (browsers, Envoy and tests on this machine reach it
// as `localhost`, the issuer's host) and, when given, also on the pod
// network's host address (10.233.0.1), where pods of the local cluster reach
// it: the in-cluster gateway fetches discovery, JWKS and the token endpoint
// there (its OIDC_PROVIDER_URL) while tokens still name the issuer.
//
// It owns its state under <state dir>: `secrets.json` holds the demo users'
// passwords, the gateway client's secret, the RSA signing keys (JWKS) and the
// cookie keys, all generated once (anything missing is added), so passwords
// stay the same and tokens and sessions survive a restart. On start it writes
// `oidc.json` (issuer, port, clients with secrets, users with passwords and
// groups) for the xtask and the tests, then listens. Sessions, grants and
// refresh tokens live in memory: a restart signs everyone out, which is fine
// for local development.

import { randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile, rename, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { join } from 'node:path';

import { calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose';
import Provider, { errors } from 'oidc-provider';

const stateDir = process.argv[2];
const podAddress = process.argv[3];
if (!stateDir) {
  console.error('usage: node provider.mjs <state dir> [<pod network address>]');
  process.exit(2);
}

const PORT = 32702;
// `localhost`, not 127.0.0.1: browsers (Chromium resolves *.localhost to
// loopback), Envoy and tests on this host all reach it by this name.
const ISSUER = `http://localhost:${PORT}`;

// The demo users (`sub` = the name) and their groups.
const USERS = {
  ana: ['analysts'],
  bob: ['finance'],
  ada: ['views-admins'],
  cy: [],
};

const GATEWAY_CLIENT = 'views-gateway';
const CLI_CLIENT = 'views-cli';
const EXPIRING_CLIENT = 'views-expiring';

// The gateway's resource: access tokens are RS256 JWTs whose audience is the
// gateway, so Envoy verifies them locally (jwt_authn) against our JWKS. A
// second resource exists only so tests can obtain a token for the wrong
// audience from the same provider.
const RESOURCES = {
  'urn:views-gateway': 'views-gateway',
  'urn:other-service': 'other-service',
};
const DEFAULT_RESOURCE = 'urn:views-gateway';

// ---------------------------------------------------------------------------
// State: secrets generated once, private to the user running the provider.

async function writePrivate(path, value) {
  const staging = `${path}.tmp.${process.pid}`;
  await writeFile(staging, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o600 });
  await rename(staging, path);
}

const randomSecret = (bytes) => randomBytes(bytes).toString('base64url');

async function signingKeys() {
  const { privateKey } = await generateKeyPair('RS256', { modulusLength: 2048, extractable: true });
  const jwk = await exportJWK(privateKey);
  return { keys: [{ ...jwk, kid: await calculateJwkThumbprint(jwk), alg: 'RS256', use: 'sig' }] };
}

// The stored secrets, with whatever is missing generated (a user added
// later gets a password without changing the others').
async function ensureSecrets() {
  const path = join(stateDir, 'secrets.json');
  let stored = {};
  try {
    stored = JSON.parse(await readFile(path, 'utf8'));
  } catch (error) {
    if (error.code !== 'ENOENT') throw error;
  }
  const secrets = {
    passwords: { ...stored.passwords },
    clientSecrets: { ...stored.clientSecrets },
    jwks: stored.jwks ?? await signingKeys(),
    cookieKeys: stored.cookieKeys ?? [randomSecret(32)],
  };
  for (const name of Object.keys(USERS)) secrets.passwords[name] ??= randomSecret(12);
  secrets.clientSecrets[GATEWAY_CLIENT] ??= randomSecret(32);
  if (JSON.stringify(secrets) !== JSON.stringify(stored)) {
    await writePrivate(path, secrets);
    console.log(`generated missing secrets in ${path}`);
  }
  return secrets;
}

const secrets = await ensureSecrets();
const users = new Map(Object.entries(USERS).map(([name, groups]) => [
  name,
  { name, password: secrets.passwords[name], groups },
]));

// ---------------------------------------------------------------------------
// Pages: our own, small, accessible, with no external assets (the machines
// running this have no internet, and a sign-in page should not load any).

function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 24rem; margin: 4rem auto; padding: 0 1rem; color: #1a1a1a; }
  label { display: block; margin-top: 1rem; font-weight: 600; }
  input { display: block; width: 100%; box-sizing: border-box; padding: .5rem; margin-top: .25rem; font-size: 1rem; }
  button { margin-top: 1.5rem; padding: .6rem 1.2rem; font-size: 1rem; }
  [role=alert] { color: #a00000; font-weight: 600; }
  .hint { color: #555; font-size: .9rem; }
</style>
</head>
<body>
<main>
${body}
</main>
</body>
</html>`;
}

// The form posts back to the URL it was served from (no action attribute),
// which is what `test_support::oidc` relies on as well.
function loginPage({ clientId, username = '', error }) {
  const alert = error ? `<p role="alert" id="error">${escapeHtml(error)}</p>` : '';
  const describedBy = error ? ' aria-describedby="error"' : '';
  return page('Sign in', `<h1>Sign in</h1>
<p class="hint">to continue to ${escapeHtml(clientId)} (local identity provider)</p>
${alert}
<form method="post" autocomplete="off">
  <label for="username">User name</label>
  <input id="username" name="username" type="text" required autocapitalize="none" value="${escapeHtml(username)}"${describedBy}${username ? '' : ' autofocus'}>
  <label for="password">Password</label>
  <input id="password" name="password" type="password" required${describedBy}${username ? ' autofocus' : ''}>
  <button type="submit">Sign in</button>
</form>`);
}

// ---------------------------------------------------------------------------
// Clients.

// The gateway's hosts in development: `localhost` and `<view>.localhost`, or
// with TLS (`cargo xtask dev --tls`) `views.localhost` and `<view>.views.localhost`.
const [LOCALHOST, VIEW_HOST] = [/^localhost$/, /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.(?:views\.)?localhost$/];

// Whether `value` is an http(s) URL on one of the gateway's hosts (any port)
// with exactly `path`, and nothing else (no query, fragment or user).
function onGatewayHost(value, path) {
  let url;
  try {
    url = new URL(value);
  } catch {
    return false;
  }
  return (url.protocol === 'http:' || url.protocol === 'https:')
    && (LOCALHOST.test(url.hostname) || VIEW_HOST.test(url.hostname))
    && url.pathname === path
    && !url.search && !url.hash && !url.username && !url.password;
}

const nativeClient = (clientId) => ({
  client_id: clientId,
  application_type: 'native',
  token_endpoint_auth_method: 'none',
  grant_types: ['authorization_code'],
  response_types: ['code'],
  // RFC 8252 loopback redirect: the provider ignores the port for native
  // clients, so `cargo xtask token` may use any (it never listens at all).
  redirect_uris: ['http://127.0.0.1/callback'],
});

const clients = [
  {
    client_id: GATEWAY_CLIENT,
    client_secret: secrets.clientSecrets[GATEWAY_CLIENT],
    // Both client_secret_basic and client_secret_post are accepted for any
    // client registered with either.
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    // Placeholders: the real rule is `gatewayRedirectAllowed` below.
    redirect_uris: ['http://localhost/_gateway/oauth2/callback'],
    post_logout_redirect_uris: ['http://localhost/'],
  },
  nativeClient(CLI_CLIENT),
  nativeClient(EXPIRING_CLIENT),
];

// ---------------------------------------------------------------------------
// Accounts.

function account(user) {
  return {
    accountId: user.name,
    async claims() {
      return {
        sub: user.name,
        preferred_username: user.name,
        name: user.name,
        email: `${user.name}@example.com`,
        email_verified: true,
        groups: user.groups,
      };
    },
  };
}

function passwordMatches(user, password) {
  const [expected, given] = [Buffer.from(user.password), Buffer.from(password)];
  return expected.length === given.length && timingSafeEqual(expected, given);
}

// ---------------------------------------------------------------------------
// The provider.

const provider = new Provider(ISSUER, {
  clients,
  jwks: secrets.jwks,
  cookies: { keys: secrets.cookieKeys },
  findAccount: async (_ctx, sub) => (users.has(sub) ? account(users.get(sub)) : undefined),
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  // The gateway reads who someone is from the ID token (access tokens are
  // for the gateway's audience, not the userinfo endpoint), so ID tokens
  // carry the granted scopes' claims, groups included.
  conformIdTokenClaims: false,
  // Every authorization request names its redirect_uri.
  allowOmittingSingleRegisteredRedirectUri: false,
  pkce: { required: () => true },
  // The authorization-code flow only (no implicit or hybrid responses).
  responseTypes: ['code'],
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      logoutSource: async (ctx, form) => {
        ctx.body = page('Sign out', `<h1>Sign out</h1>
<p>Sign out of the local identity provider at ${escapeHtml(ctx.host)}?</p>
${form}
<button type="submit" form="op.logoutForm" name="logout" value="yes" autofocus>Sign out</button>
<button type="submit" form="op.logoutForm">Stay signed in</button>`);
      },
      postLogoutSuccessSource: async (ctx) => {
        ctx.body = page('Signed out', '<h1>Signed out</h1><p>You are signed out.</p>');
      },
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => oneOf ?? DEFAULT_RESOURCE,
      // The token request need not repeat the resource of the authorization
      // request (Envoy's oauth2 filter does not): it is the granted one.
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resource) => {
        const audience = RESOURCES[resource];
        if (!audience) throw new errors.InvalidTarget(`unknown resource ${resource}`);
        return {
          audience,
          scope: 'openid profile email groups',
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  // Access tokens (JWTs) carry who the user is, so the gateway decides
  // without calling back here.
  extraTokenClaims: async (_ctx, token) => {
    const user = token.accountId && users.get(token.accountId);
    if (!user) return undefined;
    return {
      preferred_username: user.name,
      email: `${user.name}@example.com`,
      groups: user.groups,
    };
  },
  // The gateway is a first-party client: every sign-in gives it a refresh
  // token (ending with the session), without the `offline_access` +
  // `prompt=consent` dance the specification asks of third parties.
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  ttl: {
    // `views-expiring` exists for tests of expired tokens.
    AccessToken: (_ctx, _token, client) => (client?.clientId === EXPIRING_CLIENT ? 5 : 60 * 60),
    AuthorizationCode: 60,
    ClientCredentials: 10 * 60,
    IdToken: 60 * 60,
    Interaction: 60 * 60,
    RefreshToken: 24 * 60 * 60,
    Session: 24 * 60 * 60,
    Grant: 24 * 60 * 60,
  },
  clientBasedCORS: () => false,
  interactions: { url: async (_ctx, interaction) => `/interaction/${interaction.uid}` },
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = page('Sign-in error', `<h1>Sign-in error</h1>
<p role="alert">${escapeHtml(out.error)}: ${escapeHtml(out.error_description ?? '')}</p>`);
  },
});

// One callback per view host: the gateway signs people in on the host they
// asked for (`<view>.localhost:<port>`), so its session cookie stays on that
// host, and Envoy's callback is `/_gateway/oauth2/callback` on every one of
// them. Registering each view's URI would mean re-registering the client for
// every new view; instead, for this client only, any such host is allowed.
// Other clients keep the exact match.
const { redirectUriAllowed, postLogoutRedirectUriAllowed } = provider.Client.prototype;
provider.Client.prototype.redirectUriAllowed = function gatewayRedirectAllowed(value) {
  if (this.clientId === GATEWAY_CLIENT) return onGatewayHost(value, '/_gateway/oauth2/callback');
  return redirectUriAllowed.call(this, value);
};
provider.Client.prototype.postLogoutRedirectUriAllowed = function gatewayLogoutAllowed(value) {
  if (this.clientId === GATEWAY_CLIENT) return onGatewayHost(value, '/');
  return postLogoutRedirectUriAllowed.call(this, value);
};

// ---------------------------------------------------------------------------
// Interactions: our login page; consent is granted at once (every client here
// is first-party).

async function formBody(ctx) {
  let body = '';
  for await (const chunk of ctx.req) {
    body += chunk;
    if (body.length > 8192) ctx.throw(413, 'form too large');
  }
  return new URLSearchParams(body);
}

async function grantConsent(details) {
  const { prompt: { details: missing }, params, session } = details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [resource, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(resource, scopes.join(' '));
  }
  return { consent: { grantId: await grant.save() } };
}

async function interaction(ctx) {
  ctx.set('cache-control', 'no-store');
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const { prompt, params } = details;
  let result;
  if (prompt.name === 'consent') {
    result = await grantConsent(details);
  } else if (prompt.name === 'login' && ctx.method === 'POST') {
    const form = await formBody(ctx);
    const username = form.get('username') ?? '';
    const user = users.get(username);
    if (!user || !passwordMatches(user, form.get('password') ?? '')) {
      console.log(`sign-in refused: ${JSON.stringify(username)} (client ${params.client_id})`);
      ctx.type = 'html';
      ctx.body = loginPage({
        clientId: params.client_id,
        username,
        error: 'Wrong user name or password.',
      });
      return;
    }
    console.log(`signed in: ${user.name} (client ${params.client_id})`);
    result = { login: { accountId: user.name } };
  } else if (prompt.name === 'login' && ctx.method === 'GET') {
    ctx.type = 'html';
    ctx.body = loginPage({ clientId: params.client_id, username: params.login_hint ?? '' });
    return;
  } else {
    ctx.throw(405);
  }
  const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, {
    mergeWithLastSubmission: prompt.name !== 'login',
  });
  ctx.status = 303;
  ctx.redirect(returnTo);
}

provider.use(async (ctx, next) => {
  if (!/^\/interaction\/[\w-]+$/.test(ctx.path)) {
    await next();
    return;
  }
  try {
    await interaction(ctx);
  } catch (error) {
    // Typically an expired or foreign interaction (no matching cookie).
    ctx.status = error.statusCode ?? error.status ?? 500;
    ctx.type = 'html';
    ctx.body = page('Sign-in error', `<h1>Sign-in error</h1>
<p role="alert">${escapeHtml(error.error_description ?? error.message)}</p>
<p>Go back to the page you wanted and sign in again.</p>`);
  }
});

provider.on('server_error', (_ctx, error) => console.error('server error:', error));

// On the pod network too, when its address exists (the local cluster's
// network is up): `podUrl` in oidc.json says whether it does.
const servers = [];
let podUrl;
if (podAddress) {
  const podServer = http.createServer(provider.callback());
  try {
    await new Promise((resolve, reject) => {
      podServer.once('error', reject);
      podServer.listen(PORT, podAddress, resolve);
    });
    podUrl = `http://${podAddress}:${PORT}`;
    servers.push(podServer);
    console.log(`oidc-provider: also listening on ${podAddress}:${PORT} (for pods)`);
  } catch (error) {
    console.log(`oidc-provider: not listening on ${podAddress}:${PORT} (${error.code ?? error.message}): pods cannot reach it`);
  }
}

// What the xtask and the tests read: written before listening on
// 127.0.0.1, so a provider that answers there has written it.
await writePrivate(join(stateDir, 'oidc.json'), {
  issuer: ISSUER,
  port: PORT,
  podUrl,
  clients: clients.map((client) => ({ id: client.client_id, secret: client.client_secret })),
  users: [...users.values()],
});

servers.push(provider.listen(PORT, '127.0.0.1', () => {
  console.log(`oidc-provider: issuer ${ISSUER}, listening on 127.0.0.1:${PORT}`);
}));
process.on('SIGTERM', () => {
  let open = servers.length;
  for (const server of servers) server.close(() => --open === 0 && process.exit(0));
});
