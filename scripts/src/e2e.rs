//! `cargo xtask e2e`: the end-to-end suite in `test/e2e` (vitest, Chromium
//! through playwright-core) against the whole local stack of `cargo xtask dev`.
//!
//! A gateway that `cargo xtask dev` started with sign-in and that still
//! answers is reused as it is, in its mode (plain HTTP, `--tls`, or
//! `--in-cluster`, which runs [`IN_CLUSTER`] only): the fast loop while `dev`
//! runs. Otherwise this brings the stack up with plain HTTP on localhost and
//! runs the suite, then restarts the gateway with TLS (`views.localhost`,
//! HTTPS, a local CA) and runs it again (`tls.test.js` only tests in that
//! mode), then deploys it into the cluster (`dev --in-cluster`: real
//! containers, two replicas behind a Service) and runs [`IN_CLUSTER`] there,
//! and stops the gateway it started (the host processes, the Deployment),
//! so nothing of it outlives the run; the cluster and the lake stay up for
//! the next run, as after `cargo xtask test` (`cargo xtask down` stops them).
//!
//! The gateway runs with sign-in on. The suite calls the API as the demo
//! users `ana`, `bob` and `ada` with access tokens this task gets from the
//! local provider through its real sign-in flow (`VIEWS_E2E_TOKEN_<USER>`);
//! in the browser, people sign in on the provider's login page with the
//! passwords in its `oidc.json`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use crate::{browser, cluster, dev, paths, progress};

/// Whose API calls the suite makes (support/identity.js names the same).
const TOKEN_USERS: [&str; 3] = ["ana", "bob", "ada"];

/// The files run against the in-cluster gateway: what the deployment
/// changes. Signing in (Envoy in a pod verifies tokens with the provider's
/// keys and exchanges codes at the address pods reach it on), the first
/// visit to a cold view (a real container started by the kubelet, held and
/// released through two replicas behind a Service, DuckDB reading the lake
/// through the `gateway-s3` Service, a Parquet download), two views at once
/// (each with its own keys), the hub's live status and its run controls
/// (the page's event stream served by one replica while starts, stops,
/// restarts and extensions go through either). The rest tests the
/// sidecar's pages and API alone (`create.test.js`), or the host's pod
/// processes (`delete.test.js` looks for them in `/proc`); `tls.test.js`
/// needs `--tls`.
const IN_CLUSTER: [&str; 5] = [
    "tests/sign-in.test.js",
    "tests/workspace.test.js",
    "tests/side-by-side.test.js",
    "tests/hub.test.js",
    "tests/runs.test.js",
];

pub fn run() -> anyhow::Result<()> {
    browser::ensure()?;
    let dir = paths::repo_root().join("test/e2e");
    npm_ci(&dir)?;

    if let Some(endpoint) = dev::Endpoint::running().filter(|e| e.sign_in) {
        progress::info(format!(
            "a gateway answers at {}{}: running the suite against it",
            endpoint.url(None, "/"),
            if endpoint.in_cluster {
                " (in the cluster)"
            } else {
                ""
            }
        ));
        let files: &[&str] = if endpoint.in_cluster {
            &IN_CLUSTER
        } else {
            &[]
        };
        return tokens().and_then(|tokens| vitest(&dir, &endpoint, &tokens, files));
    }
    // As `cargo xtask dev` runs by default (plain HTTP on localhost), then
    // as `dev --tls` does (HTTPS on views.localhost), then `dev --in-cluster`.
    let result = (|| {
        let endpoint = dev::up(dev::Scheme::Http)?;
        let tokens = tokens()?;
        vitest(&dir, &endpoint, &tokens, &[])?;
        let endpoint = dev::up(dev::Scheme::Https)?;
        vitest(&dir, &endpoint, &tokens, &[])?;
        let step = progress::step("the gateway deployed into the cluster (dev --in-cluster)");
        let endpoint = dev::up_in_cluster(true)?;
        step.done();
        vitest(&dir, &endpoint, &tokens, &IN_CLUSTER)
    })();
    progress::info("stopping the gateway this run started (the cluster and the lake stay)");
    dev::stop_gateway()?;
    dev::remove_in_cluster()?;
    result
}

/// `npm ci` in `dir` when its `package-lock.json` changed since the last
/// install, with npm's cache under `<cache>/npm` (CI keeps it between runs).
/// Shared by every Node package of the repository (this suite, the OIDC
/// provider).
pub fn npm_ci(dir: &Path) -> anyhow::Result<()> {
    let lock = std::fs::read(dir.join("package-lock.json"))
        .with_context(|| format!("reading {}/package-lock.json", dir.display()))?;
    let digest: String = Sha256::digest(&lock)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let stamp = dir.join("node_modules/.installed-lock.sha256");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == digest) {
        return Ok(());
    }
    let step = progress::step(format!(
        "npm ci ({})",
        dir.strip_prefix(paths::repo_root())
            .unwrap_or(dir)
            .display()
    ));
    let cache = paths::cache_dir().join("npm");
    let status = Command::new("npm")
        .args(["ci", "--prefer-offline", "--no-audit", "--no-fund"])
        .arg("--cache")
        .arg(&cache)
        .current_dir(dir)
        .status()
        .context("running npm (Node.js and npm are needed)")?;
    if !status.success() {
        bail!("npm ci in {} failed ({status})", dir.display());
    }
    std::fs::write(&stamp, digest)?;
    step.done();
    Ok(())
}

/// `VIEWS_E2E_TOKEN_<USER>` for each of [`TOKEN_USERS`], signed in at the
/// running provider (authorization code + PKCE; they live an hour).
fn tokens() -> anyhow::Result<Vec<(String, String)>> {
    let step = progress::step(format!(
        "access tokens for {} from the OIDC provider",
        TOKEN_USERS.join(", ")
    ));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tokens = TOKEN_USERS
        .iter()
        .map(|user| {
            let token = runtime
                .block_on(test_support::oidc::token(
                    user,
                    test_support::oidc::CLI_CLIENT,
                    test_support::oidc::GATEWAY_RESOURCE,
                ))
                .with_context(|| format!("signing {user} in"))?;
            Ok((format!("VIEWS_E2E_TOKEN_{}", user.to_uppercase()), token))
        })
        .collect::<anyhow::Result<_>>()?;
    step.done();
    Ok(tokens)
}

/// The suite (`files` of it, or all) against the gateway at `endpoint`,
/// which the suite reads from `dev`'s `gateway.json` (support/gateway.js).
fn vitest(
    dir: &Path,
    endpoint: &dev::Endpoint,
    tokens: &[(String, String)],
    files: &[&str],
) -> anyhow::Result<()> {
    let step = progress::step(format!(
        "end-to-end suite (test/e2e, vitest + Chromium{}) against {}{}",
        if files.is_empty() {
            String::new()
        } else {
            format!(": {}", files.join(", "))
        },
        endpoint.url(None, "/"),
        if endpoint.in_cluster {
            " in the cluster"
        } else {
            ""
        },
    ));
    let status = Command::new(dir.join("node_modules/.bin/vitest"))
        .arg("run")
        .args(files)
        .envs(tokens.iter().map(|(name, token)| (name, token)))
        .current_dir(dir)
        .env("VIEWS_KUBECTL", cluster::kubectl()?)
        .env("KUBECONFIG", cluster::kubeconfig())
        .env("VIEWS_HOME", paths::cache_dir())
        // The stack is up: the suite's global setup only checks it.
        .env("VIEWS_E2E_STACK", "managed")
        .status()
        .context("running vitest")?;
    if !status.success() {
        bail!(
            "the end-to-end suite failed ({status}); screenshots in {}",
            dir.join("artifacts").display()
        );
    }
    step.done();
    Ok(())
}
