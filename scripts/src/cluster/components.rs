//! The processes of the local cluster: what each one runs with, and starting,
//! recognising and stopping them.
//!
//! Each component runs detached in its own process group, logs to
//! `<cluster>/logs/<name>.log` and records its pid and program in
//! `<cluster>/run/<name>.pid`. A pid counts as ours only while
//! `/proc/<pid>/cmdline` still names that program, so `down` never signals a
//! stranger that reused the pid.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::Layout;
use super::network::{HOST_IP, SIMULATED_POD_CIDR};

pub const ETCD_CLIENT_PORT: u16 = 32379;
const ETCD_PEER_PORT: u16 = 32380;
pub const API_PORT: u16 = 32443;
const CONTROLLER_MANAGER_PORT: u16 = 32257;
const SCHEDULER_PORT: u16 = 32259;
const KWOK_PORT: u16 = 32247;
const SERVICE_CIDR: &str = "10.234.0.0/16";
/// The ClusterIP of the `kubernetes` Service: the first address of the range.
pub const SERVICE_IP_KUBERNETES: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 234, 0, 1));
/// The cluster DNS Service's address (`kube-system/kube-dns`), in the part of
/// the range the API server keeps for addresses asked for by name.
pub const SERVICE_IP_DNS: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 234, 0, 10));

/// One process of the cluster.
pub struct Component {
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// Every component, in start order, with flags equivalent to kwokctl's
/// binary runtime (RBAC on, default controllers) tuned for one small machine:
/// no leader election (a restart would otherwise wait out the old lease),
/// no fsync in etcd, higher client QPS so controllers keep up with thousands
/// of views.
pub fn all(layout: &Layout, kube_bin: &Path, pod_runner: Component) -> Vec<Component> {
    let pki = &layout.pki;
    let kubeconfig = layout.kubeconfig.display().to_string();
    let path = |p: PathBuf| p.display().to_string();
    let etcd_client = format!("http://127.0.0.1:{ETCD_CLIENT_PORT}");
    let etcd_peer = format!("http://127.0.0.1:{ETCD_PEER_PORT}");
    let component = |name: &'static str, args: Vec<String>| Component {
        name,
        program: kube_bin.join(name),
        args,
    };
    vec![
        component(
            "etcd",
            vec![
                "--name=node0".into(),
                format!("--data-dir={}", path(layout.root.join("etcd"))),
                format!("--listen-client-urls={etcd_client}"),
                format!("--advertise-client-urls={etcd_client}"),
                format!("--listen-peer-urls={etcd_peer}"),
                format!("--initial-advertise-peer-urls={etcd_peer}"),
                format!("--initial-cluster=node0={etcd_peer}"),
                "--auto-compaction-retention=1".into(),
                "--quota-backend-bytes=8589934592".into(),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
        ),
        component(
            "kube-apiserver",
            vec![
                format!("--etcd-servers={etcd_client}"),
                "--etcd-prefix=/registry".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={API_PORT}"),
                // Advertised (the `kubernetes` endpoint) on the pod network:
                // the API server refuses a loopback address there.
                format!("--advertise-address={HOST_IP}"),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                format!("--tls-cert-file={}", path(pki.apiserver_cert())),
                format!("--tls-private-key-file={}", path(pki.apiserver_key())),
                format!("--client-ca-file={}", path(pki.ca_cert())),
                format!(
                    "--service-account-key-file={}",
                    path(pki.service_account_pub())
                ),
                format!(
                    "--service-account-signing-key-file={}",
                    path(pki.service_account_key())
                ),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                "--authorization-mode=Node,RBAC".into(),
                "--allow-privileged=true".into(),
                // Logs, exec and port-forward reach the real node's kubelet
                // at its InternalIP (the bridge address: never the machine's
                // hostname), verified against the cluster CA, as a client the
                // kubelet authorizes through this API server.
                format!(
                    "--kubelet-client-certificate={}",
                    path(pki.apiserver_kubelet_client_cert())
                ),
                format!(
                    "--kubelet-client-key={}",
                    path(pki.apiserver_kubelet_client_key())
                ),
                format!("--kubelet-certificate-authority={}", path(pki.ca_cert())),
                "--kubelet-preferred-address-types=InternalIP".into(),
                "--max-requests-inflight=2000".into(),
                "--max-mutating-requests-inflight=1000".into(),
            ],
        ),
        component(
            "kube-controller-manager",
            vec![
                format!("--kubeconfig={kubeconfig}"),
                format!("--authentication-kubeconfig={kubeconfig}"),
                format!("--authorization-kubeconfig={kubeconfig}"),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={CONTROLLER_MANAGER_PORT}"),
                "--leader-elect=false".into(),
                format!("--root-ca-file={}", path(pki.ca_cert())),
                format!(
                    "--service-account-private-key-file={}",
                    path(pki.service_account_key())
                ),
                format!("--cluster-signing-cert-file={}", path(pki.ca_cert())),
                format!("--cluster-signing-key-file={}", path(pki.ca_key())),
                "--kube-api-qps=500".into(),
                "--kube-api-burst=1000".into(),
                "--concurrent-job-syncs=20".into(),
                "--concurrent-gc-syncs=50".into(),
                "--concurrent-service-endpoint-syncs=20".into(),
            ],
        ),
        component(
            "kube-scheduler",
            vec![
                format!("--kubeconfig={kubeconfig}"),
                format!("--authentication-kubeconfig={kubeconfig}"),
                format!("--authorization-kubeconfig={kubeconfig}"),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={SCHEDULER_PORT}"),
                "--leader-elect=false".into(),
            ],
        ),
        component(
            "kwok",
            vec![
                format!("--kubeconfig={kubeconfig}"),
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".into(),
                format!("--cidr={SIMULATED_POD_CIDR}"),
                format!("--node-ip={HOST_IP}"),
                "--node-lease-duration-seconds=40".into(),
                format!("--server-address=127.0.0.1:{KWOK_PORT}"),
                format!("--config={}", path(layout.kwok_stages.clone())),
            ],
        ),
        pod_runner,
    ]
}

/// This program's path, for the components that run one of its
/// subcommands (the pod runner, the forwards). Cargo may rebuild the program
/// while it runs (`cargo test --workspace` relinks the xtask binary before
/// the e2e suite deploys the gateway: a CI run failed on it), and then
/// `/proc/self/exe` names the replaced file "<path> (deleted)"; the program
/// to start is the rebuilt one at the same path.
pub fn this_program() -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe().context("the path of this program")?;
    Ok(undeleted(path))
}

fn undeleted(path: PathBuf) -> PathBuf {
    match path.to_str().and_then(|p| p.strip_suffix(" (deleted)")) {
        Some(original) => PathBuf::from(original),
        None => path,
    }
}

impl Component {
    fn pid_file(&self, layout: &Layout) -> PathBuf {
        layout.run.join(format!("{}.pid", self.name))
    }

    pub fn log_file(&self, layout: &Layout) -> PathBuf {
        layout.logs.join(format!("{}.log", self.name))
    }

    /// The pid of the running process we started, if any. The pid file
    /// records the program too, so a process started from an older build of
    /// the binaries is still recognised (and stopped) as ours.
    pub fn running(&self, layout: &Layout) -> Option<Pid> {
        let record = std::fs::read_to_string(self.pid_file(layout)).ok()?;
        let (pid, program) = record.split_once('\n')?;
        let pid: i32 = pid.trim().parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let argv0 = cmdline.split(|b| *b == 0).next()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // A zombie (exited, not yet reaped) no longer counts as running.
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'));
        (argv0 == program.trim_end().as_bytes() && !zombie).then(|| Pid::from_raw(pid))
    }

    /// Start the process detached, appending to its log.
    pub fn start(&self, layout: &Layout) -> anyhow::Result<Pid> {
        self.start_with_env(layout, &[])
    }

    /// Start the process detached with extra environment variables.
    pub fn start_with_env(&self, layout: &Layout, env: &[(&str, String)]) -> anyhow::Result<Pid> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file(layout))?;
        let child = {
            use std::os::unix::process::CommandExt;
            let mut command = Command::new(&self.program);
            command
                .args(&self.args)
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .process_group(0);
            // SAFETY: one system call, async-signal-safe, between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    // The process outlives the command that starts it: it must
                    // not hold what that command was given besides stdio (a
                    // `flock` lock it runs under, a CI runner's pipe that is then
                    // never closed). Marked close-on-exec rather than closed, so
                    // std's own pipe still reports a failed exec.
                    nix::libc::syscall(
                        nix::libc::SYS_close_range,
                        3u32,
                        u32::MAX,
                        nix::libc::CLOSE_RANGE_CLOEXEC,
                    );
                    Ok(())
                });
            }
            command
                .spawn()
                .with_context(|| format!("starting {}", self.program.display()))?
        };
        let pid = Pid::from_raw(child.id() as i32);
        // Until the child has exec'd, /proc shows our own command line, and
        // `running` would call it a stranger: wait for the exec (or an exit).
        let mut child = child;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.has_exec(pid) && child.try_wait()?.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::fs::write(
            self.pid_file(layout),
            format!("{pid}\n{}\n", self.program.display()),
        )?;
        Ok(pid)
    }

    /// Whether the running process `pid` was started with this component's
    /// current arguments (a changed flag calls for a restart).
    pub fn args_match(&self, pid: Pid) -> bool {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
            let running: Vec<&[u8]> = cmdline
                .strip_suffix(&[0])
                .unwrap_or(&cmdline)
                .split(|b| *b == 0)
                .skip(1)
                .collect();
            running.len() == self.args.len()
                && running
                    .iter()
                    .zip(&self.args)
                    .all(|(running, arg)| *running == arg.as_bytes())
        })
    }

    fn has_exec(&self, pid: Pid) -> bool {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
            cmdline.split(|b| *b == 0).next() == Some(self.program.as_os_str().as_encoded_bytes())
        })
    }

    /// Stop the process if it is ours: SIGTERM, then SIGKILL after a grace.
    pub fn stop(&self, layout: &Layout) -> anyhow::Result<bool> {
        let Some(pid) = self.running(layout) else {
            let _ = std::fs::remove_file(self.pid_file(layout));
            return Ok(false);
        };
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.running(layout).is_some() {
            if Instant::now() > deadline {
                let _ = kill(pid, Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_file(self.pid_file(layout));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_program_is_started_from_its_path() {
        assert_eq!(
            undeleted("/t/debug/xtask (deleted)".into()),
            PathBuf::from("/t/debug/xtask")
        );
        assert_eq!(
            undeleted("/t/debug/xtask".into()),
            PathBuf::from("/t/debug/xtask")
        );
    }
}
