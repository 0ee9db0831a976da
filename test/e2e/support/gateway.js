// The stack under test, as the tests reach it: the gateway's HTTP API through
// Envoy, view hosts, the local cluster (kubectl) and the pod processes.

import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { lookup as dnsLookup } from 'node:dns';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const cacheDir = process.env.VIEWS_HOME || join(homedir(), '.cache', 'views-gateway');

/// Where the gateway answers, as `cargo xtask dev` wrote it (scripts/src/dev):
/// plain HTTP on localhost:8080, or with `--tls` HTTPS for views.localhost on
/// 8443 (`httpPort` redirecting to it, `ca` the local CA that issued the
/// certificate). Without that file (no dev stack yet): the plain default.
export const endpoint = loadEndpoint();
function loadEndpoint() {
  const plain = { scheme: 'http', hostname: 'localhost', port: Number(process.env.VIEWS_GATEWAY_PORT || 8080) };
  try {
    return JSON.parse(readFileSync(join(cacheDir, 'dev', 'run', 'gateway.json'), 'utf8'));
  } catch {
    return plain;
  }
}
export const tls = endpoint.scheme === 'https';
export const port = endpoint.port;
/// The namespace of `cargo xtask dev`'s views.
export const namespace = 'views';
/// Screenshots; those of the HTTPS run in `tls/`, of the in-cluster run
/// (`cargo xtask dev --in-cluster`) in `in-cluster/`.
export const artifacts = resolve(
  dirname(fileURLToPath(import.meta.url)),
  tls ? '../artifacts/tls' : endpoint.inCluster ? '../artifacts/in-cluster' : '../artifacts',
);

/// `http://<view>.localhost:<port>/…`: what a person types (as the browser
/// writes it: no `:80`); with TLS `https://<view>.views.localhost:<port>/…`.
export const viewUrl = (name, path = '/') => new URL(path, `${endpoint.scheme}://${name}.${endpoint.hostname}:${port}`).href;
/// `http://localhost:<port>/…`: the gateway's own host (the API).
export const gatewayUrl = (path = '/') => new URL(path, `${endpoint.scheme}://${endpoint.hostname}:${port}`).href;
/// The local CA with TLS, for Node's own requests.
const ca = endpoint.ca ? readFileSync(endpoint.ca) : undefined;

// Node's resolver does not know that *.localhost is loopback (Chromium does):
// resolve those names to 127.0.0.1 ourselves, where Envoy listens.
function loopback(hostname, options, callback) {
  if (hostname === 'localhost' || hostname.endsWith('.localhost')) {
    if (options && options.all) return callback(null, [{ address: '127.0.0.1', family: 4 }]);
    return callback(null, '127.0.0.1', 4);
  }
  return dnsLookup(hostname, options, callback);
}

/// One HTTP request; resolves to { status, headers, body } (body as text).
/// Connection errors reject.
export function request(url, { method = 'GET', headers = {}, body, timeout = 120_000 } = {}) {
  return new Promise((resolvePromise, reject) => {
    const client = new URL(url).protocol === 'https:' ? https : http;
    const req = client.request(url, { method, headers, lookup: loopback, timeout, agent: false, ca }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () =>
        resolvePromise({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }),
      );
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`timeout after ${timeout} ms: ${method} ${url}`)));
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

export const json = (response) => {
  try {
    return JSON.parse(response.body);
  } catch {
    return undefined;
  }
};

/// GET /_api/readyz through Envoy answers 200.
export async function gatewayReady() {
  try {
    return (await request(gatewayUrl('/_api/readyz'), { timeout: 3000 })).status === 200;
  } catch {
    return false;
  }
}

/// A fresh view name: a DNS label of 3–8 characters ("e2" + 5 random).
export function uniqueName() {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = randomBytes(5);
  return 'e2' + Array.from(bytes, (b) => alphabet[b % alphabet.length]).join('');
}

/// Poll `check` (async, truthy = done) until it holds or `timeout` passes.
export async function eventually(what, check, timeout = 60_000, interval = 250) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
      last = value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`not within ${timeout} ms: ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

// ---- the cluster ------------------------------------------------------------

/// The cluster's kubectl: VIEWS_KUBECTL (`cargo xtask e2e` sets it), else the
/// newest control-plane build under the cache.
function kubectlPath() {
  if (process.env.VIEWS_KUBECTL) return process.env.VIEWS_KUBECTL;
  const dir = join(cacheDir, 'kube');
  const builds = existsSync(dir)
    ? readdirSync(dir)
        .map((d) => join(dir, d, 'kubectl'))
        .filter((p) => existsSync(p))
        .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)
    : [];
  if (!builds.length) throw new Error(`no kubectl under ${dir}: run cargo xtask cluster up`);
  return builds[0];
}

/// kubectl as the cluster's admin, in the views namespace; parsed JSON output.
export async function kubectl(...args) {
  const kubeconfig = process.env.KUBECONFIG || join(cacheDir, 'cluster', 'kubeconfig');
  const { stdout } = await run(kubectlPath(), ['--kubeconfig', kubeconfig, '--namespace', namespace, ...args, '-o', 'json'], {
    maxBuffer: 64 << 20,
  });
  return JSON.parse(stdout);
}

/// The view's pods (not being deleted).
export async function pods(name) {
  const list = await kubectl('get', 'pods', '-l', `views.dev/view=${name}`);
  return list.items.filter((p) => !p.metadata.deletionTimestamp);
}

/// The view's activation Secret (`view-<name>-<n>-s3`, owned by its Job):
/// the keys its pod reads the lake with, and the endpoint it uses.
export async function activationCredentials(name) {
  const jobs = (await kubectl('get', 'jobs', '-l', `views.dev/view=${name}`)).items;
  if (jobs.length !== 1) throw new Error(`expected one Job for ${name}, found ${jobs.length}`);
  const job = jobs[0].metadata.name;
  const secret = await kubectl('get', 'secret', `${job}-s3`);
  const decode = (key) => Buffer.from(secret.data[key], 'base64').toString('utf8');
  const env = jobs[0].spec.template.spec.containers[0].env;
  return {
    secret: secret.metadata.name,
    accessKeyId: decode('AWS_ACCESS_KEY_ID'),
    secretAccessKey: decode('AWS_SECRET_ACCESS_KEY'),
    endpoint: env.find((e) => e.name === 'AWS_ENDPOINT_URL_S3')?.value,
  };
}

// ---- pod processes ------------------------------------------------------------

/// The duckdb-view processes of a view (pod runner children run the real
/// binary with the pod's environment): [{ pid, podIp }].
export function viewProcesses(name) {
  const found = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (!cmdline[0].endsWith('/duckdb-view')) continue;
      const env = Object.fromEntries(
        readFileSync(`/proc/${entry}/environ`, 'utf8')
          .split('\0')
          .filter(Boolean)
          .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
      );
      const state = readFileSync(`/proc/${entry}/stat`, 'utf8').split(') ')[1]?.[0];
      if (env.VIEW_NAME === name && state !== 'Z') found.push({ pid: Number(entry), podIp: env.POD_IP });
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return found;
}

/// Whether `/proc/<pid>` is still a live duckdb-view process.
export function processAlive(pid) {
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    const state = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0];
    return cmdline.split('\0')[0].endsWith('/duckdb-view') && state !== 'Z';
  } catch {
    return false;
  }
}
