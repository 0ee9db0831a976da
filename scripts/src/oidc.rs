//! The local OpenID Connect provider: panva's `oidc-provider` from npm
//! (`scripts/oidc`, a certified implementation, not a token minter of our
//! own) run with Node as a process, playing the organisation's identity
//! provider for `dev` and the tests; and `cargo xtask token`, which gets a
//! demo user's access token from it through the authorization-code flow.
//!
//! ```text
//!  node scripts/oidc/provider.mjs <cache>/oidc ── issuer http://localhost:32702
//!     │                                            (listens on 127.0.0.1:32702)
//!     └─ <cache>/oidc/
//!          secrets.json   passwords, client secret, signing and cookie keys (generated once)
//!          oidc.json      issuer, port, clients, users: written by the provider on start,
//!                         read by this task and the tests (test_support::oidc)
//!          run/ logs/     pid file and log
//! ```
//!
//! The provider owns its directory of users and clients and what it does
//! with them (`scripts/oidc/provider.mjs`); this module installs, starts,
//! reuses and stops it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use sha2::{Digest, Sha256};
use test_support::oidc::Oidc;

use crate::cluster::{Component, Layout};
use crate::{e2e, paths, progress};

#[derive(Subcommand)]
pub enum Command {
    /// Install the provider (npm ci, once), generate the demo users' passwords (once) and start it.
    Up,
    /// Stop the provider (passwords and keys stay cached).
    Down,
    /// Show the provider, its issuer and its users.
    Status,
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Up => {
            let oidc = ensure_running()?;
            print_usage(&oidc);
            Ok(())
        }
        Command::Down => {
            if stop()? {
                progress::info("stopped the OIDC provider");
            } else {
                progress::info("the OIDC provider was not running");
            }
            Ok(())
        }
        Command::Status => status(),
    }
}

fn oidc_dir() -> PathBuf {
    paths::cache_dir().join("oidc")
}

fn package_dir() -> PathBuf {
    paths::repo_root().join("scripts/oidc")
}

fn layout() -> Layout {
    let root = oidc_dir();
    Layout {
        logs: root.join("logs"),
        run: root.join("run"),
        root,
        ..Layout::new()
    }
}

/// `node provider.mjs <cache>/oidc`. Node from `PATH`: the pid file records
/// the program as given, and so does the process's command line.
fn component() -> Component {
    Component {
        name: "oidc-provider",
        program: PathBuf::from("node"),
        args: vec![
            package_dir().join("provider.mjs").display().to_string(),
            oidc_dir().display().to_string(),
            // Also there for pods (the in-cluster gateway), when it exists.
            crate::cluster::network::HOST_IP.to_string(),
        ],
    }
}

/// What the provider runs: one started from another `provider.mjs` or
/// lock file is restarted.
fn fingerprint() -> anyhow::Result<String> {
    let mut hash = Sha256::new();
    for file in ["provider.mjs", "package-lock.json"] {
        let path = package_dir().join(file);
        hash.update(std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
    }
    Ok(hash.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Install the provider's packages when their lock changed, and start it
/// unless the same one runs and answers; then its `oidc.json`. Cheap when
/// all is up.
pub fn ensure_running() -> anyhow::Result<Oidc> {
    e2e::npm_ci(&package_dir())?;
    let layout = layout();
    for dir in [&layout.run, &layout.logs] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let fingerprint = fingerprint()?;
    let stamp = layout.run.join("oidc-provider.fingerprint");
    let component = component();
    let same = std::fs::read_to_string(&stamp).is_ok_and(|s| s == fingerprint);
    let running = component.running(&layout);
    if let Some(pid) = running
        && same
        && let Ok(oidc) = Oidc::load()
        && answers(&oidc)
    {
        progress::info(format!(
            "OIDC provider already running (pid {pid}): reusing it"
        ));
        return Ok(oidc);
    }
    if running.is_some() {
        // Another version, or not answering: start afresh.
        component.stop(&layout)?;
    }
    // The provider writes a new one before it listens.
    let _ = std::fs::remove_file(test_support::oidc::state_file());
    let step = progress::step("starting oidc-provider (scripts/oidc)");
    component.start(&layout)?;
    let oidc = wait_until_answering(&component, &layout)?;
    std::fs::write(&stamp, &fingerprint)?;
    progress::info(format!("issuer {}", oidc.issuer));
    step.done();
    Ok(oidc)
}

/// As [`ensure_running`], and listening where pods reach it too (the pod
/// network's host address): one started before the local cluster's network
/// existed is restarted (which signs everyone out of its sessions). Call
/// after `cluster::up`.
pub fn ensure_reachable_from_pods() -> anyhow::Result<(Oidc, String)> {
    let oidc = ensure_running()?;
    if let Some(url) = oidc.pod_url.clone() {
        return Ok((oidc, url));
    }
    progress::info("the OIDC provider does not listen on the pod network yet: restarting it");
    stop()?;
    let oidc = ensure_running()?;
    let url = oidc.pod_url.clone().with_context(|| {
        format!(
            "the OIDC provider could not listen on the pod network's address; see {}",
            component().log_file(&layout()).display()
        )
    })?;
    Ok((oidc, url))
}

/// Stop the provider if it runs; returns whether it did. `oidc.json` goes
/// with it, so `cargo xtask token` and tests say it is down.
pub fn stop() -> anyhow::Result<bool> {
    let stopped = component().stop(&layout())?;
    let _ = std::fs::remove_file(test_support::oidc::state_file());
    Ok(stopped)
}

fn status() -> anyhow::Result<()> {
    let layout = layout();
    match component().running(&layout) {
        Some(pid) => {
            let answering = Oidc::load().is_ok_and(|oidc| answers(&oidc));
            println!("oidc-provider: running (pid {pid}), answering: {answering}");
        }
        None => println!("oidc-provider: not running"),
    }
    println!("state:  {}", layout.root.display());
    println!("log:    {}", component().log_file(&layout).display());
    if let Ok(oidc) = Oidc::load() {
        print_users(&oidc);
    }
    Ok(())
}

/// The users and how to get a token: for `oidc up` and `dev`.
pub fn print_usage(oidc: &Oidc) {
    println!(
        "The OIDC provider is up: {} (discovery: {0}/.well-known/openid-configuration)",
        oidc.issuer
    );
    print_users(oidc);
    println!("  a user's access token (last line): cargo xtask token ana");
    println!(
        "  users, passwords and client secrets: {}",
        test_support::oidc::state_file().display()
    );
}

fn print_users(oidc: &Oidc) {
    for user in &oidc.users {
        let groups = if user.groups.is_empty() {
            "no groups".to_string()
        } else {
            format!("groups {}", user.groups.join(", "))
        };
        println!(
            "  user {:<4} password {}  ({groups})",
            user.name, user.password
        );
    }
}

/// `cargo xtask token`: a user's access token on the last line of stdout,
/// through the real flow against the running provider (nothing is
/// started: a provider that is down is an error).
pub fn token(user: &str, client: &str, resource: &str) -> anyhow::Result<()> {
    progress::info(format!(
        "signing {user} in (client {client}, resource {resource}): authorization code + PKCE"
    ));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let token = runtime.block_on(test_support::oidc::token(user, client, resource))?;
    println!("{token}");
    Ok(())
}

fn answers(oidc: &Oidc) -> bool {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .is_ok_and(|runtime| runtime.block_on(oidc.discovery()).is_ok())
}

/// Wait until the provider serves its discovery document (its `oidc.json`
/// is written by then), failing early when it exits.
fn wait_until_answering(component: &Component, layout: &Layout) -> anyhow::Result<Oidc> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(oidc) = Oidc::load()
            && answers(&oidc)
        {
            return Ok(oidc);
        }
        if component.running(layout).is_none() {
            bail!(
                "oidc-provider exited; see {}",
                component.log_file(layout).display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "oidc-provider does not answer after 30s; see {}",
                component.log_file(layout).display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
