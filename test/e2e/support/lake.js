// The data lake behind the gateway (`cargo xtask lake`: s3s-fs with the
// sample data) and the clients the suite checks it with.

import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { cacheDir } from './gateway.js';

const run = promisify(execFile);

/// `lake.json`: the running lake's endpoint, root directory and the row count
/// of every sample table by key prefix (counted by the generator).
export function lake() {
  return JSON.parse(readFileSync(join(cacheDir, 'lake', 'lake.json'), 'utf8'));
}

/// The lake's clients (`cargo xtask lake tools`): the AWS CLI and a Python with DuckDB.
export function tools() {
  return JSON.parse(readFileSync(join(cacheDir, 'tools', 'lake-tools.json'), 'utf8'));
}

/// Rows in the objects matching `glob` (a key glob in the bucket), counted by
/// DuckDB (Python) straight from the lake's files: independent of the gateway,
/// its credentials and the view workload.
export async function countRows(glob) {
  const { root, bucket } = lake();
  const script = [
    'import sys, duckdb',
    "print(duckdb.sql(\"SELECT count(*) FROM read_parquet(?)\", params=[sys.argv[1]]).fetchone()[0])",
  ].join('\n');
  const { stdout } = await run(tools().duckdb_python, ['-c', script, join(root, bucket, glob)]);
  return Number(stdout.trim());
}

/// The rows of `sql` over the Parquet file at `file` (as table `t`), read by
/// DuckDB (Python): e.g. a download the page produced.
export async function queryParquetFile(file, sql) {
  const script = [
    'import sys, json, duckdb',
    't = duckdb.read_parquet(sys.argv[1])  # found by name in the SQL',
    'print(json.dumps(duckdb.sql(sys.argv[2]).fetchall(), default=str))',
  ].join('\n');
  const { stdout } = await run(tools().duckdb_python, ['-c', script, file, sql]);
  return JSON.parse(stdout);
}

/// The generator's row count for the tables under `prefix` (summed).
export function generatedRows(prefix) {
  return Object.entries(lake().tables)
    .filter(([table]) => table.startsWith(prefix))
    .reduce((sum, [, rows]) => sum + rows, 0);
}

/// `aws s3api list-objects-v2` against `endpoint` with the given keys
/// (path-style, as the gateway's S3 endpoint requires). Resolves to
/// { ok, keys, stderr }; a refusal is not an exception.
export async function listObjects({ endpoint, accessKeyId, secretAccessKey }, prefix) {
  const dir = mkdtempSync(join(tmpdir(), 'views-e2e-aws-'));
  writeFileSync(
    join(dir, 'config'),
    '[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n    signature_version = s3v4\n',
  );
  const env = {
    PATH: process.env.PATH,
    HOME: dir,
    AWS_CONFIG_FILE: join(dir, 'config'),
    AWS_SHARED_CREDENTIALS_FILE: join(dir, 'none'),
    AWS_ACCESS_KEY_ID: accessKeyId,
    AWS_SECRET_ACCESS_KEY: secretAccessKey,
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_MAX_ATTEMPTS: '1',
  };
  const args = ['--endpoint-url', endpoint, 's3api', 'list-objects-v2', '--bucket', lake().bucket, '--prefix', prefix];
  try {
    const { stdout } = await run(tools().aws, args, { env });
    const body = stdout.trim() ? JSON.parse(stdout) : {};
    return { ok: true, keys: (body.Contents || []).map((o) => o.Key), stderr: '' };
  } catch (error) {
    return { ok: false, keys: [], stderr: String(error.stderr || error.message) };
  }
}
