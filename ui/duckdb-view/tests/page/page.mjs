// Drives duckdb-view's page like a person would, in Chromium:
// the catalog shows the tables, a typed query runs and shows rows, the CSV
// download holds every row, a bad query shows DuckDB's error, a running query
// can be cancelled. The page must not try to load anything from any other
// origin (our machines are offline), nor log errors.
//
//   node page.mjs <view base URL> <output dir>
//
// Env: CHROMIUM (default /usr/bin/chromium). Writes page.png, error.png and
// the downloaded CSV to the output dir; prints one JSON line with what it
// saw; exits non-zero on the first failed expectation.

import { chromium } from 'playwright-core';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const [base, outDir] = process.argv.slice(2);
if (!base || !outDir) {
  console.error('usage: node page.mjs <base URL> <output dir>');
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });

function expect(condition, message) {
  if (!condition) throw new Error('expectation failed: ' + message);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // Root in CI: Chromium's sandbox needs user namespaces we may not have.
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
const seen = { externalRequests: [], consoleErrors: [] };
try {
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 800 } });
  // Offline means offline: anything not from the view is refused and noted.
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(base) || url.startsWith('data:') || url.startsWith('blob:')) return route.continue();
    seen.externalRequests.push(url);
    return route.abort();
  });
  const page = await context.newPage();
  page.on('console', (message) => {
    if (message.type() === 'error') seen.consoleErrors.push(message.text());
  });
  page.on('pageerror', (error) => seen.consoleErrors.push(String(error)));

  await page.goto(base + '/');
  await page.locator('#connection[data-state="ready"]').waitFor({ timeout: 20000 });
  // The catalog lists the view's tables; clicking one writes a query for it.
  const tables = await page.locator('#catalog details[data-table] summary button').allTextContents();
  seen.tables = tables;
  expect(tables.includes('orders'), 'catalog lists orders: ' + tables.join(', '));
  await page.locator('#catalog details[data-table="orders"] summary button').click();
  expect((await page.locator('#sql').inputValue()).startsWith('SELECT * FROM orders'), 'clicking a table writes a query');

  // Type a query, run it with the keyboard, see rows.
  await page.locator('#sql').fill('SELECT region, count(*) AS n\nFROM orders\nGROUP BY region\nORDER BY region');
  await page.locator('#sql').press('Control+Enter');
  await page.locator('#grid tbody tr').nth(3).waitFor({ timeout: 20000 });
  const rows = await page.locator('#grid tbody tr').count();
  const firstRow = await page.locator('#grid tbody tr').first().locator('td').allTextContents();
  seen.rows = rows;
  seen.firstRow = firstRow;
  expect(rows === 4, 'four regions, got ' + rows);
  expect(firstRow[1] === 'east' && firstRow[2] === '333', 'first row is east/333: ' + firstRow.join('|'));
  seen.status = await page.locator('#status').textContent();
  expect(/4 rows/.test(seen.status), 'status says 4 rows: ' + seen.status);
  await page.screenshot({ path: join(outDir, 'page.png'), fullPage: true });

  // Download the result as CSV: all rows, with a header.
  const [download] = await Promise.all([page.waitForEvent('download'), page.locator('#download').click()]);
  const csvPath = join(outDir, download.suggestedFilename());
  await download.saveAs(csvPath);
  const csv = readFileSync(csvPath, 'utf8').trim().split('\n');
  seen.csvFile = download.suggestedFilename();
  seen.csvLines = csv.length;
  expect(csv[0] === 'region,n', 'CSV header: ' + csv[0]);
  expect(csv.length === 5, 'CSV has header + 4 rows, got ' + csv.length);

  // A bad query shows DuckDB's message.
  await page.locator('#sql').fill('SELEC 1');
  await page.locator('#run').click();
  await page.locator('#error:not([hidden])').waitFor({ timeout: 10000 });
  seen.errorTitle = await page.locator('#error-title').textContent();
  seen.errorMessage = await page.locator('#error-message').textContent();
  expect(/Parser Error/.test(seen.errorMessage), 'shows the parser error: ' + seen.errorMessage);
  await page.screenshot({ path: join(outDir, 'error.png') });

  // Cancel a query that would run forever.
  await page.locator('#sql').fill('SELECT sum(hash(i)) FROM range(1000000000000) t(i)');
  await page.locator('#run').click();
  await page.locator('#cancel:not([disabled])').waitFor({ timeout: 10000 });
  await page.waitForTimeout(300);
  await page.locator('#cancel').click();
  await page.locator('#run:not([disabled])').waitFor({ timeout: 10000 });
  seen.cancelTitle = await page.locator('#error-title').textContent();
  expect(seen.cancelTitle === 'Cancelled', 'cancel shows Cancelled: ' + seen.cancelTitle);

  expect(seen.externalRequests.length === 0, 'no external requests: ' + seen.externalRequests.join(', '));
  expect(seen.consoleErrors.every((e) => /status of 4\d\d/.test(e)),
    'no console errors except the expected 4xx answers: ' + seen.consoleErrors.join(' | '));
  console.log(JSON.stringify({ ok: true, ...seen }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: String(error), ...seen }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
