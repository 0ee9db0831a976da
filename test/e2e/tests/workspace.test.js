// A person's first visit: a view ana created through the API, opened by
// her in Chromium while it is cold (signed in at the provider already, so
// the view host signs her in without the form) → the progress page → the
// DuckDB workspace by itself → a query over the view's table shows the right
// rows; the schema browser shows its columns' types; a quick chart of rows
// per region; a Parquet download through the gateway holds exactly the rows
// (read back by DuckDB); the history keeps what ran; the page fits a 375 px
// screen; a query outside the view's subset is refused with a clear message.

import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, test } from 'vitest';

import { isRedirect, launch, offlineContext, runQuery, screenshot, signInContext } from '../support/browser.js';
import { Views } from '../support/api.js';
import { uniqueName, viewUrl } from '../support/gateway.js';
import { countRows, generatedRows, queryParquetFile } from '../support/lake.js';

describe('a view in the browser', () => {
  const views = new Views('ana');
  let browser;

  beforeAll(async () => {
    browser = await launch();
  });

  afterAll(async () => {
    await browser?.close();
    await views.deleteAll();
  });

  test('progress page, then the workspace; queries see the subset and only it', async () => {
    const name = uniqueName();
    // The whole sales sample, by region: one table over one prefix.
    const view = await views.create({
      name,
      subsets: [
        { bucket: 'lake', prefixes: ['sales/'], tables: { sales: { path: 'sales/**/*.parquet', format: 'parquet' } } },
      ],
    });
    expect(view.name).toBe(name);
    expect(view.status.phase).toBe('cold');

    // What the page must show, counted without the gateway: DuckDB on the
    // lake's files, cross-checked with the generator's own counts.
    const expectedAll = await countRows('sales/**/*.parquet');
    const expectedEu = await countRows('sales/region=eu/*.parquet');
    expect(expectedAll).toBe(generatedRows('sales/region='));
    expect(expectedEu).toBe(generatedRows('sales/region=eu/'));
    expect(expectedEu).toBeLessThan(10_000); // the page shows up to 10,000 rows

    const context = await offlineContext(browser);
    await signInContext(context, 'ana');
    const page = await context.newPage();
    const pageErrors = [];
    page.on('pageerror', (error) => pageErrors.push(String(error)));
    // The pages the view's host served (the sign-in's redirects apart).
    const documents = [];
    const redirects = [];
    page.on('response', (response) => {
      if (response.request().resourceType() !== 'document') return;
      if (isRedirect(response)) redirects.push(new URL(response.url()).origin);
      else documents.push(response.status());
    });

    // Cold: the browser gets the progress page at once (503 + HTML).
    const opened = Date.now();
    const response = await page.goto(viewUrl(name), { waitUntil: 'domcontentloaded' });
    expect(response.status()).toBe(503);
    expect(response.headers()['content-type']).toMatch(/^text\/html/);
    const progress = page.locator('main#page');
    await progress.waitFor({ timeout: 10_000 });
    expect(await progress.getAttribute('data-phase')).toBe('starting');
    await expect(page.title()).resolves.toContain(name);
    await screenshot(page, 'progress-page.png');

    // The page follows the start and reloads into the view by itself.
    await page.locator('#connection[data-state="ready"]').waitFor({ timeout: 120_000 });
    console.log(`[e2e] ${name}: progress page to workspace in ${((Date.now() - opened) / 1000).toFixed(1)} s`);
    expect(page.url()).toBe(viewUrl(name));
    expect(documents).toEqual([503, 200]);
    // The host signed her in through the provider, without its form.
    expect(redirects).toContain(new URL(viewUrl(name)).origin);
    await expect(page.locator('#view-name').textContent()).resolves.toBe(name);
    await page.locator('#catalog .table-entry[data-table="sales"]').waitFor();

    // A query over the subset's table: every row of one region.
    const eu = await runQuery(page, "SELECT * FROM sales WHERE region = 'eu' ORDER BY order_key");
    expect(eu.error).toBeUndefined();
    expect(eu.rows).toHaveLength(expectedEu);
    expect(eu.status).toMatch(new RegExp(`^${expectedEu} rows`));
    expect(new Set(eu.rows.map((row) => row[6]))).toEqual(new Set(['eu']));
    await screenshot(page, 'workspace.png');

    // And a count over the whole table.
    const all = await runQuery(page, 'SELECT count(*) AS n FROM sales');
    expect(all.rows).toEqual([[String(expectedAll)]]);

    // The schema browser: the table's columns, each with its type.
    const sales = page.locator('#catalog .table-entry[data-table="sales"]');
    await sales.locator('.toggle').click();
    const columns = await sales.locator('li[data-column]').evaluateAll((lis) =>
      lis.map((li) => [li.dataset.column, li.querySelector('.type').textContent]));
    expect(columns.map(([column]) => column)).toEqual(expect.arrayContaining(['order_key', 'region']));
    expect(columns.filter(([, type]) => !/^[A-Z]+/.test(type))).toEqual([]);
    await screenshot(page, 'workspace-schema.png');

    // A quick chart of the rows per region, described in text.
    const byRegion = await runQuery(page, 'SELECT region, count(*) AS n FROM sales GROUP BY region ORDER BY region');
    await page.locator('#tab-chart').click();
    await page.locator('#chart svg rect.bar').first().waitFor();
    expect(await page.locator('#chart svg rect.bar').count()).toBe(byRegion.rows.length);
    expect(await page.locator('#chart-caption').textContent()).toContain(`eu ${expectedEu.toLocaleString('en')}`);
    await screenshot(page, 'workspace-chart.png');
    await page.locator('#tab-table').click();

    // Parquet through the gateway: a download with the view's name, holding
    // every row of the region, as DuckDB reads the file.
    const euSql = "SELECT * FROM sales WHERE region = 'eu'";
    await page.locator('#sql').fill(euSql);
    const [download] = await Promise.all([page.waitForEvent('download'), page.locator('#download-parquet').click()]);
    expect(download.suggestedFilename()).toMatch(new RegExp(`^${name}-q-[0-9a-f]{16}\\.parquet$`));
    const file = join(mkdtempSync(join(tmpdir(), 'views-e2e-parquet-')), download.suggestedFilename());
    await download.saveAs(file);
    expect(await queryParquetFile(file, 'SELECT count(*), count(DISTINCT region), min(region) FROM t'))
      .toEqual([[expectedEu, 1, 'eu']]);

    // The history, newest first: the download, then the queries before it.
    await page.locator('#tab-history').click();
    const history = await page.locator('#history .history-sql').allTextContents();
    expect(history.slice(0, 2)).toEqual([euSql, 'SELECT region, count(*) AS n FROM sales GROUP BY region ORDER BY region']);
    expect(await page.locator('#history li').first().locator('.history-meta').textContent()).toContain('Parquet download');
    await screenshot(page, 'workspace-history.png');
    await page.locator('#tab-schema').click();

    // A phone: one column, no sideways scrolling.
    await page.setViewportSize({ width: 375, height: 740 });
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(375);
    await screenshot(page, 'workspace-narrow.png');
    await page.setViewportSize({ width: 1280, height: 800 });

    // Outside the subset: the sibling prefix next to sales/ is refused, with
    // the reason in the page.
    const refused = await runQuery(page, "SELECT count(*) FROM read_parquet('s3://lake/sales-private/customers.parquet')");
    expect(refused.error?.title).toBe('Not allowed in this view');
    expect(refused.error?.message).toMatch(/Permission Error/);
    expect(refused.error?.message).toContain('s3://lake/sales-private/customers.parquet');
    expect(refused.error?.message).toContain('s3://lake/sales/'); // what the view may read
    await screenshot(page, 'refused.png');

    // So is another part of the lake.
    const tpch = await runQuery(page, "SELECT count(*) FROM read_parquet('s3://lake/tpch/sf0.01/orders/*.parquet')");
    expect(tpch.error?.title).toBe('Not allowed in this view');

    expect((await views.api.get(name)).view.status.phase).toBe('ready');
    expect(context.externalRequests).toEqual([]);
    expect(pageErrors).toEqual([]);
    await context.close();
  });
});
