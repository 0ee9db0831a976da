// A view's run, as people act on it in Chromium: in the hub, ana extends her
// running view's deadline and restarts it behind a confirmation dialog she
// works from the keyboard (Escape cancels, Enter on the action confirms);
// ada, an administrator, sees every view with its owner, how long it has run
// and what it requests, and stops ana's; inside a view whose deadline is
// near, a banner says so and extends it. Screenshots: runs-*.png.

import { afterAll, beforeAll, describe, expect, test } from 'vitest';

import { axeViolations, launch, offlineContext, onLoginPage, screenshot, signInContext, submitLogin } from '../support/browser.js';
import { bearer, Views } from '../support/api.js';
import { eventually, gatewayUrl, json, request, uniqueName, viewUrl } from '../support/gateway.js';

const hub = gatewayUrl('/');
const card = (page, name) => page.locator(`li.view[data-name="${name}"]`);
const sales = [{ bucket: 'lake', prefixes: ['sales/'] }];

/// The view as ana's API sees it now.
async function view(name) {
  const response = await request(gatewayUrl(`/_api/views/${name}`), { headers: bearer('ana') });
  expect(response.status).toBe(200);
  return json(response);
}

/// Start `name` as ana through its host (held until it serves).
async function start(name) {
  const started = await request(viewUrl(name, '/api/catalog'), { headers: { accept: 'application/json', ...bearer('ana') } });
  expect(started.status).toBe(200);
  return view(name);
}

/// Sign `user` in on the hub in a fresh context; the page, listing `name`.
/// (CSP bypassed only so that axe-core's script can be injected.)
async function hubAs(browser, user, name) {
  const context = await offlineContext(browser, { bypassCSP: true });
  const page = await context.newPage();
  await page.goto(hub);
  expect(await onLoginPage(page)).toBe(true);
  await submitLogin(page, user, hub);
  await card(page, name).waitFor();
  return { context, page };
}

describe('runs', () => {
  const anas = new Views('ana');
  let browser;
  const running = uniqueName();
  const ending = uniqueName();
  const idle = uniqueName();

  beforeAll(async () => {
    browser = await launch();
    await anas.create({ name: running, subsets: sales });
    // A minute's deadline: the banner's warning window (STOP_WARNING_SECONDS,
    // 300 s by default) has begun as soon as it runs.
    await anas.create({ name: ending, subsets: sales, deadlineSeconds: 60 });
    // Stopped after a minute without requests: its idle stop is always near.
    await anas.create({ name: idle, subsets: sales, idleTimeoutSeconds: 60 });
  });

  afterAll(async () => {
    await browser?.close();
    await anas.deleteAll();
  });

  test('the hub extends a running view\'s deadline, and restarts it after a confirmation made by keyboard', async () => {
    const before = await start(running);
    const { context, page } = await hubAs(browser, 'ana', running);
    const pageErrors = [];
    page.on('pageerror', (error) => pageErrors.push(String(error)));
    page.on('console', (message) => message.type() === 'error' && pageErrors.push(message.text()));
    await page.locator(`li.view[data-name="${running}"][data-phase="ready"]`).waitFor({ timeout: 15_000 });
    const item = card(page, running);
    await expect(item.locator('.ran').textContent()).resolves.toMatch(/^\d+ (s|min)$/);
    await expect(item.locator('button.extend').textContent()).resolves.toBe('Extend +1 h');

    // Extend: the run's deadline moves an hour later.
    await item.locator('button.extend').click();
    await eventually('the deadline moved an hour', async () => {
      const after = await view(running);
      return Date.parse(after.status.deadline) - Date.parse(before.status.deadline) === 3_600_000;
    }, 15_000);
    await page.locator('#announcer').filter({ hasText: `${running}: deadline extended by 1 h` }).waitFor();

    // Restart, by keyboard: the dialog opens on Cancel; Escape cancels and
    // nothing happens; the action button restarts.
    await item.locator('button.restart').focus();
    await page.keyboard.press('Enter');
    const dialog = page.locator('dialog#confirm[open]');
    await dialog.waitFor();
    await expect(page.evaluate(() => document.activeElement.textContent)).resolves.toBe('Cancel');
    await expect(dialog.locator('#confirm-title').textContent()).resolves.toBe(`Restart ${running}?`);
    await screenshot(page, 'runs-restart-dialog.png');
    expect(await axeViolations(page)).toEqual([]);
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'detached' });
    // Focus is back on the button that opened it.
    await expect(page.evaluate(() => document.activeElement.getAttribute('aria-label'))).resolves.toBe(`Restart ${running}`);
    expect((await view(running)).status.startedAt).toBe(before.status.startedAt);

    await page.keyboard.press('Enter');
    await dialog.waitFor();
    await page.keyboard.press('Tab');
    await expect(page.evaluate(() => document.activeElement.textContent)).resolves.toBe(`Restart ${running}`);
    await page.keyboard.press('Enter');
    await dialog.waitFor({ state: 'detached' });
    await page.locator('#announcer').filter({ hasText: `${running} restarting` }).waitFor({ timeout: 30_000 }).catch(async (error) => {
      throw new Error(`${error.message}; the page says: ${await page.locator('#problem').textContent()}; errors: ${pageErrors}`);
    });
    await eventually('a new run started', async () => {
      const after = await view(running);
      return after.status.startedAt && after.status.startedAt !== before.status.startedAt;
    }, 30_000);
    await page.locator(`li.view[data-name="${running}"][data-phase="ready"]`).waitFor({ timeout: 30_000 });
    await context.close();
  });

  test('an administrator sees every view with its owner, run time and requests, and stops ana\'s', async () => {
    await start(running);
    const { context, page } = await hubAs(browser, 'ada', running);
    const item = page.locator(`li.view[data-name="${running}"][data-phase="ready"]`);
    await item.waitFor({ timeout: 15_000 });
    await expect(item.locator('.owner').textContent()).resolves.toBe('ana');
    await expect(item.locator('.ran').textContent()).resolves.toMatch(/^\d+ (s|min)$/);
    await expect(item.locator('.requests').textContent()).resolves.toMatch(/^\S+ CPU, \S+ memory$/);
    await expect(page.locator('#who').textContent()).resolves.toMatch(/administrator/);
    await item.scrollIntoViewIfNeeded();
    await screenshot(page, 'runs-admin.png');
    expect(await axeViolations(page)).toEqual([]);
    await item.locator('button.stop').click();
    await page.locator(`li.view[data-name="${running}"][data-phase="cold"]`).waitFor({ timeout: 30_000 });
    expect((await view(running)).status.phase).toBe('cold');
    await context.close();
  });

  test('inside a view, a banner warns before its deadline and extends it', async () => {
    const context = await offlineContext(browser, { bypassCSP: true });
    await signInContext(context, 'ana');
    const page = await context.newPage();
    await page.goto(viewUrl(ending));
    await page.locator('#connection[data-state="ready"]').waitFor({ timeout: 60_000 });
    const banner = page.locator('#stop-banner:not([hidden])');
    await banner.waitFor({ timeout: 15_000 });
    await expect(page.locator('#stop-banner-text').textContent()).resolves.toMatch(/^This view stops in \d+ (s|min), at .+: its run reaches its deadline\.$/);
    await screenshot(page, 'runs-banner.png');
    expect(await axeViolations(page)).toEqual([]);
    const before = await view(ending);

    // By keyboard: the banner's button comes right after the skip link.
    await page.keyboard.press('Tab');
    await page.keyboard.press('Tab');
    await expect(page.evaluate(() => document.activeElement.textContent)).resolves.toBe('Extend by 1 h');
    await page.keyboard.press('Enter');
    await page.locator('#stop-banner').waitFor({ state: 'hidden' });
    await page.locator('#stop-banner-done').filter({ hasText: /^Extended by 1 h\.$/ }).waitFor();
    const after = await view(ending);
    expect(Date.parse(after.status.deadline) - Date.parse(before.status.deadline)).toBe(3_600_000);
    await context.close();
  });

  test('inside an idle view, the banner warns of the idle stop, and Keep it running counts as activity', async () => {
    const context = await offlineContext(browser);
    await signInContext(context, 'ana');
    const page = await context.newPage();
    await page.goto(viewUrl(idle));
    await page.locator('#connection[data-state="ready"]').waitFor({ timeout: 60_000 });
    await page.locator('#stop-banner:not([hidden])').waitFor({ timeout: 15_000 });
    await expect(page.locator('#stop-banner-text').textContent()).resolves.toMatch(/^This view stops in \d+ (s|min) if nobody uses it: it is idle\.$/);
    expect(await page.locator('#stop-banner-extend').isHidden()).toBe(true);
    const clicked = Date.now();
    await page.locator('#stop-banner-keep').click();
    await page.locator('#stop-banner-done').filter({ hasText: /^Kept running: the idle time starts again\.$/ }).waitFor();
    // The gateway's idle check saw the request and recorded it on the view.
    await eventually('the activity is recorded', async () => Date.parse((await view(idle)).status.lastActivity ?? '') >= clicked - 1000, 30_000);
    expect((await view(idle)).status.phase).toBe('ready');
    await screenshot(page, 'runs-banner-idle.png');
    await context.close();
  });
});
