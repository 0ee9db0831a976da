//! A TCP proxy a test can cut: put between a process and a server, it
//! forwards every connection until [`TcpProxy::cut`] resets them all and
//! refuses new ones (what the process sees of a server that died), or
//! [`TcpProxy::stall`] stops answering on every connection, open or new,
//! without a word (a network that drops everything); [`TcpProxy::restore`]
//! serves new connections again on the same port, while stalled ones stay
//! dead (as if the server had forgotten them meanwhile). The server itself
//! is never touched: the local cluster's API server is shared by every test.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

pub struct TcpProxy {
    address: SocketAddr,
    upstream: SocketAddr,
    /// Accepts and forwards, while not cut; aborting it closes everything.
    serving: Option<JoinHandle<()>>,
    stalled: watch::Sender<bool>,
}

impl TcpProxy {
    /// Forward a free loopback port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let address = SocketAddr::from(([127, 0, 0, 1], crate::gateway::free_port()));
        let mut proxy = Self {
            address,
            upstream,
            serving: None,
            stalled: watch::channel(false).0,
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

    /// Answer nothing on any connection, open or new, and close none.
    pub fn stall(&mut self) {
        self.stalled.send_replace(true);
    }

    /// Forward new connections again (on the same port); stalled ones stay
    /// dead.
    pub async fn restore(&mut self) {
        self.stalled.send_replace(false);
        if self.serving.is_some() {
            return;
        }
        let listener = TcpListener::bind(self.address)
            .await
            .unwrap_or_else(|e| panic!("binding the proxy's {}: {e}", self.address));
        self.serving = Some(tokio::spawn(serve(
            listener,
            self.upstream,
            self.stalled.subscribe(),
        )));
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
        }
    }
}

async fn serve(listener: TcpListener, upstream: SocketAddr, stalled: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                connections.spawn(forward(client, upstream, stalled.clone()));
            }
            // Reap finished connections as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn forward(mut client: TcpStream, upstream: SocketAddr, mut stalled: watch::Receiver<bool>) {
    // Reset, not closed, when the proxy is cut: as a crashed server's peer sees it.
    let _ = client.set_zero_linger();
    if !*stalled.borrow_and_update() {
        let Ok(mut server) = TcpStream::connect(upstream).await else {
            return;
        };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
            _ = stalled.wait_for(|stalled| *stalled) => {}
        }
    }
    // Stalled: hold the connection open and answer nothing, until the proxy
    // is cut or dropped.
    std::future::pending::<()>().await;
}
