//! A private Kubernetes API server for tests that kill, pause or restart
//! one: a second `kube-apiserver` process of the local cluster, started with
//! the shared one's own flags (read from its command line) on a free port,
//! reaching the shared etcd through a [`TcpProxy`] of its own. It serves the
//! same cluster (API servers of one cluster share etcd, as in any HA control
//! plane) while the controllers, the kubelets and every other test keep
//! using the shared API server: killing this one disturbs nobody else, and
//! cutting its etcd proxy is an etcd outage as only it sees it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::proxy::TcpProxy;

pub struct PrivateApiServer {
    program: PathBuf,
    args: Vec<String>,
    port: u16,
    child: Option<Child>,
    etcd: TcpProxy,
    dir: PathBuf,
}

impl PrivateApiServer {
    /// Start one and wait until it is ready.
    pub async fn start(name: &str) -> Self {
        let (program, shared_args) = shared_command_line();
        let etcd_address = shared_args
            .iter()
            .find_map(|a| a.strip_prefix("--etcd-servers=http://"))
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .expect("the shared API server's --etcd-servers (one http:// address)");
        let etcd = TcpProxy::start(etcd_address).await;
        let port = crate::gateway::free_port();
        let args = shared_args
            .into_iter()
            .map(|arg| {
                if arg.starts_with("--secure-port=") {
                    format!("--secure-port={port}")
                } else if arg.starts_with("--etcd-servers=") {
                    format!("--etcd-servers=http://{}", etcd.address())
                } else {
                    arg
                }
            })
            .collect();
        let dir = std::env::temp_dir().join(format!("views-gateway-apiserver-{name}-{port}"));
        std::fs::create_dir_all(&dir).expect("API server dir");
        let mut server = Self {
            program,
            args,
            port,
            child: None,
            etcd,
            dir,
        };
        server.restart().await;
        server
    }

    /// Its URL, for a kubeconfig (it serves the shared API server's
    /// certificate, which names 127.0.0.1).
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it (again, after [`PrivateApiServer::kill`]) and wait until it
    /// is ready; how long that took.
    pub async fn restart(&mut self) -> Duration {
        self.kill();
        let started = Instant::now();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("kube-apiserver.log"))
            .expect("API server log");
        self.child = Some(
            Command::new(&self.program)
                .args(&self.args)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("starting the private kube-apiserver"),
        );
        self.wait_ready(Duration::from_secs(90)).await;
        started.elapsed()
    }

    /// SIGSTOP: it holds every connection and answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`PrivateApiServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().expect("the private API server runs");
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// etcd goes away for this API server: its connections reset, new ones
    /// refused (what an etcd restart looks like from here).
    pub async fn cut_etcd(&mut self) {
        self.etcd.cut().await;
    }

    /// etcd is back.
    pub async fn restore_etcd(&mut self) {
        self.etcd.restore().await;
    }

    /// Until `/readyz` answers ok (etcd reachable, RBAC and the other
    /// post-start hooks done), or panic with the log's tail after `limit`.
    pub async fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "the private API server exited ({status}): {}",
                    self.log_tail()
                );
            }
            match self.readyz().await {
                Ok(text) if text.trim() == "ok" => return,
                Ok(text) => last = text,
                Err(error) => last = format!("{error:#}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the private API server is not ready within {limit:?}: {last}\n{}",
            self.log_tail()
        );
    }

    async fn readyz(&self) -> anyhow::Result<String> {
        let kubeconfig = Kubeconfig::read_from(crate::kubeconfig_path())?;
        let mut config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        config.cluster_url = self.url().parse()?;
        config.connect_timeout = Some(Duration::from_secs(1));
        config.read_timeout = Some(Duration::from_secs(2));
        let client = kube::Client::try_from(config)?;
        let request = http::Request::get("/readyz").body(Vec::new())?;
        Ok(client.request_text(request).await?)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("kube-apiserver.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for PrivateApiServer {
    fn drop(&mut self) {
        // SIGKILL ends a paused process too.
        self.kill();
    }
}

/// The program and arguments of the local cluster's own API server, from
/// its pid file (`<cluster>/run/kube-apiserver.pid`: pid, then program) and
/// `/proc/<pid>/cmdline`.
fn shared_command_line() -> (PathBuf, Vec<String>) {
    let pid_file = crate::cache_dir().join("cluster/run/kube-apiserver.pid");
    let record = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("{}: {e} (cargo xtask cluster up)", pid_file.display()));
    let pid = record.lines().next().unwrap_or_default().trim();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_else(|e| panic!("the shared API server (pid {pid}) is not running: {e}"));
    let mut parts = cmdline
        .strip_suffix(&[0])
        .unwrap_or(&cmdline)
        .split(|b| *b == 0)
        .map(|part| String::from_utf8_lossy(part).into_owned());
    let program = PathBuf::from(parts.next().expect("a program"));
    (program, parts.collect())
}
