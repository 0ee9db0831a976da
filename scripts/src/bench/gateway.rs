//! A gateway replica for the benchmarks: test-support's harness (the same
//! sidecar + Envoy set-up the integration tests run, with the ServiceAccount
//! and RBAC of `ui/gateway`), running the release build, plus what the
//! measurements need: the processes' pids, metrics, Envoy's admin stats.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use test_support::gateway::Gateway;

use super::procs;
use crate::paths;

/// Make test-support's harness start release binaries.
///
/// It takes binaries from `$CARGO_TARGET_DIR/debug/`; this points
/// `CARGO_TARGET_DIR` at a directory whose `debug` is a link to the real
/// `release`. Call before any thread is started (it sets this process's
/// environment), after everything that needs the real target directory
/// (the cluster's pod runner resolves process images with it).
pub fn use_release_binaries() -> anyhow::Result<()> {
    let release = paths::target_dir().join("release");
    let shim = paths::cache_dir().join("bench").join("release-as-debug");
    std::fs::create_dir_all(&shim)?;
    let link = shim.join("debug");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&release, &link)
        .with_context(|| format!("linking {} to {}", link.display(), release.display()))?;
    // SAFETY: called from the main thread before the benchmark's runtime or
    // any other thread exists, so nothing reads the environment concurrently.
    unsafe { std::env::set_var("CARGO_TARGET_DIR", &shim) };
    Ok(())
}

/// Start a replica serving the views of `namespace` (info-level logs: the
/// tests' debug logs would be part of what is measured). The harness panics
/// when the replica does not get ready; that becomes an error here, so one
/// failed measurement does not end the benchmark.
pub async fn start(name: &str, namespace: &str) -> anyhow::Result<Gateway> {
    start_with(name, namespace, &[], &[]).await
}

/// As [`start`], with extra sidecar environment and Envoy command-line arguments.
pub async fn start_with(
    name: &str,
    namespace: &str,
    env: &[(&str, &str)],
    envoy_args: &[&str],
) -> anyhow::Result<Gateway> {
    let (name, namespace) = (name.to_string(), namespace.to_string());
    let env: Vec<(String, String)> = std::iter::once(("RUST_LOG", "info"))
        .chain(env.iter().copied())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let envoy_args: Vec<String> = envoy_args.iter().map(|a| a.to_string()).collect();
    tokio::spawn(async move {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let envoy_args: Vec<&str> = envoy_args.iter().map(String::as_str).collect();
        Gateway::start_with_envoy_args(&name, &namespace, &env, &envoy_args).await
    })
    .await
    .map_err(|_| anyhow::anyhow!("the gateway replica did not start (its panic is above)"))
}

/// The pid of the replica's sidecar (a child of this process).
pub fn sidecar_pid(_gateway: &Gateway) -> anyhow::Result<u32> {
    only(
        "gateway-sidecar",
        procs::children(|cmdline| {
            cmdline
                .split(' ')
                .next()
                .is_some_and(|program| program.ends_with("/gateway-sidecar"))
        }),
    )
}

/// The pid of the replica's Envoy: the child started with its bootstrap.
pub fn envoy_pid(gateway: &Gateway) -> anyhow::Result<u32> {
    envoy_pid_in(gateway.logs_dir())
}

/// The pid of the Envoy child started with `<dir>/envoy.yaml`.
pub fn envoy_pid_in(dir: &Path) -> anyhow::Result<u32> {
    let bootstrap = dir.join("envoy.yaml").display().to_string();
    only(
        "envoy",
        procs::children(|cmdline| cmdline.contains(&bootstrap)),
    )
}

fn only(what: &str, pids: Vec<u32>) -> anyhow::Result<u32> {
    match pids[..] {
        [pid] => Ok(pid),
        [] => bail!("no {what} process found among this task's children"),
        _ => bail!("several {what} processes among this task's children: {pids:?}"),
    }
}

/// GET `url` through the replica's client (any host resolves to
/// loopback); status and body.
pub async fn get(gateway: &Gateway, url: &str) -> anyhow::Result<(u16, String)> {
    get_with(&gateway.client(), url).await
}

pub async fn get_with(client: &reqwest::Client, url: &str) -> anyhow::Result<(u16, String)> {
    let response = client.get(url).send().await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

/// The sidecar's `/metrics`.
pub async fn metrics(gateway: &Gateway) -> anyhow::Result<String> {
    Ok(get(gateway, &gateway.ops_url("/metrics")).await?.1)
}

/// The sum of every sample of the metric family `name` (any labels), or
/// None when the sidecar exports no such metric. (A family without samples
/// yet, e.g. a counter with labels never incremented, is 0.)
pub fn metric_sum(metrics: &str, name: &str) -> Option<f64> {
    let declared = metrics.lines().any(|line| {
        line.strip_prefix("# TYPE ")
            .and_then(|rest| rest.split(' ').next())
            .is_some_and(|family| family == name || family.strip_suffix("_total") == Some(name))
    });
    let samples: Vec<f64> = metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            let metric = line.split(['{', ' ']).next().unwrap_or_default();
            metric == name || metric.strip_suffix("_total") == Some(name)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect();
    (declared || !samples.is_empty()).then(|| samples.iter().sum())
}

/// Envoy admin counters and gauges whose name matches the regex `filter`.
pub async fn envoy_stats(
    http: &reqwest::Client,
    admin_port: u16,
    filter: &str,
) -> anyhow::Result<Vec<(String, u64)>> {
    let url = format!("http://127.0.0.1:{admin_port}/stats?filter={filter}");
    let (status, body) = get_with(http, &url).await?;
    if status != 200 {
        bail!("Envoy admin {url}: status {status}");
    }
    Ok(body
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(": ")?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect())
}

/// One Envoy stat (0 when Envoy has no such stat yet).
pub async fn envoy_stat(
    http: &reqwest::Client,
    admin_port: u16,
    name: &str,
) -> anyhow::Result<u64> {
    // The filter is a regex; the name's dots match themselves too.
    Ok(envoy_stats(http, admin_port, name)
        .await?
        .into_iter()
        .find(|(n, _)| n == name)
        .map_or(0, |(_, v)| v))
}

/// What the sidecar says its Envoys have ACKed (`/debug/envoys`).
pub async fn envoys(client: &reqwest::Client, ops_port: u16) -> anyhow::Result<serde_json::Value> {
    let url = format!("http://127.0.0.1:{ops_port}/debug/envoys");
    let (status, body) = get_with(client, &url).await?;
    if status != 200 {
        bail!("/debug/envoys: status {status}");
    }
    Ok(serde_json::from_str(&body)?)
}

/// Poll `check` every `interval` until it returns Some, or None after `timeout`.
pub async fn poll<T, F, Fut>(timeout: Duration, interval: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::metric_sum;

    const METRICS: &str = "\
# HELP views_gateway_xds_resource_bytes Bytes of xDS resources sent, by type.
# TYPE views_gateway_xds_resource_bytes counter
views_gateway_xds_resource_bytes_total{type=\"RouteConfiguration\"} 1000
views_gateway_xds_resource_bytes_total{type=\"Listener\"} 24
# HELP views_gateway_ext_authz_checks Checks.
# TYPE views_gateway_ext_authz_checks counter
# EOF
";

    #[test]
    fn metric_sums_add_every_label_set_and_a_declared_family_without_samples_is_zero() {
        assert_eq!(
            metric_sum(METRICS, "views_gateway_xds_resource_bytes"),
            Some(1024.0)
        );
        assert_eq!(
            metric_sum(METRICS, "views_gateway_ext_authz_checks"),
            Some(0.0)
        );
        assert_eq!(metric_sum(METRICS, "gateway_ext_authz_checks"), None);
    }
}
