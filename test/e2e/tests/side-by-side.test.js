// Two views of ana's over different prefixes, started together and open
// side by side in her browser: each sees its own data and nothing of the
// other's.

import { afterAll, beforeAll, describe, expect, test } from 'vitest';

import { launch, offlineContext, runQuery, screenshot, signInContext } from '../support/browser.js';
import { Views } from '../support/api.js';
import { pods, uniqueName, viewUrl } from '../support/gateway.js';
import { countRows } from '../support/lake.js';

describe('two views side by side', () => {
  const views = new Views('ana');
  let browser;

  beforeAll(async () => {
    browser = await launch();
  });

  afterAll(async () => {
    await browser?.close();
    await views.deleteAll();
  });

  test('each view sees only its own prefix', async () => {
    const regions = ['eu', 'asia'];
    const byRegion = Object.fromEntries(
      await Promise.all(
        regions.map(async (region) => {
          const name = uniqueName();
          const prefix = `sales/region=${region}/`;
          await views.create({
            name,
            subsets: [{ bucket: 'lake', prefixes: [prefix], tables: { sales: { path: `${prefix}*.parquet`, format: 'parquet' } } }],
          });
          return [region, { name, prefix, expected: await countRows(`${prefix}*.parquet`) }];
        }),
      ),
    );
    expect(byRegion.eu.expected).not.toBe(byRegion.asia.expected);

    // Both opened at once, cold: two starts in parallel.
    const context = await offlineContext(browser);
    await signInContext(context, 'ana');
    const pages = Object.fromEntries(await Promise.all(regions.map(async (region) => [region, await context.newPage()])));
    const opened = Date.now();
    await Promise.all(regions.map((region) => pages[region].goto(viewUrl(byRegion[region].name))));
    await Promise.all(
      regions.map(async (region) => {
        await pages[region].locator('#connection[data-state="ready"]').waitFor({ timeout: 120_000 });
        const seconds = ((Date.now() - opened) / 1000).toFixed(1);
        console.log(`[e2e] ${byRegion[region].name} (${region}): progress page to workspace in ${seconds} s`);
      }),
    );

    // Two pods, one per view, with different addresses.
    const ips = await Promise.all(regions.map(async (region) => (await pods(byRegion[region].name)).map((p) => p.status.podIP)));
    expect(ips.map((list) => list.length)).toEqual([1, 1]);
    expect(ips[0][0]).not.toBe(ips[1][0]);

    for (const region of regions) {
      const { expected } = byRegion[region];
      const page = pages[region];
      const own = await runQuery(page, 'SELECT region, count(*) AS n FROM sales GROUP BY region');
      expect(own.error).toBeUndefined();
      expect(own.rows).toEqual([[region, String(expected)]]);
      await screenshot(page, `side-by-side-${region}.png`);

      // The other view's prefix, through this view: refused.
      const other = byRegion[regions.find((r) => r !== region)];
      const refused = await runQuery(page, `SELECT count(*) FROM read_parquet('s3://lake/${other.prefix}*.parquet')`);
      expect(refused.error?.title).toBe('Not allowed in this view');
      expect(refused.error?.message).toMatch(/Permission Error/);
    }
    expect(context.externalRequests).toEqual([]);
    await context.close();
  });
});
