// TLS at the edge, as `cargo xtask dev --tls` runs it: Envoy serves HTTPS for
// views.localhost and *.views.localhost with the certificate from the Secret
// views-gateway-tls (issued by the stack's local CA, delivered over SDS), and
// plain HTTP only redirects there. `cargo xtask e2e` runs the suite a second
// time against the gateway restarted with --tls; against a plain-HTTP
// gateway there is nothing here to test.

import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import tlsSocket from 'node:tls';

import { afterAll, beforeAll, describe, expect, test } from 'vitest';

import { launch, offlineContext, onLoginPage, screenshot, submitLogin } from '../support/browser.js';
import { api, bearer } from '../support/api.js';
import { endpoint, gatewayUrl, request, tls, uniqueName, viewUrl } from '../support/gateway.js';
import { provider } from '../support/identity.js';

/// `url` on the plain-HTTP port, as someone typing `http://…` reaches it.
const plainUrl = (url) => {
  const plain = new URL(url);
  plain.protocol = 'http:';
  plain.port = String(endpoint.httpPort);
  return plain.href;
};

/// The TLS handshake with the gateway for `servername`, trusting `ca` (or
/// the system's roots): the certificate Envoy presented, or the error.
function handshake(servername, ca) {
  return new Promise((resolve) => {
    const socket = tlsSocket.connect({ host: '127.0.0.1', port: endpoint.port, servername, ca }, () => {
      const certificate = socket.getPeerX509Certificate();
      socket.end();
      resolve({ certificate });
    });
    socket.on('error', (error) => resolve({ error }));
  });
}

describe.skipIf(!tls)('TLS at the edge', () => {
  let browser;

  beforeAll(async () => {
    browser = await launch();
  });

  afterAll(async () => {
    await browser?.close();
  });

  test("Envoy presents the Secret's certificate for the gateway and for every view host", async () => {
    const ca = readFileSync(endpoint.ca);
    const expected = new X509Certificate(readFileSync(endpoint.certificate));
    for (const host of [endpoint.hostname, `demo.${endpoint.hostname}`, `${uniqueName()}.${endpoint.hostname}`]) {
      const { certificate, error } = await handshake(host, ca);
      expect(error, host).toBeUndefined();
      // Exactly the certificate in the Secret (the CA verified it above).
      expect(certificate.fingerprint256, host).toBe(expected.fingerprint256);
      expect(certificate.subjectAltName).toContain(`DNS:*.${endpoint.hostname}`);
    }
    // A client that does not trust the local CA refuses it: the certificate
    // is the CA's, not one the system trusts.
    const { error } = await handshake(`demo.${endpoint.hostname}`, undefined);
    expect(error?.code).toMatch(/CERT|SIGNATURE|ISSUER/);
  });

  test('plain HTTP redirects to the same URL over HTTPS, and serves nothing else', async () => {
    for (const url of [viewUrl('demo', '/some/page?q=1'), gatewayUrl('/_api/views?x=y')]) {
      const response = await request(plainUrl(url), { headers: { accept: 'text/html' } });
      expect(response.status, plainUrl(url)).toBe(301);
      expect(response.headers.location).toBe(url);
    }
    // Not even a create with a valid token reaches the API over plain HTTP.
    const name = uniqueName();
    const created = await request(plainUrl(gatewayUrl('/_api/views')), {
      method: 'POST',
      headers: { ...bearer('ana'), 'content-type': 'application/json' },
      body: JSON.stringify({ name, subsets: [{ bucket: 'lake', prefixes: ['sales/'] }] }),
    });
    expect(created.status).toBe(301);
    expect((await api('ana').get(name)).status).toBe(404);
  });

  test('every HTTPS answer tells the browser to use HTTPS only, for the views too; plain HTTP does not', async () => {
    const hsts = 'max-age=31536000; includeSubDomains';
    // The API as ana, the API anonymously (401), an unknown view (404), a
    // browser sent to sign in on a view's host (302).
    const answers = [
      [gatewayUrl('/_api/me'), bearer('ana'), 200],
      [gatewayUrl('/_api/me'), {}, 401],
      [viewUrl(uniqueName(), '/'), bearer('ana'), 404],
      [viewUrl('demo', '/'), { accept: 'text/html' }, 302],
    ];
    for (const [url, headers, status] of answers) {
      const response = await request(url, { headers });
      expect(response.status, url).toBe(status);
      expect(response.headers['strict-transport-security'], `${url} ${response.status}`).toBe(hsts);
    }
    // Over plain HTTP a browser ignores it (RFC 6797 8.1), so it is not sent.
    const redirect = await request(plainUrl(gatewayUrl('/')), {});
    expect(redirect.status).toBe(301);
    expect(redirect.headers['strict-transport-security']).toBeUndefined();
  });

  test('a person typing http://demo… signs in over HTTPS and lands on the view', async () => {
    const context = await offlineContext(browser);
    const page = await context.newPage();
    const demo = viewUrl('demo');
    const authorizations = [];
    page.on('request', (r) => r.url().startsWith(`${provider().issuer}/auth?`) && authorizations.push(new URL(r.url())));
    await page.goto(plainUrl(demo));
    // Redirected to HTTPS first, then (no session) to the provider, which
    // is to send her back to the HTTPS host.
    expect(await onLoginPage(page)).toBe(true);
    expect(authorizations.length).toBe(1);
    expect(new URL(authorizations[0].searchParams.get('redirect_uri')).origin).toBe(new URL(demo).origin);
    const { response } = await submitLogin(page, 'ana', demo);
    expect(page.url()).toBe(demo);
    expect([200, 503]).toContain(response.status());
    await page.locator('#connection[data-state="ready"]').waitFor({ timeout: 120_000 });
    await screenshot(page, 'tls-workspace.png');
    const cookies = await context.cookies(demo);
    expect(cookies.length).toBeGreaterThan(0);
    for (const cookie of cookies) expect(cookie, cookie.name).toMatchObject({ secure: true, httpOnly: true });
    await context.close();
  });
});
