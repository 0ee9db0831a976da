//! A TCP forwarder, run as a component (`xtask cluster forward`): every
//! connection accepted on one address is joined to a new connection to
//! another, bytes passed both ways untouched (TLS included).
//!
//! Two uses, both where a real cluster has a network path we lack:
//!
//! - **Pods → the API server.** The API server listens on 127.0.0.1 only and
//!   advertises the host's pod-network address; the `kubernetes` Service
//!   (10.234.0.1:443) leads there. [`api_server`] listens on that address so
//!   pods (in-cluster clients such as the gateway) reach it, as in any
//!   cluster, without exposing the API server on the machine's other
//!   interfaces.
//! - **localhost → a Service** (`cargo xtask dev --in-cluster`): the part of
//!   a load balancer (k3d's, a cloud's) that takes a host port to a
//!   Service's ClusterIP, where kube-proxy picks a ready endpoint for each
//!   connection.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};

use super::components::{API_PORT, Component};
use super::network::HOST_IP;

#[derive(clap::Args)]
pub struct Args {
    /// Where to accept connections.
    #[arg(long)]
    listen: SocketAddr,
    /// Where to forward each of them.
    #[arg(long)]
    to: SocketAddr,
}

/// The component forwarding `listen` to `to`, named `name` (its pid and log
/// file names).
pub fn component(
    name: &'static str,
    listen: SocketAddr,
    to: SocketAddr,
) -> anyhow::Result<Component> {
    Ok(Component {
        name,
        program: super::components::this_program()?,
        args: vec![
            "cluster".into(),
            "forward".into(),
            "--listen".into(),
            listen.to_string(),
            "--to".into(),
            to.to_string(),
        ],
    })
}

/// The API server on the address it advertises (the `kubernetes` Service's
/// endpoint), for pods.
pub fn api_server() -> anyhow::Result<Component> {
    component(
        "api-forward",
        SocketAddr::from((HOST_IP, API_PORT)),
        SocketAddr::from(([127, 0, 0, 1], API_PORT)),
    )
}

/// Forward until killed. A connection that cannot reach `to` is closed (the
/// client sees a reset or an immediate end, as with a closed port).
pub fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        eprintln!("forwarding {} to {}", args.listen, args.to);
        loop {
            let (mut inbound, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: the next may work.
                Err(error) => {
                    eprintln!("accept: {error}");
                    continue;
                }
            };
            let to = args.to;
            tokio::spawn(async move {
                let _ = inbound.set_nodelay(true);
                match TcpStream::connect(to).await {
                    Ok(mut outbound) => {
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                    Err(error) => eprintln!("{peer} → {to}: {error}"),
                }
            });
        }
    })
}
