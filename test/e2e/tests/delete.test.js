// Deleting a running view ends it everywhere: its pod process stops, its
// host answers 404, and the lake credentials its pod had stop working. The
// view is bob's (finance may read TPC-H); he calls the API with his token.

import { afterAll, describe, expect, test } from 'vitest';

import { bearer, Views } from '../support/api.js';
import {
  activationCredentials,
  eventually,
  pods,
  processAlive,
  request,
  uniqueName,
  viewProcesses,
  viewUrl,
} from '../support/gateway.js';
import { listObjects } from '../support/lake.js';

describe('deleting a view', () => {
  const views = new Views('bob');

  afterAll(async () => {
    await views.deleteAll();
  });

  test('stops its process, its host answers 404, its credentials are refused', async () => {
    const name = uniqueName();
    const prefix = 'tpch/sf0.01/nation/';
    await views.create({
      name,
      subsets: [{ bucket: 'lake', prefixes: [prefix], tables: { nation: { path: `${prefix}*.parquet`, format: 'parquet' } } }],
    });

    // Start it: a request that is not from a browser is held until the view serves.
    const first = await request(viewUrl(name, '/api/catalog'), { headers: { accept: 'application/json', ...bearer('bob') } });
    expect(first.status).toBe(200);
    expect(JSON.parse(first.body).tables.map((t) => t.name)).toEqual(['nation']);

    // What runs now: one pod, its duckdb-view process at the pod's address…
    const [pod] = await pods(name);
    expect(pod.status.podIP).toMatch(/^10\.233\./);
    const processes = viewProcesses(name);
    expect(processes).toHaveLength(1);
    const [{ pid, podIp }] = processes;
    expect(podIp).toBe(pod.status.podIP);
    const direct = await request(`http://${podIp}:8080/healthz`, { timeout: 5000 });
    expect(direct.status).toBe(200);

    // …and the credentials of its activation, which read its prefix through
    // the gateway's S3 endpoint (and nothing else).
    const credentials = await activationCredentials(name);
    expect(credentials.secret).toBe(`view-${name}-1-s3`);
    expect(credentials.endpoint).toMatch(/^http:\/\/10\.233\.0\.1:\d+$/);
    const allowed = await listObjects(credentials, prefix);
    expect(allowed.stderr).toBe('');
    expect(allowed.keys).toEqual([`${prefix}nation.parquet`]);
    const outside = await listObjects(credentials, 'tpch/sf0.01/region/');
    expect(outside.ok).toBe(false);
    expect(outside.stderr).toMatch(/AccessDenied/);

    expect(await views.api.delete(name)).toBe(204);

    // The host is gone at once (the API answers after Envoy has the change).
    const gone = await request(viewUrl(name), { headers: { accept: 'text/html', ...bearer('bob') } });
    expect(gone.status).toBe(404);
    expect((await views.api.get(name)).status).toBe(404);

    // The credentials are refused: the view no longer exists.
    const refused = await listObjects(credentials, prefix);
    expect(refused.ok).toBe(false);
    expect(refused.stderr).toMatch(/InvalidAccessKeyId/);

    // The process stops (the Job and its pod are garbage-collected, the pod
    // runner stops the process), and nothing answers at the pod's address.
    await eventually(`duckdb-view pid ${pid} of ${name} exits`, () => !processAlive(pid), 60_000);
    expect(viewProcesses(name)).toEqual([]);
    await eventually(`the pod of ${name} is gone`, async () => (await pods(name)).length === 0, 60_000);
    await expect(request(`http://${podIp}:8080/healthz`, { timeout: 3000 })).rejects.toThrow();
  });
});
