// The hub's "New view" form, as ana meets it in Chromium: she browses only
// what she may read (sales/, never sales-private/), opens folders down to a
// file, adds it as a table, previews its first rows, sees the API's own
// errors beside the fields they concern (a bad name, a share with a group
// not entitled), creates the view, and finds it in her list. By keyboard,
// at 375 px, and axe-core finds nothing.

import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, test } from 'vitest';

import { axeViolations, launch, offlineContext, screenshot, submitLogin } from '../support/browser.js';
import { bearer, Views } from '../support/api.js';
import { artifacts, eventually, gatewayUrl, json, request, uniqueName } from '../support/gateway.js';

const hub = gatewayUrl('/');

/// The browser's entries (folders and files where it is).
const entry = (page, key) => page.locator(`#nv-entries li[data-key="${key}"]`);

describe('creating a view from the hub', () => {
  const anas = new Views('ana');
  const name = uniqueName();
  let browser;
  let context;
  let page;

  beforeAll(async () => {
    browser = await launch();
    context = await offlineContext(browser);
    anas.names.add(name); // deleted afterwards, however the test ends
  });

  afterAll(async () => {
    await browser?.close();
    await anas.deleteAll();
  });

  test('ana browses only what she may read, down to a file, adds it and previews its first rows', async () => {
    page = await context.newPage();
    await page.goto(hub);
    await submitLogin(page, 'ana', hub);
    await page.locator('#new-view-heading').waitFor();
    // Where she may start: her grant, nothing else.
    await entry(page, 'sales/').waitFor();
    const roots = await page.locator('#nv-entries li').evaluateAll((items) => items.map((i) => i.dataset.key));
    expect(roots).toEqual(['sales/']);
    await entry(page, 'sales/').getByRole('button', { name: 'Open folder lake/sales/' }).click();
    await entry(page, 'sales/region=eu/').waitFor();
    const regions = await page.locator('#nv-entries li').evaluateAll((items) => items.map((i) => i.dataset.key));
    expect(regions).toEqual([
      'sales/region=africa/',
      'sales/region=asia/',
      'sales/region=eu/',
      'sales/region=mideast/',
      'sales/region=us/',
    ]);
    await expect(page.locator('#nv-crumbs').textContent()).resolves.toContain('lake/sales/');
    await entry(page, 'sales/region=eu/').getByRole('button', { name: 'Open folder region=eu/' }).click();
    await entry(page, 'sales/region=eu/data_0.parquet').waitFor();
    await entry(page, 'sales/region=eu/data_0.parquet').getByRole('button', { name: /^Add as table: file/ }).click();
    const table = page.locator('#nv-tables li.table').first();
    await expect(table.locator('input').first().inputValue()).resolves.toBe('data_0');
    await expect(table.locator('input').nth(1).inputValue()).resolves.toBe('sales/region=eu/data_0.parquet');
    await expect(table.locator('select').inputValue()).resolves.toBe('parquet');
    await table.locator('input').first().fill('eu_orders');
    await table.getByRole('button', { name: 'Preview' }).click();
    await page.locator('#nv-preview table.grid tbody tr').first().waitFor();
    const header = await page.locator('#nv-preview thead th').evaluateAll((ths) => ths.map((th) => th.firstChild.textContent));
    expect(header[0]).toBe('order_key');
    expect(await page.locator('#nv-preview tbody tr').count()).toBe(20);
    await expect(page.locator('#nv-preview-about').textContent()).resolves.toMatch(
      /^Table eu_orders: the first 20 rows of lake\/sales\/region=eu\/data_0\.parquet\.$/,
    );
    await page.locator('#new-view').screenshot({ path: join(artifacts, 'create-preview.png') });
  });

  test('the API\'s errors appear beside their fields: a bad name, a group not entitled', async () => {
    await page.locator('#nv-name').fill('Not A Name!');
    await page.getByRole('button', { name: 'Create view' }).click();
    await page.locator('#nv-name-error:not([hidden])').waitFor();
    await expect(page.locator('#nv-name-error').textContent()).resolves.toMatch(/view name is a DNS label of 3 to 8 characters/);
    await expect(page.locator('#nv-name').getAttribute('aria-invalid')).resolves.toBe('true');
    // Focus goes to the field at fault, which names its error.
    await expect(page.evaluate(() => document.activeElement.id)).resolves.toBe('nv-name');
    await expect(page.locator('#nv-name').evaluate((input) => input.getAttribute('aria-describedby'))).resolves.toContain('nv-name-error');
    await screenshot(page, 'create-name-error.png');

    await page.locator('#nv-name').fill(name);
    await page.locator('#nv-groups').fill('finance');
    await page.getByRole('button', { name: 'Create view' }).click();
    await page.locator('#nv-groups-error:not([hidden])').waitFor();
    await expect(page.locator('#nv-groups-error').textContent()).resolves.toMatch(/group "finance" may not read lake\/sales\/region=eu\//);
    await expect(page.locator('#nv-name-error').isHidden()).resolves.toBe(true);
    const refused = await request(gatewayUrl(`/_api/views/${name}`), { headers: bearer('ana') });
    expect(refused.status).toBe(404); // nothing was created
  });

  test('she creates it and it appears in her list, with the table and share she chose', async () => {
    await page.locator('#nv-groups').fill('analysts');
    await page.getByRole('button', { name: 'Create view' }).click();
    const card = page.locator(`li.view[data-name="${name}"]`);
    await card.waitFor({ timeout: 15_000 });
    await expect(card.locator('.subsets').textContent()).resolves.toBe('lake/sales/region=eu/');
    await expect(card.locator('.shared').textContent()).resolves.toBe('group analysts');
    await eventually('the creation is announced', async () => (await page.locator('#nv-status').textContent()) === `View ${name} created`, 10_000);
    const view = await request(gatewayUrl(`/_api/views/${name}`), { headers: bearer('ana') });
    expect(view.status).toBe(200);
    const spec = json(view);
    expect(spec.subsets).toEqual([
      {
        bucket: 'lake',
        prefixes: ['sales/region=eu/'],
        tables: { eu_orders: { path: 'sales/region=eu/data_0.parquet', format: 'parquet' } },
        write: false,
      },
    ]);
    expect(spec.owner).toBe('ana');
    // The form is ready for the next view.
    expect(await page.locator('#nv-tables li').count()).toBe(0);
    await screenshot(page, 'create-done.png');
  });

  test('by keyboard: into a folder, add a folder as a table, preview it', async () => {
    await page.reload();
    await entry(page, 'sales/').waitFor();
    await entry(page, 'sales/').getByRole('button', { name: 'Open folder lake/sales/' }).focus();
    await page.keyboard.press('Enter');
    await entry(page, 'sales/region=us/').waitFor();
    // Focus moved into the folder's contents.
    await expect(page.evaluate(() => document.activeElement.closest('#nv-entries') !== null)).resolves.toBe(true);
    let label = '';
    for (let presses = 0; presses < 30 && label !== 'Add as table: folder region=us/'; presses += 1) {
      await page.keyboard.press('Tab');
      label = await page.evaluate(() => document.activeElement.getAttribute('aria-label') ?? '');
    }
    expect(label).toBe('Add as table: folder region=us/');
    await page.keyboard.press('Enter');
    // Focus is on the new table's name; the folder became a glob.
    await expect(page.evaluate(() => document.activeElement.value)).resolves.toBe('region_us');
    await expect(page.locator('#nv-tables li.table input').nth(1).inputValue()).resolves.toBe('sales/region=us/**/*.parquet');
    await page.keyboard.press('Tab'); // format
    await page.keyboard.press('Tab'); // path
    await page.keyboard.press('Tab'); // Preview
    await expect(page.evaluate(() => document.activeElement.textContent)).resolves.toBe('Preview');
    await page.keyboard.press('Enter');
    await page.locator('#nv-preview tbody tr').first().waitFor();
    await expect(page.locator('#nv-preview-about').textContent()).resolves.toContain('lake/sales/region=us/data_0.parquet');
  });

  test('fits a narrow screen, loads nothing from elsewhere, and axe-core finds no violation', async () => {
    await page.setViewportSize({ width: 375, height: 740 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    expect(overflow).toBe(0);
    await page.locator('#new-view').scrollIntoViewIfNeeded();
    await screenshot(page, 'create-narrow.png');
    expect(context.externalRequests).toEqual([]);

    const audit = await offlineContext(browser, { bypassCSP: true });
    const auditPage = await audit.newPage();
    await auditPage.goto(hub);
    await submitLogin(auditPage, 'ana', hub);
    await entry(auditPage, 'sales/').waitFor();
    await entry(auditPage, 'sales/').getByRole('button', { name: 'Open folder lake/sales/' }).click();
    await entry(auditPage, 'sales/region=eu/').getByRole('button', { name: /^Add as table: folder/ }).click();
    await auditPage.locator('#nv-tables li.table').getByRole('button', { name: 'Preview' }).click();
    await auditPage.locator('#nv-preview tbody tr').first().waitFor();
    await auditPage.locator('#nv-name').fill('X');
    await auditPage.getByRole('button', { name: 'Create view' }).click();
    await auditPage.locator('#nv-name-error:not([hidden])').waitFor();
    expect(await axeViolations(auditPage)).toEqual([]);
    await auditPage.setViewportSize({ width: 375, height: 740 });
    expect(await axeViolations(auditPage)).toEqual([]);
    await audit.close();
  });
});
