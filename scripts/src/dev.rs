//! `cargo xtask dev`: the local gateway. At this stage it is the local
//! cluster; later issues add Envoy, the sidecar, S3 and a demo view here.

use crate::{cluster, progress};

pub fn run(detach: bool) -> anyhow::Result<()> {
    cluster::up()?;
    println!("The local cluster is up (the gateway itself arrives with the gateway-core issue).");
    println!("  eval \"$(cargo xtask cluster env)\" && kubectl get nodes");
    if detach {
        println!("Left running; `cargo xtask down` stops it.");
        return Ok(());
    }
    println!("Running in the foreground; Ctrl-C stops everything.");
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(tokio::signal::ctrl_c())?;
    progress::info("interrupted");
    down()
}

/// Stop everything `dev` started.
pub fn down() -> anyhow::Result<()> {
    cluster::run(cluster::Command::Down { purge: false })
}
