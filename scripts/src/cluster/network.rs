//! The local pod network: one network namespace holding every pod IP, joined
//! to the host by a veth pair.
//!
//! ```text
//!   host (root namespace)                 namespace `views-pods`
//!   vg-host 10.233.0.1/16  <── veth ──>   vg-pods 10.233.0.2/16
//!   route 10.233.0.0/16 dev vg-host       + one /32 per process pod (10.233.1.0/24 …)
//!                                         default via 10.233.0.1
//! ```
//!
//! The API server refuses loopback endpoint addresses, so pod IPs live here.
//! Process pods (run by the pod runner) get their address added to `vg-pods`,
//! which makes them reachable from the host; kwok's simulated pods take
//! addresses from the upper half of the range, where no process listens: the
//! namespace takes that half as its own (a `local` route), so a connection
//! there is refused at once, as at a real pod whose port is closed, rather
//! than left waiting for an ARP reply that never comes.
//!
//! The real node's pods live on a bridge of their own, `vg-real0`
//! (10.235.0.0/24, the host at 10.235.0.1: the node's address, where its
//! kubelet and CoreDNS listen). The CNI bridge plugin attaches each pod's veth
//! to it; routing between pods, Service addresses and the host needs IPv4
//! forwarding, which `up` turns on. Nothing masquerades pod traffic, so pods
//! reach only addresses on this machine.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, bail};

use crate::progress;

pub const NETNS: &str = "views-pods";
pub const HOST_IFACE: &str = "vg-host";
pub const POD_IFACE: &str = "vg-pods";
pub const POD_CIDR: &str = "10.233.0.0/16";
/// The host's address on the pod network: pods reach host services here.
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 233, 0, 1);
const POD_SIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 233, 0, 2);
/// Addresses handed to process pods by the pod runner.
pub const PROCESS_POD_IPS: (Ipv4Addr, Ipv4Addr) = (
    Ipv4Addr::new(10, 233, 1, 1),
    Ipv4Addr::new(10, 233, 63, 254),
);
/// Addresses handed to simulated pods by kwok (`--cidr`).
pub const SIMULATED_POD_CIDR: &str = "10.233.128.1/17";
/// The same range as a route.
const SIMULATED_POD_ROUTE: &str = "10.233.128.0/17";
/// The real node's pod bridge, its address and its pods' range (outside the
/// process pods' 10.233.0.0/16 and the Services' 10.234.0.0/16).
pub const REAL_BRIDGE: &str = "vg-real0";
pub const REAL_NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 235, 0, 1);
pub const REAL_POD_CIDR: &str = "10.235.0.0/24";
const REAL_BRIDGE_PREFIX: u8 = 24;

/// Whether the namespace and both ends of the veth are in place and up.
pub fn is_up() -> bool {
    namespace_is_up() && real_bridge_is_up()
}

fn namespace_is_up() -> bool {
    ip(&["-n", NETNS, "link", "show", POD_IFACE]).is_ok_and(|out| out.contains("UP"))
        && ip(&["link", "show", HOST_IFACE]).is_ok_and(|out| out.contains("UP"))
}

fn real_bridge_is_up() -> bool {
    ip(&["link", "show", REAL_BRIDGE]).is_ok_and(|out| out.contains("UP"))
        && ip(&["-o", "-4", "addr", "show", "dev", REAL_BRIDGE])
            .is_ok_and(|out| out.contains(&format!("{REAL_NODE_IP}/{REAL_BRIDGE_PREFIX}")))
}

/// The real node's bridge with the node's address, and IPv4 forwarding.
/// Idempotent; an existing bridge keeps its pods' veths.
fn real_bridge_up() -> anyhow::Result<()> {
    if !real_bridge_is_up() {
        let step = progress::step(format!("real node bridge: {REAL_BRIDGE}, {REAL_POD_CIDR}"));
        if ip(&["link", "show", REAL_BRIDGE]).is_err() {
            ip(&["link", "add", REAL_BRIDGE, "type", "bridge"])?;
        }
        ip(&[
            "addr",
            "replace",
            &format!("{REAL_NODE_IP}/{REAL_BRIDGE_PREFIX}"),
            "dev",
            REAL_BRIDGE,
        ])?;
        ip(&["link", "set", REAL_BRIDGE, "up"])?;
        step.done();
    }
    let forwarding = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(forwarding)?.trim() != "1" {
        std::fs::write(forwarding, "1").context("turning on IPv4 forwarding")?;
    }
    Ok(())
}

/// Create the namespace, veth pair, addresses and routes, and the real
/// node's bridge. Idempotent: a half-built namespace is torn down and built
/// again.
pub fn up() -> anyhow::Result<()> {
    namespace_up()?;
    real_bridge_up()
}

fn namespace_up() -> anyhow::Result<()> {
    if namespace_is_up() {
        // A network built before simulated addresses refused connections
        // gets the route without being rebuilt (its pods keep their addresses).
        return refuse_simulated_pods();
    }
    let step = progress::step(format!("pod network: namespace {NETNS}, {POD_CIDR}"));
    namespace_down()?;
    let host_cidr = format!("{HOST_IP}/16");
    let pod_cidr = format!("{POD_SIDE_IP}/16");
    let host_ip = HOST_IP.to_string();
    for args in [
        &["netns", "add", NETNS][..],
        &[
            "link", "add", HOST_IFACE, "type", "veth", "peer", "name", POD_IFACE, "netns", NETNS,
        ],
        &["addr", "add", &host_cidr, "dev", HOST_IFACE],
        &["link", "set", HOST_IFACE, "up"],
        &["-n", NETNS, "link", "set", "lo", "up"],
        &["-n", NETNS, "addr", "add", &pod_cidr, "dev", POD_IFACE],
        &["-n", NETNS, "link", "set", POD_IFACE, "up"],
        &["-n", NETNS, "route", "add", "default", "via", &host_ip],
    ] {
        ip(args)?;
    }
    refuse_simulated_pods()?;
    step.done();
    Ok(())
}

/// Make the simulated pods' range local to the namespace (idempotent).
fn refuse_simulated_pods() -> anyhow::Result<()> {
    ip(&[
        "-n",
        NETNS,
        "route",
        "replace",
        "local",
        SIMULATED_POD_ROUTE,
        "dev",
        "lo",
    ])
    .map(drop)
}

/// Remove the namespace (which takes the veth pair with it) and the real
/// node's bridge with any pod veth left on it. Idempotent.
pub fn down() -> anyhow::Result<()> {
    real_bridge_down()?;
    namespace_down()
}

fn namespace_down() -> anyhow::Result<()> {
    if ip(&["netns", "list"])?
        .lines()
        .any(|l| l.split_whitespace().next() == Some(NETNS))
    {
        ip(&["netns", "delete", NETNS])?;
    }
    if ip(&["link", "show", HOST_IFACE]).is_ok() {
        ip(&["link", "delete", HOST_IFACE])?;
    }
    Ok(())
}

/// Remove the real node's bridge and any pod veth left on it (the pods'
/// network namespaces are gone by now, which usually takes the veths along).
fn real_bridge_down() -> anyhow::Result<()> {
    if ip(&["link", "show", REAL_BRIDGE]).is_err() {
        return Ok(());
    }
    for line in ip(&["-o", "link", "show", "master", REAL_BRIDGE])?.lines() {
        // `7: veth1234@if2: <…> …`: the name up to `@`.
        if let Some(name) = line.split(": ").nth(1).and_then(|n| n.split('@').next()) {
            let _ = ip(&["link", "delete", name]);
        }
    }
    ip(&["link", "delete", REAL_BRIDGE]).map(drop)
}

/// Run `ip` and return its stdout; a failure carries its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (Debian package iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
