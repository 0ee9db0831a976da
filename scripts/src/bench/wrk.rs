//! The load generator: Debian's `wrk` (installed on demand), driven by
//! `scripts/bench/wrk-report.lua`, which prints the percentiles wrk's own
//! report lacks (p99.9) as one JSON line.
//!
//! Every run is bounded: in time (`-d`, and a kill should wrk overrun it by
//! more than a grace period) and in count of connections (`-c`, one thread).
//! Not in count of requests: wrk has no such option, and a Lua hook that
//! counts responses halves wrk's throughput (see the script).

use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::paths;

const WRK: &str = "/usr/bin/wrk";

/// Install `wrk` from Debian's packages if it is missing.
pub fn ensure() -> anyhow::Result<()> {
    crate::cmd::ensure_debian_package(WRK, "wrk")
}

/// `wrk -v` (its first line), for the report.
pub fn version() -> String {
    std::process::Command::new(WRK)
        .arg("-v")
        .output()
        .ok()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().unwrap_or_default().trim().to_string()
        })
        .unwrap_or_else(|| "wrk (unknown version)".into())
}

/// One load run: `connections` keep-alive connections on one wrk thread.
pub struct Load<'a> {
    pub address: IpAddr,
    pub port: u16,
    /// The Host header, when not the address.
    pub host: Option<&'a str>,
    /// A token sent as `Authorization: Bearer <token>` with every request.
    pub bearer: Option<&'a str>,
    pub connections: u32,
    pub duration: Duration,
    /// Run wrk on these CPUs only (a `taskset` list), if set.
    pub cpus: Option<&'a str>,
}

/// What wrk measured (latencies in microseconds).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub requests: u64,
    pub duration_us: u64,
    pub bytes: u64,
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub timeouts: u64,
    pub non_2xx: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// CPU time the proxy under load (all its threads) spent per request
    /// during the run, in microseconds; None for no proxy (direct), or
    /// results from before it was measured. Unlike requests/s it hardly
    /// depends on what else the machine runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_cpu_us: Option<f64>,
}

impl Run {
    pub fn requests_per_second(&self) -> f64 {
        self.requests as f64 / (self.duration_us.max(1) as f64 / 1e6)
    }

    pub fn errors(&self) -> u64 {
        self.connect_errors + self.read_errors + self.write_errors + self.timeouts + self.non_2xx
    }
}

/// Load only ever goes to this machine: loopback, or the local cluster's pod
/// network (the `views-pods` namespace the cluster task creates).
fn allowed_target(address: IpAddr) -> bool {
    let pod_network = crate::cluster::network::POD_CIDR
        .split_once('/')
        .and_then(|(net, bits)| Some((net.parse::<IpAddr>().ok()?, bits.parse::<u32>().ok()?)));
    match (address, pod_network) {
        (address, _) if address.is_loopback() => true,
        (IpAddr::V4(address), Some((IpAddr::V4(net), bits))) => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(address) & mask == u32::from(net) & mask
        }
        _ => false,
    }
}

pub async fn run(load: &Load<'_>) -> anyhow::Result<Run> {
    if !allowed_target(load.address) {
        bail!(
            "refusing to load {}: only loopback and the local pod network are benchmarked",
            load.address
        );
    }
    let script = paths::repo_root().join("scripts/bench/wrk-report.lua");
    let url = match load.address {
        IpAddr::V4(ip) => format!("http://{ip}:{}/", load.port),
        IpAddr::V6(ip) => format!("http://[{ip}]:{}/", load.port),
    };
    let mut command = match load.cpus {
        Some(cpus) => {
            let mut command = tokio::process::Command::new("taskset");
            command.args(["--cpu-list", cpus, WRK]);
            command
        }
        None => tokio::process::Command::new(WRK),
    };
    command
        .args(["-t1", "--timeout", "5s"])
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.duration.as_secs().max(1)))
        .arg("-s")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(host) = load.host {
        command.arg("-H").arg(format!("Host: {host}"));
    }
    // On the command line, like the Host: wrk has no other way, and the
    // token is a short-lived one of the local provider's demo user.
    if let Some(token) = load.bearer {
        command
            .arg("-H")
            .arg(format!("Authorization: Bearer {token}"));
    }
    command.arg(&url);
    let child = command.spawn().context("starting wrk")?;
    let limit = load.duration + Duration::from_secs(15);
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .with_context(|| format!("wrk on {url} still running after {limit:?}: killed"))??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk on {url} failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("BENCH "))
        .with_context(|| format!("no BENCH line in wrk's output:\n{stdout}"))?;
    serde_json::from_str(line).with_context(|| format!("parsing wrk's report: {line}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_and_the_pod_network_are_targets() {
        assert!(allowed_target("127.0.0.1".parse().unwrap()));
        assert!(allowed_target("::1".parse().unwrap()));
        assert!(allowed_target("10.233.1.7".parse().unwrap()));
        assert!(!allowed_target("10.234.0.1".parse().unwrap()));
        assert!(!allowed_target("192.168.1.1".parse().unwrap()));
    }
}
