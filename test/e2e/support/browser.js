// Chromium for the suite: Debian's /usr/bin/chromium driven by playwright-core
// (no browser download). Chromium resolves *.localhost to loopback itself.

import { join } from 'node:path';

import { chromium } from 'playwright-core';

import { artifacts, port } from './gateway.js';

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // Root in CI: Chromium's sandbox needs user namespaces we may not have.
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
}

/// A browser context that may talk only to the gateway (our machines are
/// offline; a page that reaches elsewhere is a bug), recording what it refused.
export async function offlineContext(browser) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  context.externalRequests = [];
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    const local = url.hostname === 'localhost' || url.hostname.endsWith('.localhost');
    if ((local && Number(url.port) === port) || url.protocol === 'data:' || url.protocol === 'blob:') {
      return route.continue();
    }
    context.externalRequests.push(url.href);
    return route.abort();
  });
  return context;
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
