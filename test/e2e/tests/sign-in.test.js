// Signing in, as a person meets it in Chromium against the real provider:
// a view host without a session sends the browser to the provider's login
// page and, once signed in, back to the page it asked for; the session is a
// set of HttpOnly, host-only, SameSite=Lax cookies that no other host takes;
// somebody else's view answers exactly like a view that does not exist;
// sign-out ends the session; programs without a token get 401 JSON, never a
// redirect. The demo view is ana's (`cargo xtask dev` creates it with her token).

import { afterAll, beforeAll, describe, expect, test } from 'vitest';

import { isRedirect, launch, offlineContext, onLoginPage, screenshot, submitLogin } from '../support/browser.js';
import { Views } from '../support/api.js';
import { gatewayUrl, request, uniqueName, viewUrl } from '../support/gateway.js';
import { provider } from '../support/identity.js';

const demo = viewUrl('demo');
const cookieHeader = (cookies) => cookies.map((c) => `${c.name}=${c.value}`).join('; ');
const authorizationEndpoint = () => `${provider().issuer}/auth`;

describe('signing in', () => {
  const views = new Views('ana');
  let browser;
  // ana's browser, signed in on demo.localhost by the first test.
  let ana;
  // The Set-Cookie headers of demo.localhost's sign-in callback.
  const setCookies = [];

  beforeAll(async () => {
    browser = await launch();
    ana = await offlineContext(browser);
  });

  afterAll(async () => {
    await browser?.close();
    await views.deleteAll();
  });

  test('a view host without a session: the provider signs ana in and sends her back to the view', async () => {
    const page = await ana.newPage();
    page.on('response', async (response) => {
      if (new URL(response.url()).pathname === '/_gateway/oauth2/callback') {
        setCookies.push(...(await response.headersArray()).filter((h) => h.name.toLowerCase() === 'set-cookie'));
      }
    });
    const opened = Date.now();
    const first = page.waitForResponse((r) => r.url() === demo);
    await page.goto(demo);
    // The view host redirected the browser to the provider (not served a page).
    expect((await first).status()).toBe(302);
    expect(await onLoginPage(page)).toBe(true);
    const toLoginPage = Date.now() - opened;
    await expect(page.title()).resolves.toBe('Sign in');
    await screenshot(page, 'sign-in-login-page.png');

    const { ms, response } = await submitLogin(page, 'ana', demo);
    console.log(
      `[e2e] sign-in round trip in Chromium: ${new URL(demo).host} → login page ${toLoginPage} ms; ` +
        `login form submitted → ${new URL(demo).host} page loaded ${ms} ms (HTTP ${response.status()})`,
    );
    // Back at the page she asked for: the progress page while the view
    // starts (503), or the workspace when it runs already.
    expect(page.url()).toBe(demo);
    expect([200, 503]).toContain(response.status());
    if (response.status() === 503) {
      await page.locator('main#page').waitFor({ timeout: 10_000 });
      await screenshot(page, 'sign-in-progress-page.png');
    }
    await page.locator('#connection[data-state="ready"]').waitFor({ timeout: 120_000 });
    expect(page.url()).toBe(demo);
    await expect(page.locator('#view-name').textContent()).resolves.toBe('demo');
    await screenshot(page, 'sign-in-workspace.png');

    // Signed in at the provider, another host of the gateway signs her in
    // without the form and comes back to the exact URL asked for.
    const me = gatewayUrl('/_api/me?from=e2e');
    const answer = await page.goto(me);
    expect(page.url()).toBe(me);
    expect(answer.status()).toBe(200);
    expect((await answer.json()).user).toBe('ana');
    await page.close();
  });

  test('the session cookies are HttpOnly, host-only and SameSite=Lax', async () => {
    const cookies = await ana.cookies(demo);
    expect(cookies.length).toBeGreaterThan(0);
    for (const cookie of cookies) {
      expect(cookie, cookie.name).toMatchObject({ domain: new URL(demo).hostname, path: '/', httpOnly: true, secure: true, sameSite: 'Lax' });
    }
    // As sent: no Domain attribute (a Domain cookie would reach every
    // *.localhost host), and the browser keeps them to demo.localhost.
    // (The callback also deletes the sign-in flow's own cookies: `=deleted`, expired.)
    const set = setCookies.filter(({ value }) => !/=deleted;/.test(value));
    expect(set.length).toBeGreaterThan(0);
    for (const { value } of set) {
      expect(value).toMatch(/;\s*HttpOnly/i);
      expect(value).toMatch(/;\s*SameSite=Lax/i);
      expect(value).not.toMatch(/;\s*Domain=/i);
    }
  });

  test("demo.localhost's session is not accepted on any other host", async () => {
    const stolen = cookieHeader(await ana.cookies(demo));
    // On its own host the cookies are a session (what the checks below
    // refuse is the host, not broken cookies).
    const own = await request(viewUrl('demo', '/api/catalog'), { headers: { cookie: stolen, accept: 'application/json' } });
    expect(own.status).toBe(200);
    expect(JSON.parse(own.body).tables.map((t) => t.name)).toEqual(['sales']);

    // Another view of ana's: replayed there, the cookies sign nobody in.
    const other = uniqueName();
    await views.create({ name: other, subsets: [{ bucket: 'lake', prefixes: ['sales/region=eu/'] }] });
    const replayed = {};
    const refused = {};
    for (const url of [viewUrl(other, '/api/catalog'), gatewayUrl('/_api/me')]) {
      const program = await request(url, { headers: { cookie: stolen, accept: 'application/json' } });
      const person = await request(url, { headers: { cookie: stolen, accept: 'text/html' } });
      replayed[url] = { program: program.status, person: person.status };
      refused[url] = { program: 401, person: 302 };
      if (program.status === 401) expect(JSON.parse(program.body).error, url).toBe('unauthenticated');
      if (person.status === 302) expect(person.headers.location, url).toMatch(new RegExp(`^${authorizationEndpoint()}\\?`));
    }
    // A program gets 401, a browser is sent to sign in: nobody is signed in.
    expect(replayed).toEqual(refused);
  });

  test("bob gets from ana's view exactly what a view that does not exist gets", async () => {
    const bob = await offlineContext(browser);
    const page = await bob.newPage();
    const nowhere = viewUrl(uniqueName());
    await page.goto(nowhere);
    const { response: unknown } = await submitLogin(page, 'bob', nowhere);
    expect(unknown.status()).toBe(404);
    const unknownAnswer = { status: unknown.status(), type: unknown.headers()['content-type'], body: await unknown.text() };

    // Signed in (the provider remembers him), he asks for ana's view.
    const refused = await page.goto(demo);
    expect(page.url()).toBe(demo);
    const refusedAnswer = { status: refused.status(), type: refused.headers()['content-type'], body: await refused.text() };
    expect(refusedAnswer).toEqual(unknownAnswer);
    await screenshot(page, 'sign-in-bob-404.png');
    // He is signed in there: the 404 is not a sign-in page.
    expect((await bob.cookies(demo)).length).toBeGreaterThan(0);
    expect(await onLoginPage(page)).toBe(false);
    await bob.close();
  });

  test('an API client without a token gets 401 with a JSON error, never a redirect', async () => {
    const calls = [
      ['GET', gatewayUrl('/_api/views'), {}],
      ['POST', gatewayUrl('/_api/views'), { 'content-type': 'application/json' }],
      ['GET', viewUrl('demo', '/api/catalog'), { accept: 'application/json' }],
      // curl's default Accept.
      ['GET', demo, { accept: '*/*' }],
      ['GET', gatewayUrl('/_api/me'), { authorization: 'Bearer not-a-token' }],
    ];
    for (const [method, url, headers] of calls) {
      const body = method === 'POST' ? JSON.stringify({ name: uniqueName(), subsets: [] }) : undefined;
      const response = await request(url, { method, headers, body });
      const what = `${method} ${url} ${JSON.stringify(headers)}`;
      expect(response.status, what).toBe(401);
      expect(response.headers.location, what).toBeUndefined();
      expect(response.headers['content-type'], what).toMatch(/^application\/json/);
      expect(JSON.parse(response.body).error, what).toBe('unauthenticated');
    }
  });

  test('sign-out ends the session on that host; the next visit goes to sign-in again', async () => {
    const before = cookieHeader(await ana.cookies(demo));
    const signedIn = await request(viewUrl('demo', '/api/catalog'), { headers: { cookie: before, accept: 'application/json' } });
    expect(signedIn.status).toBe(200);

    const page = await ana.newPage();
    await page.goto(viewUrl('demo', '/_gateway/sign-out'));
    // Signed out of demo.localhost: what the browser still holds for it is
    // no session.
    const after = cookieHeader(await ana.cookies(demo));
    const program = await request(viewUrl('demo', '/api/catalog'), { headers: { cookie: after, accept: 'application/json' } });
    expect(program.status).toBe(401);
    const person = await request(demo, { headers: { cookie: after, accept: 'text/html' } });
    expect(person.status).toBe(302);
    expect(person.headers.location).toMatch(new RegExp(`^${authorizationEndpoint()}\\?`));

    // The gateway hands over to the provider's sign-out, which asks first.
    expect(page.url().startsWith(provider().issuer)).toBe(true);
    await screenshot(page, 'sign-out-provider.png');
    // Confirmed there, the provider sends her back to demo.localhost, which
    // (no session) sends her to sign in.
    const failed = [];
    page.on('requestfailed', (r) => r.isNavigationRequest() && failed.push(`${r.url()} (${r.failure()?.errorText})`));
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.waitForURL((url) => url.href.startsWith(`${provider().issuer}/interaction/`) || url.protocol === 'chrome-error:');
    expect(failed).toEqual([]);
    expect(await onLoginPage(page)).toBe(true);

    // Signed out at the provider too: the view host shows the login page
    // again, whenever she comes back.
    const redirects = [];
    page.on('response', (response) => {
      if (response.request().resourceType() === 'document' && isRedirect(response)) redirects.push(response.url());
    });
    await page.goto(demo);
    expect(redirects[0]).toBe(demo);
    expect(await onLoginPage(page)).toBe(true);
    await screenshot(page, 'sign-out-login-again.png');
    await page.close();
  });
});
