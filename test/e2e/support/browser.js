// Chromium for the suite: Debian's /usr/bin/chromium driven by playwright-core
// (no browser download). Chromium resolves *.localhost to loopback itself.

import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

import { artifacts, endpoint, gatewayUrl, port } from './gateway.js';
import { password, provider } from './identity.js';

export async function launch() {
  // Root in CI: Chromium's sandbox needs user namespaces we may not have.
  const args = ['--no-sandbox', '--disable-dev-shm-usage'];
  if (endpoint.certificate) {
    // With TLS: accept the gateway's certificate, and only it, as if the
    // local CA were installed (its public key's SHA-256; any other
    // certificate still fails).
    const key = new X509Certificate(readFileSync(endpoint.certificate)).publicKey.export({ type: 'spki', format: 'der' });
    args.push(`--ignore-certificate-errors-spki-list=${createHash('sha256').update(key).digest('base64')}`);
  }
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args,
  });
}

/// A browser context that may talk only to the gateway and the identity
/// provider people sign in at (our machines are offline; a page that reaches
/// elsewhere is a bug), recording what it refused.
export async function offlineContext(browser, options = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, ...options });
  context.externalRequests = [];
  const issuer = new URL(provider().issuer);
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    const local = url.hostname === 'localhost' || url.hostname.endsWith('.localhost');
    const gateway = local && [port, endpoint.httpPort].includes(Number(url.port || (url.protocol === 'https:' ? 443 : 80)));
    if (gateway || url.origin === issuer.origin || url.protocol === 'data:' || url.protocol === 'blob:') {
      return route.continue();
    }
    context.externalRequests.push(url.href);
    return route.abort();
  });
  return context;
}

const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

/// axe-core's WCAG 2.1 A/AA and best-practice rules on the page as it is: the
/// violations, as "rule: selector" strings. The page's context must bypass
/// its Content-Security-Policy (`offlineContext(browser, { bypassCSP: true })`)
/// for axe's script to be injected; only audits do that.
export async function axeViolations(page) {
  if (!(await page.evaluate(() => 'axe' in window))) await page.addScriptTag({ content: axeSource });
  const result = await page.evaluate(() =>
    window.axe.run(document, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] },
    }),
  );
  return result.violations.flatMap((v) => v.nodes.map((n) => `${v.id}: ${n.target.join(' ')}`));
}

export const screenshot = (page, name) => page.screenshot({ path: join(artifacts, name) });

/// Type `sql` into the workspace's editor, run it and wait until it finished
/// (rows, or an error). Returns what the page shows.
export async function runQuery(page, sql) {
  await page.locator('#sql').fill(sql);
  await page.locator('#run').click();
  // Running: the Run button is disabled until the answer is rendered.
  await page.locator('#run:not([disabled])').waitFor({ timeout: 60_000 });
  const errorShown = await page.locator('#error').isVisible();
  if (errorShown) {
    return {
      error: {
        title: await page.locator('#error-title').textContent(),
        message: await page.locator('#error-message').textContent(),
      },
    };
  }
  const header = await page.locator('#grid thead th').allTextContents();
  const rows = await page.locator('#grid tbody tr').evaluateAll((trs) =>
    trs.map((tr) => Array.from(tr.querySelectorAll('td')).slice(1).map((td) => td.textContent)),
  );
  return { header, rows, status: await page.locator('#status').textContent() };
}

/// Whether `page` shows the provider's login form.
export async function onLoginPage(page) {
  return page.url().startsWith(provider().issuer) && (await page.locator('form input[name="username"]').count()) > 0;
}

/// On the provider's login page: sign in as `user` with their password and
/// wait until the browser is back at `url` (the page it had asked for, on
/// the gateway) and that page has loaded. Returns the milliseconds from
/// submitting the form to that page's `load` (the sign-in round trip, no
/// typing) and the document's response.
export async function submitLogin(page, user, url) {
  if (!(await onLoginPage(page))) throw new Error(`not on the provider's login page: ${page.url()}`);
  await page.locator('input[name="username"]').fill(user);
  await page.locator('input[name="password"]').fill(password(user));
  const back = page.waitForResponse(
    (response) => response.url() === url && response.request().resourceType() === 'document' && !isRedirect(response),
    { timeout: 30_000 },
  );
  // A navigation that fails on the way back (say, a redirect to a port
  // nothing listens on) fails the sign-in at once, saying where.
  let failed;
  const failure = new Promise((_, reject) => {
    failed = (request) => {
      if (request.isNavigationRequest()) {
        reject(new Error(`signed in as ${user}, the browser did not get back to ${url}: ${request.url()} failed (${request.failure()?.errorText})`));
      }
    };
    page.on('requestfailed', failed);
  });
  back.catch(() => {});
  failure.catch(() => {});
  const submitted = Date.now();
  await page.locator('form button[type="submit"]').click();
  const response = await Promise.race([back, failure]).finally(() => page.off('requestfailed', failed));
  await page.waitForLoadState('load');
  return { ms: Date.now() - submitted, response };
}

/// Sign `context` in as `user` at the provider, through the gateway's own
/// sign-in on its API host: afterwards each view host signs the browser in
/// on its first visit without showing the form again (the provider
/// remembers the user), as for a person who has signed in once today.
export async function signInContext(context, user) {
  const page = await context.newPage();
  const url = gatewayUrl('/_api/me');
  await page.goto(url);
  const { response } = await submitLogin(page, user, url);
  const me = await response.json();
  if (me.user !== user) throw new Error(`signed in as ${me.user}, not ${user}`);
  await page.close();
}

export const isRedirect = (response) => response.status() >= 300 && response.status() < 400;
