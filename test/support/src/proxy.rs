//! A TCP proxy a test can cut: put between a process and a server, it
//! forwards every connection until [`TcpProxy::cut`] resets them all and
//! refuses new ones (what the process sees of a server that died), and
//! [`TcpProxy::restore`] serves again on the same port. The server itself is
//! never touched: the local cluster's API server is shared by every test.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

pub struct TcpProxy {
    address: SocketAddr,
    upstream: SocketAddr,
    /// Accepts and forwards, while not cut; aborting it closes everything.
    serving: Option<JoinHandle<()>>,
}

impl TcpProxy {
    /// Forward a free loopback port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let address = SocketAddr::from(([127, 0, 0, 1], crate::gateway::free_port()));
        let mut proxy = Self {
            address,
            upstream,
            serving: None,
        };
        proxy.restore().await;
        proxy
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Reset every forwarded connection and refuse new ones; returns once
    /// the port is closed.
    pub async fn cut(&mut self) {
        if let Some(serving) = self.serving.take() {
            // Ending the task drops the listener and every connection task.
            serving.abort();
            let _ = serving.await;
        }
    }

    /// Accept and forward again (on the same port).
    pub async fn restore(&mut self) {
        self.cut().await;
        let listener = TcpListener::bind(self.address)
            .await
            .unwrap_or_else(|e| panic!("binding the proxy's {}: {e}", self.address));
        self.serving = Some(tokio::spawn(serve(listener, self.upstream)));
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
        }
    }
}

async fn serve(listener: TcpListener, upstream: SocketAddr) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                connections.spawn(forward(client, upstream));
            }
            // Reap finished connections as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn forward(mut client: TcpStream, upstream: SocketAddr) {
    // Reset, not closed, when the proxy is cut: as a crashed server's peer sees it.
    let _ = client.set_zero_linger();
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}
