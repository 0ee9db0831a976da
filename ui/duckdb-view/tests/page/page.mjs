// Drives duckdb-view's page like a person would, in Chromium: the schema
// browser shows the tables with their columns' types and inserts names at the
// cursor, and follows a CREATE TABLE; a typed query runs and shows rows; the
// quick chart draws them (bar and line) with a text alternative; the CSV and
// Parquet downloads hold every row; the history keeps what ran (bounded, per
// view, re-run, clear, kept across a reload); a bad query shows DuckDB's
// error; a running query can be cancelled; everything works with the keyboard
// alone; a 375 px wide screen gets one column without sideways scrolling;
// text meets WCAG AA contrast; axe-core finds no WCAG 2.1 A/AA violation (nor
// best-practice one) with the result, the chart, the history and the narrow
// layout shown. The page must not try to load anything from any other origin
// (our machines are offline), nor log errors.
//
//   node page.mjs <view base URL> <output dir>
//
// Env: CHROMIUM (default /usr/bin/chromium). Writes screenshots (page,
// schema, chart, chart-line, history, keyboard, error, narrow,
// narrow-chart .png) and the downloads to the output dir; prints one JSON
// line with what it saw; exits non-zero on the first failed expectation.

import { chromium } from 'playwright-core';
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

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

// `audit`: a context where axe-core's script may be injected (it bypasses
// the page's Content-Security-Policy, so only the axe audit uses it).
async function newPage(viewport, audit = false) {
  const context = await browser.newContext({ acceptDownloads: true, viewport, bypassCSP: audit });
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
  return page;
}

async function run(page, sql) {
  await page.locator('#sql').fill(sql);
  await page.locator('#run').click();
  await page.locator('#run:not([disabled])').waitFor({ timeout: 20000 });
}

const gridRows = (page) => page.locator('#grid tbody tr').evaluateAll((trs) =>
  trs.map((tr) => Array.from(tr.querySelectorAll('td')).slice(1).map((td) => td.textContent)));

// The focused element, and whether it shows a focus indicator.
const focused = (page) => page.evaluate(() => {
  const e = document.activeElement;
  const style = getComputedStyle(e);
  return {
    id: e.id, text: (e.getAttribute('aria-label') || e.textContent || '').trim().slice(0, 60), tag: e.tagName,
    outline: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2,
  };
});

async function tabUntil(page, test, what, max = 40, key = 'Tab') {
  for (let i = 0; i < max; i++) {
    await page.keyboard.press(key);
    const now = await focused(page);
    if (test(now)) return now;
  }
  throw new Error('expectation failed: Tab never reached ' + what);
}

const download = async (page, button) => {
  const [file] = await Promise.all([page.waitForEvent('download'), page.locator(button).click()]);
  const path = join(outDir, file.suggestedFilename());
  await file.saveAs(path);
  return { name: file.suggestedFilename(), bytes: readFileSync(path) };
};

// WCAG AA contrast of every visible text on the page (not SVG, not disabled
// controls): the text colour against the first opaque background behind it.
const contrastFailures = (page) => page.evaluate(() => {
  const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (e) => {
    for (let n = e; n; n = n.parentElement) {
      const c = rgb(getComputedStyle(n).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.9)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const failures = [];
  for (const e of document.querySelectorAll('body *')) {
    if (e.closest('svg') || e.disabled || e.closest('[hidden]')) continue;
    const text = Array.from(e.childNodes).filter((n) => n.nodeType === 3).map((n) => n.textContent.trim()).join('');
    if (!text || !e.getClientRects().length) continue;
    const style = getComputedStyle(e);
    if (style.visibility === 'hidden' || style.clip === 'rect(0px, 0px, 0px, 0px)') continue;
    const a = lum(rgb(style.color).slice(0, 3));
    const b = lum(background(e));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const large = parseFloat(style.fontSize) >= 24 || (parseFloat(style.fontSize) >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) failures.push(text.slice(0, 30) + ' ' + ratio.toFixed(2));
  }
  return failures;
});

// axe-core's WCAG 2.1 A/AA and best-practice rules on the page as it is:
// the violations, as "rule: selector" strings.
async function axe(page, state) {
  if (!(await page.evaluate(() => 'axe' in window))) await page.addScriptTag({ content: axeSource });
  const result = await page.evaluate(() => window.axe.run(document, {
    runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] },
  }));
  seen.axeRulesPassed = (seen.axeRulesPassed || 0) + result.passes.length;
  return result.violations.flatMap((v) => v.nodes.map((n) => state + ': ' + v.id + ' ' + n.target.join(' ')));
}

try {
  const page = await newPage({ width: 1280, height: 800 });

  // ---- schema browser: tables, columns with types, names at the cursor ----
  const tables = await page.locator('#catalog .table-entry').evaluateAll((es) => es.map((e) => e.dataset.table));
  seen.tables = tables;
  expect(tables.includes('orders'), 'the schema lists orders: ' + tables.join(', '));
  const orders = page.locator('#catalog .table-entry[data-table="orders"]');
  expect(await orders.locator('.columns').isHidden(), 'columns start folded');
  await orders.locator('.toggle').click();
  expect(await orders.locator('.toggle').getAttribute('aria-expanded') === 'true', 'the toggle says expanded');
  seen.orderColumns = await orders.locator('li').evaluateAll((lis) =>
    lis.map((li) => li.querySelector('.name').textContent + ' ' + li.querySelector('.type').textContent));
  expect(seen.orderColumns[0] === 'o_id BIGINT' && seen.orderColumns[2] === 'region VARCHAR',
    'columns with their types: ' + seen.orderColumns.join(', '));
  await page.locator('#sql').fill('SELECT ');
  await orders.locator('li[data-column="region"] .name').click();
  await page.locator('#sql').press('End');
  await page.locator('#sql').pressSequentially(', count(*) AS n FROM');
  await orders.locator('.table-line .name').click();
  seen.built = await page.locator('#sql').inputValue();
  expect(seen.built === 'SELECT region, count(*) AS n FROM orders', 'names go in at the cursor: ' + seen.built);
  await orders.locator('.query').click();
  expect((await page.locator('#sql').inputValue()).startsWith('SELECT * FROM orders'), 'Query writes a SELECT');
  // The filter finds tables by a column's name and shows that column.
  await page.locator('#schema-filter').fill('c_id');
  seen.filtered = await page.locator('#catalog .table-entry:visible').evaluateAll((es) => es.map((e) => e.dataset.table));
  expect(seen.filtered.join() === 'customers', 'filtering by c_id leaves customers: ' + seen.filtered.join());
  await page.screenshot({ path: join(outDir, 'schema.png') });
  await page.locator('#schema-filter').fill('');

  // ---- a query, its rows ----
  await page.locator('#sql').fill('SELECT region, count(*) AS n\nFROM orders\nGROUP BY region\nORDER BY region');
  await page.locator('#sql').press('Control+Enter');
  await page.locator('#grid tbody tr').nth(3).waitFor({ timeout: 20000 });
  const rows = await gridRows(page);
  seen.rows = rows.length;
  seen.firstRow = rows[0];
  expect(rows.length === 4, 'four regions, got ' + rows.length);
  expect(rows[0][0] === 'east' && rows[0][1] === '333', 'first row is east/333: ' + rows[0].join('|'));
  seen.status = await page.locator('#status').textContent();
  expect(/4 rows/.test(seen.status), 'status says 4 rows: ' + seen.status);
  await page.screenshot({ path: join(outDir, 'page.png'), fullPage: true });

  // ---- the quick chart ----
  await page.locator('#tab-chart').click();
  await page.locator('#chart svg').waitFor();
  seen.chartBars = await page.locator('#chart svg rect.bar').count();
  seen.chartCaption = await page.locator('#chart-caption').textContent();
  seen.chartLabel = await page.locator('#chart svg').evaluate((svg) =>
    svg.getAttribute('aria-labelledby').split(' ').map((id) => document.getElementById(id).textContent).join(' | '));
  expect(seen.chartBars === 4, 'four bars, got ' + seen.chartBars);
  expect(seen.chartCaption === 'Bar chart of n by region, 4 bars: east 333, north 334, south 333, west 500.',
    'the caption says what the chart shows: ' + seen.chartCaption);
  expect(seen.chartLabel.includes('west 500'), 'the SVG is labelled with its text: ' + seen.chartLabel);
  const heights = await page.locator('#chart svg rect.bar').evaluateAll((rs) => rs.map((r) => Number(r.getAttribute('height'))));
  expect(heights[3] === Math.max(...heights) && heights[3] > heights[0], 'west has the tallest bar: ' + heights.join());
  await page.screenshot({ path: join(outDir, 'chart.png') });
  await page.locator('#chart-kind').selectOption('line');
  await page.locator('#chart svg path.line').waitFor();
  seen.lineDots = await page.locator('#chart svg circle.dot').count();
  expect(seen.lineDots === 4, 'a line through four points, got ' + seen.lineDots);
  await run(page, 'SELECT i AS x, i * i AS square FROM range(1, 51) t(i)');
  seen.squareCaption = await page.locator('#chart-caption').textContent();
  expect(/^Line chart of square by x, 50 points\. Lowest 1 at 1, highest 2,500 at 50\.$/.test(seen.squareCaption),
    'an all-numeric result charts the second column against the first: ' + seen.squareCaption);
  await page.screenshot({ path: join(outDir, 'chart-line.png') });
  await page.locator('#tab-table').click();

  // ---- downloads: CSV and Parquet, every row ----
  await page.locator('#sql').fill('SELECT region, count(*) AS n\nFROM orders\nGROUP BY region\nORDER BY region');
  const csv = await download(page, '#download');
  const csvLines = csv.bytes.toString('utf8').trim().split('\n');
  seen.csvFile = csv.name;
  seen.csvLines = csvLines.length;
  expect(csvLines[0] === 'region,n', 'CSV header: ' + csvLines[0]);
  expect(csvLines.length === 5, 'CSV has header + 4 rows, got ' + csvLines.length);
  await page.locator('#sql').fill('SELECT * FROM orders');
  const parquet = await download(page, '#download-parquet');
  seen.parquetFile = parquet.name;
  seen.parquetBytes = parquet.bytes.length;
  expect(/^test-q-[0-9a-f]{16}\.parquet$/.test(parquet.name), 'a Parquet file name: ' + parquet.name);
  expect(parquet.bytes.subarray(0, 4).toString() === 'PAR1' && parquet.bytes.subarray(-4).toString() === 'PAR1',
    'a whole Parquet file (PAR1 … PAR1)');
  seen.downloadStatus = await page.locator('#status').textContent();
  expect(seen.downloadStatus.startsWith('Downloaded ' + parquet.name), 'the status names the file: ' + seen.downloadStatus);
  // A type Parquet lacks is refused with the reason.
  await page.locator('#sql').fill('SELECT INTERVAL 1 DAY AS span');
  await page.locator('#download-parquet').click();
  await page.locator('#error:not([hidden])').waitFor({ timeout: 10000 });
  seen.parquetRefused = await page.locator('#error-message').textContent();
  expect(/"span" is INTERVAL/.test(seen.parquetRefused), 'says which column: ' + seen.parquetRefused);

  // ---- history: newest first, edit, re-run, kept across a reload, bounded, cleared ----
  await page.locator('#tab-history').click();
  const history = page.locator('#history li');
  seen.history = await history.locator('.history-sql').allTextContents();
  expect(seen.history[0] === 'SELECT INTERVAL 1 DAY AS span' && seen.history[1] === 'SELECT * FROM orders',
    'newest first: ' + seen.history.slice(0, 3).join(' / '));
  expect(/Parquet download · Not possible in this format/.test(await history.first().locator('.history-meta').textContent()),
    'a failed entry says why');
  const squareEntry = history.filter({ hasText: 'i * i AS square' });
  expect(/50 rows/.test(await squareEntry.locator('.history-meta').textContent()), 'an entry says how many rows');
  await squareEntry.getByRole('button', { name: /^Edit/ }).click();
  expect(await page.locator('#sql').inputValue() === 'SELECT i AS x, i * i AS square FROM range(1, 51) t(i)', 'Edit puts it back');
  await history.filter({ hasText: 'GROUP BY region' }).getByRole('button', { name: /^Run/ }).click();
  await page.locator('#run:not([disabled])').waitFor();
  await page.locator('#grid tbody tr').nth(3).waitFor();
  expect((await history.first().locator('.history-sql').textContent()).includes('GROUP BY region'), 'a re-run moves to the top');
  await page.screenshot({ path: join(outDir, 'history.png') });
  seen.historyKeys = await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('duckdb-view:history:')));
  expect(seen.historyKeys.length === 1 && seen.historyKeys[0].includes(new URL(base).host), 'one history, keyed by the view host: ' + seen.historyKeys);
  const kept = await history.count();
  await page.reload();
  await page.locator('#connection[data-state="ready"]').waitFor();
  await page.locator('#tab-history').click();
  expect(await history.count() === kept, 'the history survives a reload');
  // Bounded: 150 entries stored (an old page, another tab) → 100 kept.
  await page.evaluate((key) => {
    const many = Array.from({ length: 150 }, (_, i) => ({ sql: 'SELECT ' + i, at: Date.now() - i, rows: 1 }));
    localStorage.setItem(key, JSON.stringify(many));
  }, seen.historyKeys[0]);
  await run(page, 'SELECT 42 AS answer');
  seen.historyBounded = await history.count();
  expect(seen.historyBounded === 100, 'the history holds 100 entries, got ' + seen.historyBounded);
  await page.locator('#clear-history').click();
  expect(await history.count() === 0, 'Clear empties it');
  expect(await page.evaluate((key) => localStorage.getItem(key), seen.historyKeys[0]) === null, 'and the stored copy');
  await page.locator('#tab-schema').click();

  // ---- the workspace's own tables join the schema when created ----
  await run(page, 'CREATE TABLE top_regions AS SELECT region, count(*) AS n FROM orders GROUP BY region');
  const created = page.locator('#catalog .table-entry[data-table="top_regions"]');
  await created.waitFor({ timeout: 10000 });
  await created.locator('.toggle').click();
  seen.createdColumns = await created.locator('li[data-column]').evaluateAll((lis) =>
    lis.map((li) => li.dataset.column + ' ' + li.querySelector('.type').textContent));
  expect(seen.createdColumns.join() === 'region VARCHAR,n BIGINT', 'a created table with its columns: ' + seen.createdColumns);

  // ---- errors and cancel ----
  await page.locator('#sql').fill('SELEC 1');
  await page.locator('#run').click();
  await page.locator('#error:not([hidden])').waitFor({ timeout: 10000 });
  seen.errorTitle = await page.locator('#error-title').textContent();
  seen.errorMessage = await page.locator('#error-message').textContent();
  expect(/Parser Error/.test(seen.errorMessage), 'shows the parser error: ' + seen.errorMessage);
  await page.screenshot({ path: join(outDir, 'error.png') });
  await page.locator('#sql').fill('SELECT sum(hash(i)) FROM range(1000000000000) t(i)');
  await page.locator('#run').click();
  await page.locator('#cancel:not([disabled])').waitFor({ timeout: 10000 });
  await page.locator('#cancel').click();
  await page.locator('#run:not([disabled])').waitFor({ timeout: 10000 });
  seen.cancelTitle = await page.locator('#error-title').textContent();
  expect(seen.cancelTitle === 'Cancelled', 'cancel shows Cancelled: ' + seen.cancelTitle);
  seen.contrast = await contrastFailures(page);
  expect(seen.contrast.length === 0, 'text contrast below WCAG AA: ' + seen.contrast.join('; '));
  await page.context().close();

  // ---- the keyboard alone ----
  const keys = await newPage({ width: 1280, height: 800 });
  const k = keys.keyboard;
  const outlines = [];
  const skip = await tabUntil(keys, (f) => f.tag === 'A', 'the skip link', 2);
  outlines.push(skip);
  await k.press('Enter');
  expect((await focused(keys)).id === 'sql', 'the skip link leads to the editor');
  await k.type('SELECT region, sum(amount) AS total FROM orders GROUP BY ALL ORDER BY 1');
  await k.press('Control+Enter');
  await keys.locator('#grid tbody tr').nth(3).waitFor({ timeout: 20000 });
  // Tab indents; Escape then Tab leaves the editor.
  await k.press('Escape');
  await k.press('Tab');
  const run1 = await focused(keys);
  expect(run1.id === 'run', 'Escape, Tab leaves the editor for Run: ' + JSON.stringify(run1));
  outlines.push(run1);
  const tableTab = await tabUntil(keys, (f) => f.id === 'tab-table', 'the result tabs');
  await k.press('ArrowRight');
  const chartTab = await focused(keys);
  expect(chartTab.id === 'tab-chart', 'ArrowRight moves to the Chart tab');
  outlines.push(tableTab, chartTab);
  await keys.locator('#chart svg rect.bar').first().waitFor();
  await k.press('Tab');
  expect((await focused(keys)).id === 'chart-kind', 'Tab reaches the chart type');
  await k.press('ArrowDown');
  await keys.locator('#chart svg path.line').waitFor({ timeout: 5000 });
  await keys.screenshot({ path: join(outDir, 'keyboard.png') });
  // Into the schema from the top: filter, open a table, insert its name.
  await keys.locator('#sql').focus();
  await keys.locator('#sql').evaluate((t) => t.setSelectionRange(t.value.length, t.value.length));
  await tabUntil(keys, (f) => f.id === 'schema-filter', 'the schema filter (backwards)', 40, 'Shift+Tab');
  await k.type('orders');
  await tabUntil(keys, (f) => f.text === 'Columns of orders', 'the orders toggle');
  outlines.push(await focused(keys));
  await k.press('Enter');
  expect(await keys.locator('#catalog .table-entry[data-table="orders"] .columns').isVisible(), 'Enter opens the columns');
  await k.press('Tab');
  expect((await focused(keys)).text === 'Insert table orders', 'then the table name');
  await k.press('Enter');
  expect((await keys.locator('#sql').inputValue()).endsWith(' orders'), 'Enter inserts the name');
  await tabUntil(keys, (f) => /^Insert column amount, DECIMAL/.test(f.text), 'a column');
  await k.press('Enter');
  expect((await keys.locator('#sql').inputValue()).endsWith(' orders amount'), 'and a column: ' + await keys.locator('#sql').inputValue());
  // The history by keyboard: its tab, the first entry's Run.
  await tabUntil(keys, (f) => f.id === 'tab-schema', 'the side tabs (backwards)', 20, 'Shift+Tab');
  await k.press('ArrowRight');
  expect((await focused(keys)).id === 'tab-history', 'ArrowRight to History');
  await tabUntil(keys, (f) => /^Run query 1/.test(f.text), 'the newest entry\'s Run');
  await k.press('Enter');
  await keys.locator('#run:not([disabled])').waitFor();
  expect((await keys.locator('#status').textContent()).startsWith('4 rows'), 'it ran again');
  seen.focusWithoutOutline = outlines.filter((f) => !f.outline).map((f) => f.id || f.text);
  expect(seen.focusWithoutOutline.length === 0, 'focus is visible: ' + seen.focusWithoutOutline.join(', '));
  await keys.context().close();

  // ---- a narrow screen ----
  const phone = await newPage({ width: 375, height: 740 });
  await run(phone, 'SELECT region, count(*) AS n FROM orders GROUP BY region ORDER BY region');
  await phone.locator('#grid tbody tr').nth(3).waitFor();
  seen.narrowWidth = await phone.evaluate(() => document.documentElement.scrollWidth);
  expect(seen.narrowWidth <= 375, 'no sideways scrolling at 375 px: ' + seen.narrowWidth);
  const side = await phone.locator('.side').boundingBox();
  const work = await phone.locator('.work').boundingBox();
  expect(work.y >= side.y + side.height - 1, 'one column: the schema above the editor');
  await phone.screenshot({ path: join(outDir, 'narrow.png'), fullPage: true });
  await phone.locator('#tab-chart').click();
  const chart = await phone.locator('#chart svg').boundingBox();
  expect(chart.width <= 375 && chart.width > 250, 'the chart fits: ' + chart.width);
  await phone.screenshot({ path: join(outDir, 'narrow-chart.png'), fullPage: true });
  await phone.context().close();

  // ---- axe-core, in every state a person meets ----
  const audited = await newPage({ width: 1280, height: 800 }, true);
  seen.axe = await axe(audited, 'start');
  await audited.locator('#catalog .table-entry[data-table="orders"] .toggle').click();
  await run(audited, 'SELECT region, count(*) AS n FROM orders GROUP BY region ORDER BY region');
  seen.axe.push(...await axe(audited, 'result'));
  await audited.locator('#tab-chart').click();
  await audited.locator('#chart svg').waitFor();
  seen.axe.push(...await axe(audited, 'chart'));
  await audited.locator('#tab-history').click();
  seen.axe.push(...await axe(audited, 'history'));
  await run(audited, 'SELEC 1');
  seen.axe.push(...await axe(audited, 'error'));
  await audited.setViewportSize({ width: 375, height: 740 });
  seen.axe.push(...await axe(audited, 'narrow'));
  await audited.context().close();
  expect(seen.axe.length === 0, 'axe-core violations: ' + seen.axe.join('; '));

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
