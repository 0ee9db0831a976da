//! The real node, `real-node-0`: the kubelet 1.33 with a containerd of our
//! own (Debian's containerd and runc, through CRI), the CNI bridge
//! `vg-real0`, kube-proxy (iptables mode) and CoreDNS.
//!
//! ```text
//!  kubelet (10.235.0.1:32250, x509 clients of the cluster CA) ──CRI──► containerd
//!     │ (<cluster>/real-node/containerd: own root, state, socket, config)
//!     │                                 └─ runc ─► pods on vg-real0, 10.235.0.0/24
//!  kube-proxy: Service addresses (10.234.0.0/16) → endpoints, in iptables
//!  CoreDNS on 10.235.0.1:53 = Service kube-system/kube-dns (10.234.0.10)
//! ```
//!
//! The node carries the taint `views.dev/real-node=true:NoSchedule` and the
//! label `views.dev/real-node=true`, so only pods that ask for it land here:
//! with RuntimeClass `runc` (which adds both), or with the toleration and a
//! node selector. Images are never pulled: the sandbox image is built here
//! from `pause.c`, other images come from [`super::image`].
//!
//! Everything this module owns lives under `<cluster>/real-node/`; `down`
//! kills the node's containers and shims, removes kube-proxy's rules and
//! unmounts what the node mounted there.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::components::{API_PORT, Component, SERVICE_IP_DNS};
use super::image;
use super::network::{REAL_BRIDGE, REAL_NODE_IP, REAL_POD_CIDR};
use super::{Layout, kube_binaries};
use crate::{cmd, progress};

pub const NODE_NAME: &str = "real-node-0";
/// The label and taint that keep other pods off the node.
pub const REAL_NODE_LABEL: &str = "views.dev/real-node";
/// The RuntimeClass (and containerd runtime) that places a pod here.
pub const RUNTIME_CLASS: &str = "runc";
/// What containerd's CRI plugin runs as a pod's sandbox; built here.
const SANDBOX_IMAGE: (&str, &str) = ("registry.k8s.io/pause", "3.10");
const KUBELET_PORT: u16 = 32250;
const KUBELET_HEALTHZ_PORT: u16 = 32248;
const PROXY_METRICS_PORT: u16 = 32249;
const PROXY_HEALTHZ_PORT: u16 = 32256;
const COREDNS_HEALTH_PORT: u16 = 32253;
const COREDNS_READY_PORT: u16 = 32254;
pub const CLUSTER_DOMAIN: &str = "cluster.local";
const RUNC: &str = "/usr/sbin/runc";
const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// The Debian packages the node needs: (a file it installs, package).
/// Static busybox is what test images carry as their shell tools.
const PACKAGES: [(&str, &str); 6] = [
    ("/usr/bin/containerd", "containerd"),
    (RUNC, "runc"),
    ("/usr/lib/cni/bridge", "containernetworking-plugins"),
    ("/usr/sbin/iptables", "iptables"),
    ("/usr/sbin/conntrack", "conntrack"),
    ("/bin/busybox", "busybox-static"),
];

/// Where the node's files are.
struct Files {
    root: PathBuf,
}

impl Files {
    fn new(layout: &Layout) -> Self {
        Self {
            root: layout.root.join("real-node"),
        }
    }
    fn containerd(&self) -> PathBuf {
        self.root.join("containerd")
    }
    fn socket(&self) -> PathBuf {
        self.containerd().join("containerd.sock")
    }
    fn containerd_config(&self) -> PathBuf {
        self.containerd().join("config.toml")
    }
    fn cni_conf_dir(&self) -> PathBuf {
        self.root.join("cni").join("net.d")
    }
    fn ipam_dir(&self) -> PathBuf {
        self.root.join("cni").join("ipam")
    }
    fn kubelet_dir(&self) -> PathBuf {
        self.root.join("kubelet")
    }
    fn kubelet_config(&self) -> PathBuf {
        self.root.join("kubelet-config.yaml")
    }
    fn kubelet_kubeconfig(&self) -> PathBuf {
        self.root.join("kubelet.kubeconfig")
    }
    fn proxy_config(&self) -> PathBuf {
        self.root.join("kube-proxy-config.yaml")
    }
    fn corefile(&self) -> PathBuf {
        self.root.join("Corefile")
    }
}

/// The node's processes, in start order (containerd first: the kubelet
/// needs its socket and the sandbox image).
pub fn components(layout: &Layout, kube_bin: &Path) -> Vec<Component> {
    let files = Files::new(layout);
    let path = |p: PathBuf| p.display().to_string();
    vec![
        Component {
            name: "containerd",
            program: PathBuf::from("/usr/bin/containerd"),
            args: vec![format!("--config={}", path(files.containerd_config()))],
        },
        Component {
            name: "kubelet",
            program: kube_binaries::component(kube_bin, "kubelet"),
            args: vec![
                format!("--config={}", path(files.kubelet_config())),
                format!("--kubeconfig={}", path(files.kubelet_kubeconfig())),
                format!("--root-dir={}", path(files.kubelet_dir())),
                format!("--cert-dir={}", path(files.kubelet_dir().join("pki"))),
                // Never the machine's own interface: the node is the bridge.
                format!("--node-ip={REAL_NODE_IP}"),
                format!("--hostname-override={NODE_NAME}"),
                format!("--node-labels={REAL_NODE_LABEL}=true"),
            ],
        },
        Component {
            name: "kube-proxy",
            program: kube_binaries::component(kube_bin, "kube-proxy"),
            args: vec![format!("--config={}", path(files.proxy_config()))],
        },
        Component {
            name: "coredns",
            program: kube_binaries::component(kube_bin, kube_binaries::COREDNS),
            args: vec![format!("-conf={}", path(files.corefile()))],
        },
    ]
}

/// Install what is missing from Debian and write the node's configuration
/// (only files whose content changed are rewritten).
pub fn prepare(layout: &Layout) -> anyhow::Result<()> {
    cmd::ensure_debian_packages(&PACKAGES)?;
    let files = Files::new(layout);
    for dir in [
        files.containerd(),
        files.cni_conf_dir(),
        files.ipam_dir(),
        files.kubelet_dir(),
    ] {
        std::fs::create_dir_all(&dir)?;
    }
    let pki = &layout.pki;
    let path = |p: PathBuf| p.display().to_string();
    let containerd = files.containerd();
    write_if_changed(
        &files.containerd_config(),
        &toml::to_string(&json!({
            "version": 2,
            "root": path(containerd.join("root")),
            "state": path(containerd.join("state")),
            "grpc": {"address": path(files.socket())},
            "disabled_plugins": [
                "io.containerd.snapshotter.v1.aufs",
                "io.containerd.snapshotter.v1.btrfs",
                "io.containerd.snapshotter.v1.devmapper",
                "io.containerd.snapshotter.v1.zfs",
            ],
            "plugins": {
                "io.containerd.internal.v1.opt": {"path": path(containerd.join("opt"))},
                "io.containerd.grpc.v1.cri": {
                    "sandbox_image": format!("{}:{}", SANDBOX_IMAGE.0, SANDBOX_IMAGE.1),
                    // This machine refuses a negative oom_score_adj even to
                    // root; without this every sandbox fails in runc.
                    "restrict_oom_score_adj": true,
                    // Network namespaces under our state, so `down` can
                    // remove them (and their veths) by unmounting.
                    "netns_mounts_under_state_dir": true,
                    "containerd": {
                        "snapshotter": "overlayfs",
                        "default_runtime_name": RUNTIME_CLASS,
                        "runtimes": {RUNTIME_CLASS: {
                            "runtime_type": "io.containerd.runc.v2",
                            "options": {"BinaryName": RUNC, "SystemdCgroup": false},
                        }},
                    },
                    "cni": {"bin_dir": CNI_BIN_DIR, "conf_dir": path(files.cni_conf_dir())},
                },
            },
        }))?,
    )?;
    write_if_changed(
        &files.cni_conf_dir().join("10-views-real.conflist"),
        &serde_json::to_string_pretty(&json!({
            "cniVersion": "1.0.0",
            "name": "views-real",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": REAL_BRIDGE,
                    "isGateway": true,
                    // No masquerading: pods reach only this machine.
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": REAL_POD_CIDR, "gateway": REAL_NODE_IP.to_string()}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": path(files.ipam_dir()),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": true}},
            ],
        }))?,
    )?;
    write_if_changed(
        &files.kubelet_kubeconfig(),
        &serde_json::to_string_pretty(&json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "views-local", "cluster": {
                "server": format!("https://127.0.0.1:{API_PORT}"),
                "certificate-authority": pki.ca_cert(),
            }}],
            "users": [{"name": NODE_NAME, "user": {
                "client-certificate": pki.kubelet_client_cert(),
                "client-key": pki.kubelet_client_key(),
            }}],
            "contexts": [{"name": "views-local", "context": {"cluster": "views-local", "user": NODE_NAME}}],
            "current-context": "views-local",
        }))?,
    )?;
    // JSON is YAML: the kubelet and kube-proxy read these as their configs.
    write_if_changed(
        &files.kubelet_config(),
        &serde_json::to_string_pretty(&json!({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": REAL_NODE_IP.to_string(),
            "port": KUBELET_PORT,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": KUBELET_HEALTHZ_PORT,
            "tlsCertFile": pki.kubelet_cert(),
            "tlsPrivateKeyFile": pki.kubelet_key(),
            // Only clients with a certificate of the cluster CA (the API
            // server for logs and exec), each authorized by the API server.
            "authentication": {
                "anonymous": {"enabled": false},
                "webhook": {"enabled": true},
                "x509": {"clientCAFile": pki.ca_cert()},
            },
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": format!("unix://{}", path(files.socket())),
            "clusterDNS": [SERVICE_IP_DNS.to_string()],
            "clusterDomain": CLUSTER_DOMAIN,
            // Pods get the cluster's DNS only, never this machine's resolvers.
            "resolvConf": "",
            "registerWithTaints": [{"key": REAL_NODE_LABEL, "value": "true", "effect": "NoSchedule"}],
            // This machine: cgroup v1 (with a v2 `unified` mount beside it),
            // swap allowed, no negative oom_score_adj for the kubelet.
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": false,
            "failSwapOn": false,
            "oomScoreAdj": 0,
            "localStorageCapacityIsolation": false,
            "evictionHard": {},
            // Images cannot be pulled again: never collect them.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "podLogsDir": path(files.root.join("pod-logs")),
            "volumePluginDir": path(files.kubelet_dir().join("volume-plugins")),
            "staticPodPath": "",
        }))?,
    )?;
    write_if_changed(
        &files.proxy_config(),
        &serde_json::to_string_pretty(&json!({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": path(layout.kubeconfig.clone())},
            "mode": "iptables",
            "hostnameOverride": NODE_NAME,
            "clusterCIDR": REAL_POD_CIDR,
            "healthzBindAddress": format!("127.0.0.1:{PROXY_HEALTHZ_PORT}"),
            "metricsBindAddress": format!("127.0.0.1:{PROXY_METRICS_PORT}"),
            // NodePorts only on the node's own address (no route_localnet).
            "nodePortAddresses": [REAL_POD_CIDR],
            "oomScoreAdj": 0,
            // Leave the machine's conntrack settings alone.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "iptables": {"localhostNodePorts": false, "minSyncPeriod": "1s", "syncPeriod": "30s"},
        }))?,
    )?;
    write_if_changed(
        &files.corefile(),
        &format!(
            "{CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {{\n    \
                 bind {REAL_NODE_IP}\n    \
                 errors\n    \
                 health 127.0.0.1:{COREDNS_HEALTH_PORT}\n    \
                 ready 127.0.0.1:{COREDNS_READY_PORT}\n    \
                 kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{\n        \
                     kubeconfig {} views-local\n        \
                     pods insecure\n        \
                     ttl 5\n    \
                 }}\n\
             }}\n",
            layout.kubeconfig.display()
        ),
    )?;
    Ok(())
}

fn write_if_changed(path: &Path, contents: &str) -> anyhow::Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() != Some(contents) {
        std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `ctr` against the node's containerd, in the CRI plugin's namespace.
pub fn ctr(layout: &Layout) -> Command {
    let mut command = Command::new("ctr");
    command
        .arg("--address")
        .arg(Files::new(layout).socket())
        .args(["--namespace", "k8s.io"]);
    command
}

/// Wait for containerd's socket to answer, failing fast if it exits.
pub fn wait_for_containerd(layout: &Layout, containerd: &Component) -> anyhow::Result<()> {
    let socket = Files::new(layout).socket();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if containerd.running(layout).is_none() || Instant::now() > deadline {
            bail!(
                "containerd did not start listening on {}; see {}",
                socket.display(),
                containerd.log_file(layout).display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Build the sandbox image from `pause.c` (compiled once per source) and
/// import it unless containerd has it.
pub fn ensure_sandbox_image(layout: &Layout) -> anyhow::Result<()> {
    let source = include_str!("real_node/pause.c");
    let hash: String = Sha256::digest(source)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = layout.root.join("images");
    let binary = dir.join(format!("pause-{hash}"));
    if !binary.exists() {
        std::fs::create_dir_all(&dir)?;
        let source_file = dir.join("pause.c");
        std::fs::write(&source_file, source)?;
        let partial = binary.with_extension("partial");
        let status = Command::new("gcc")
            .args(["-static", "-s", "-O2", "-o"])
            .arg(&partial)
            .arg(&source_file)
            .status()
            .context("running gcc")?;
        if !status.success() {
            bail!("compiling the sandbox image's pause.c failed ({status})");
        }
        std::fs::rename(&partial, &binary)?;
    }
    let spec = image::Spec {
        name: SANDBOX_IMAGE.0.to_owned(),
        tag: Some(SANDBOX_IMAGE.1.to_owned()),
        files: [("/pause".to_owned(), binary)].into(),
        entrypoint: vec!["/pause".to_owned()],
        user: None,
        env: Vec::new(),
    };
    image::ensure(layout, &spec)?;
    Ok(())
}

/// The Kubernetes objects the node needs besides itself (it registers
/// itself): who may use its kubelet API, the RuntimeClass that places pods
/// on it, and the cluster DNS Service pointing at CoreDNS.
pub fn objects() -> Vec<serde_json::Value> {
    vec![
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "views:apiserver-kubelet-client"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:kubelet-api-admin",
            },
            "subjects": [{
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "User",
                "name": super::pki::APISERVER_KUBELET_CLIENT,
            }],
        }),
        json!({
            "apiVersion": "node.k8s.io/v1",
            "kind": "RuntimeClass",
            "metadata": {"name": RUNTIME_CLASS},
            "handler": RUNTIME_CLASS,
            "scheduling": {
                "nodeSelector": {REAL_NODE_LABEL: "true"},
                "tolerations": [{
                    "key": REAL_NODE_LABEL, "operator": "Equal",
                    "value": "true", "effect": "NoSchedule",
                }],
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kube-dns",
                "namespace": "kube-system",
                "labels": {"k8s-app": "kube-dns"},
            },
            // No selector: CoreDNS is a process on the node, its endpoint
            // is the slice below.
            "spec": {
                "clusterIP": SERVICE_IP_DNS.to_string(),
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                ],
            },
        }),
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kube-dns-coredns",
                "namespace": "kube-system",
                "labels": {
                    "kubernetes.io/service-name": "kube-dns",
                    "endpointslice.kubernetes.io/managed-by": "views-cluster",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{
                "addresses": [REAL_NODE_IP.to_string()],
                "conditions": {"ready": true},
                "nodeName": NODE_NAME,
            }],
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            ],
        }),
    ]
}

/// Stop the node: its processes (last started, first stopped), every
/// container it ran, kube-proxy's rules and whatever it mounted.
pub fn down(layout: &Layout, components: &[Component]) -> anyhow::Result<()> {
    let files = Files::new(layout);
    for component in components.iter().rev() {
        if component.name == "containerd" {
            // The kubelet is gone: nothing restarts the containers now.
            kill_containers();
        }
        if component.stop(layout)? {
            progress::info(format!("stopped {}", component.name));
        }
    }
    kill_shims(&files.socket());
    if let Some(proxy) = components.iter().find(|c| c.name == "kube-proxy") {
        // Removes kube-proxy's iptables chains; its other modes' cleanups
        // fail harmlessly where their tools are missing.
        let _ = Command::new(&proxy.program)
            .arg("--cleanup")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    unmount_under(&files.root)?;
    // Every pod is gone, and with it every address lease.
    let _ = std::fs::remove_dir_all(files.ipam_dir());
    Ok(())
}

/// SIGKILL every process in the pods' cgroups (the kubelet's `kubepods`,
/// in the memory hierarchy of cgroup v1 or in cgroup v2's single one).
fn kill_containers() {
    fn walk(dir: &Path) {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse().ok()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&entry.path());
            }
        }
    }
    for root in ["/sys/fs/cgroup/memory/kubepods", "/sys/fs/cgroup/kubepods"] {
        walk(Path::new(root));
    }
}

/// SIGKILL the containerd shims our containerd started (they outlive it).
fn kill_shims(socket: &Path) {
    let socket = socket.as_os_str().as_encoded_bytes();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let mut args = cmdline.split(|b| *b == 0);
        let is_shim = args
            .next()
            .is_some_and(|argv0| argv0.ends_with(b"containerd-shim-runc-v2"));
        if is_shim && args.any(|arg| arg == socket) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Unmount everything mounted under `root` (container root file systems,
/// pod volumes, network namespaces), deepest first.
pub fn unmount_under(root: &Path) -> anyhow::Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| Path::new(point).starts_with(root))
        .collect();
    points.sort_by_key(|point| std::cmp::Reverse(point.len()));
    for point in points {
        let status = Command::new("umount")
            .args(["--lazy", point])
            .status()
            .context("running umount")?;
        if !status.success() {
            bail!("umount {point} failed ({status})");
        }
    }
    Ok(())
}
