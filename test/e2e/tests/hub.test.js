// The hub, as a person meets it in Chromium: the gateway's own host signs
// them in and lists their views (and only theirs and those shared with
// them) with live status that changes without a reload: a view created
// meanwhile appears, a view started elsewhere turns Running. Stop and Delete work
// from the page; it is usable by keyboard and on a narrow screen; it loads
// nothing from anywhere else.

import { afterAll, beforeAll, describe, expect, test } from 'vitest';

import { axeViolations, launch, offlineContext, onLoginPage, screenshot, submitLogin } from '../support/browser.js';
import { bearer, Views } from '../support/api.js';
import { eventually, gatewayUrl, pods, request, uniqueName, viewUrl } from '../support/gateway.js';

const hub = gatewayUrl('/');

/// The view as the page lists it.
const card = (page, name) => page.locator(`li.view[data-name="${name}"]`);

/// What the page tells screen readers goes to `announced` (in the test), every
/// change: other views of the same person may change meanwhile too.
const announced = [];
const recordAnnouncements = (page) =>
  page.evaluate(() => {
    const announcer = document.querySelector('#announcer');
    new MutationObserver(() => window.recordAnnouncement(announcer.textContent)).observe(announcer, {
      childList: true,
      characterData: true,
      subtree: true,
    });
  });

describe('the hub', () => {
  const anas = new Views('ana');
  const bobs = new Views('bob');
  let browser;
  let context;
  let page;
  const mine = uniqueName();
  const later = uniqueName();
  const others = uniqueName();

  beforeAll(async () => {
    browser = await launch();
    context = await offlineContext(browser);
    await anas.create({ name: mine, subsets: [{ bucket: 'lake', prefixes: ['sales/'] }] });
    await bobs.create({ name: others, subsets: [{ bucket: 'lake', prefixes: ['tpch/'] }] });
  });

  afterAll(async () => {
    await browser?.close();
    await anas.deleteAll();
    await bobs.deleteAll();
  });

  test('signs ana in and lists her views, not bob\'s', async () => {
    page = await context.newPage();
    await page.goto(hub);
    expect(await onLoginPage(page)).toBe(true);
    const { response } = await submitLogin(page, 'ana', hub);
    expect(response.status()).toBe(200);
    expect(page.url()).toBe(hub);
    await expect(page.title()).resolves.toBe('Your views');
    await page.locator('#who').filter({ hasText: /^Signed in as ana \(analysts\)\.$/ }).waitFor();
    await card(page, mine).waitFor();
    await expect(card(page, mine).locator('.phase').textContent()).resolves.toBe('Stopped');
    await expect(card(page, mine).locator('.subsets').textContent()).resolves.toBe('lake/sales/');
    await expect(card(page, mine).locator('.open-button').getAttribute('href')).resolves.toBe(viewUrl(mine));
    // The demo view is hers too; bob's is nowhere on the page.
    await card(page, 'demo').waitFor();
    expect(await card(page, others).count()).toBe(0);
    await expect(page.locator('#grants').textContent()).resolves.toMatch(/Read: lake\/sales\//);
    await screenshot(page, 'hub-home.png');
  });

  test('live: a view created meanwhile appears, a started one turns Running, without a reload; Stop now ends its run', async () => {
    const loaded = await page.evaluate(() => performance.timeOrigin);
    await page.exposeFunction('recordAnnouncement', (text) => announced.push(text));
    await recordAnnouncements(page);
    await anas.create({ name: later, subsets: [{ bucket: 'lake', prefixes: ['sales/'] }] });
    await card(page, later).waitFor({ timeout: 15_000 });

    // Started by a program (held until it serves): the page follows.
    const started = await request(viewUrl(later, '/api/catalog'), { headers: { accept: 'application/json', ...bearer('ana') } });
    expect(started.status).toBe(200);
    await page.locator(`li.view[data-name="${later}"][data-phase="ready"]`).waitFor({ timeout: 15_000 });
    await expect(card(page, later).locator('.phase').textContent()).resolves.toBe('Running');
    // The idle reaper records activity every IDLE_CHECK_SECONDS.
    await card(page, later).locator('.idle-fact:not([hidden])').waitFor({ timeout: 30_000 });
    await expect(card(page, later).locator('.idle').textContent()).resolves.toMatch(/^in \d+ (min|s)/);
    await expect(card(page, later).locator('.deadline').textContent()).resolves.toMatch(/^in (\d+ h )?\d+ min/);
    await eventually('the start is announced', async () => announced.includes(`${later}: Running`), 10_000);
    await expect(card(page, later).locator('button.stop').isVisible()).resolves.toBe(true);
    await screenshot(page, 'hub-live.png');

    // Stop now: the run ends (its pods go), the view stays, Stopped.
    await card(page, later).locator('button.stop').click();
    await page.locator(`li.view[data-name="${later}"][data-phase="cold"]`).waitFor({ timeout: 30_000 });
    await eventually('the stop is announced', async () => announced.includes(`${later} stopped`), 10_000);
    await eventually(`the pods of ${later} are gone`, async () => (await pods(later)).length === 0, 60_000);
    expect(await card(page, later).locator('button.stop').isHidden()).toBe(true);
    // Still the same document: nothing reloaded it.
    expect(await page.evaluate(() => performance.timeOrigin)).toBe(loaded);
  });

  test('by keyboard: the skip link, then each view\'s Open and Delete; delete asks and removes it', async () => {
    // From the top of a freshly loaded page, as a keyboard user arrives.
    await page.reload();
    await card(page, later).waitFor();
    await recordAnnouncements(page);
    await page.keyboard.press('Tab');
    await expect(page.evaluate(() => document.activeElement.textContent)).resolves.toBe('Skip to your views');
    // Tab to the Delete button of `later`, the way a keyboard user would.
    let label = '';
    for (let presses = 0; presses < 40 && label !== `Delete ${later}`; presses += 1) {
      await page.keyboard.press('Tab');
      label = await page.evaluate(() => document.activeElement.getAttribute('aria-label') ?? '');
    }
    expect(label).toBe(`Delete ${later}`);
    // It asks first, in a dialog that opens on Cancel: Tab to the action.
    await page.keyboard.press('Enter');
    await page.locator('dialog#confirm[open]').waitFor();
    await expect(page.evaluate(() => document.activeElement.textContent)).resolves.toBe('Cancel');
    await page.keyboard.press('Tab');
    await expect(page.evaluate(() => document.activeElement.textContent)).resolves.toBe(`Delete ${later}`);
    await page.keyboard.press('Enter');
    await eventually(`${later} leaves the page`, async () => (await card(page, later).count()) === 0, 30_000);
    await eventually('the deletion is announced', async () => announced.includes(`${later} deleted`), 10_000);
    const gone = await request(gatewayUrl(`/_api/views/${later}`), { headers: bearer('ana') });
    expect(gone.status).toBe(404);
  });

  test('fits a narrow screen, and loaded nothing from elsewhere', async () => {
    await page.setViewportSize({ width: 375, height: 740 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    expect(overflow).toBe(0);
    await screenshot(page, 'hub-narrow.png');
    expect(context.externalRequests).toEqual([]);
  });

  test('axe-core finds no WCAG 2.1 A/AA or best-practice violation, wide or narrow', async () => {
    const audit = await offlineContext(browser, { bypassCSP: true });
    const auditPage = await audit.newPage();
    await auditPage.goto(hub);
    await submitLogin(auditPage, 'ana', hub);
    await card(auditPage, mine).waitFor();
    await auditPage.locator('#who').filter({ hasText: /^Signed in as ana/ }).waitFor();
    expect(await axeViolations(auditPage)).toEqual([]);
    await auditPage.setViewportSize({ width: 375, height: 740 });
    expect(await axeViolations(auditPage)).toEqual([]);
    await audit.close();
  });

  test('bob\'s hub lists his view, not ana\'s', async () => {
    const bobContext = await offlineContext(browser);
    const bobPage = await bobContext.newPage();
    await bobPage.goto(hub);
    await submitLogin(bobPage, 'bob', hub);
    await card(bobPage, others).waitFor();
    expect(await card(bobPage, mine).count()).toBe(0);
    expect(await card(bobPage, 'demo').count()).toBe(0);
    await bobContext.close();
  });
});
