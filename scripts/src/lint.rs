//! `cargo xtask lint`: formatting, clippy with warnings as errors, generated
//! files up to date, Go formatting of the control-plane module.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::{cluster, cmd, envoy, paths, progress, schemas};

pub fn run() -> anyhow::Result<()> {
    // duckdb-view links DuckDB's prebuilt library: fetch it before cargo builds.
    crate::duckdb_runtime::ensure()?;
    let step = progress::step("cargo fmt --check");
    cmd::cargo(&["fmt", "--all", "--check"])?;
    step.done();

    let step = progress::step("cargo clippy --all-targets -- -D warnings");
    cmd::cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ])?;
    step.done();

    schemas::run(true)?;
    openapi_valid()?;

    let step = progress::step("gofmt scripts/kube");
    let output = Command::new("gofmt")
        .args(["-l", "."])
        .current_dir(paths::repo_root().join("scripts").join("kube"))
        .output()?;
    let unformatted = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || !unformatted.trim().is_empty() {
        bail!("gofmt: not formatted: {unformatted}");
    }
    step.done();

    gateway_base()?;
    k3d_example()
}

/// openapi-spec-validator (a standard validator, from PyPI) accepts
/// `ui/types/openapi.json`, the document the sidecar serves at
/// `/_api/openapi.json`.
fn openapi_valid() -> anyhow::Result<()> {
    const VALIDATOR: &str = "openapi-spec-validator";
    const VERSION: &str = "0.9.0";
    let venv = paths::cache_dir()
        .join("tools")
        .join(format!("{VALIDATOR}-{VERSION}"));
    let validator = venv.join("bin").join(VALIDATOR);
    if !validator.exists() {
        let step = progress::step(format!("installing {VALIDATOR} {VERSION} (PyPI)"));
        cmd::python_venv(&venv, &format!("{VALIDATOR}=={VERSION}"))?;
        step.done();
    }
    let step = progress::step(format!("{VALIDATOR} ui/types/openapi.json"));
    let output = Command::new(&validator)
        .arg(paths::repo_root().join("ui/types/openapi.json"))
        .output()
        .with_context(|| format!("running {}", validator.display()))?;
    if !output.status.success() {
        bail!(
            "ui/types/openapi.json is not valid OpenAPI:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    step.done();
    Ok(())
}

/// `ui/gateway`: kustomize builds it, Envoy accepts its bootstrap, and the
/// API server accepts its manifests (server-side dry run, so admission and
/// schema validation run for real).
fn gateway_base() -> anyhow::Result<()> {
    // Builds the control plane (and so kubectl) on a fresh machine, and gives
    // the dry run an API server to talk to.
    cluster::up()?;
    let kubectl = cluster::kubectl()?;
    let base = paths::repo_root().join("ui").join("gateway");

    let step = progress::step(format!(
        "envoy {} --mode validate ui/gateway/envoy.yaml",
        envoy::VERSION
    ));
    let output = Command::new(envoy::ensure()?)
        .args(["--mode", "validate", "--config-path"])
        .arg(base.join("envoy.yaml"))
        .output()?;
    if !output.status.success() {
        bail!(
            "Envoy rejects ui/gateway/envoy.yaml:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    step.done();

    // The base sets no namespace: it goes wherever the installer says.
    render_and_dry_run(&kubectl, &base, Some("default"))?;
    Ok(())
}

/// `kubectl kustomize <dir>`, then a server-side apply dry run of the result
/// against the local cluster: the API server defaults, validates (schema,
/// server-side apply's list merge keys, e.g. two env entries of one name)
/// and admits the objects for real, and stores nothing. `namespace` is where
/// objects that name none go (None: the kubeconfig's, `default`; kubectl
/// refuses objects naming another namespace than one given). Returns the
/// objects as the API server would have stored them.
fn render_and_dry_run(
    kubectl: &Path,
    dir: &Path,
    namespace: Option<&str>,
) -> anyhow::Result<Vec<Value>> {
    let name = dir
        .strip_prefix(paths::repo_root())
        .unwrap_or(dir)
        .display()
        .to_string();

    let rendered = kustomize(kubectl, dir, &name)?;

    let step = progress::step(format!("server-side dry-run apply of {name}"));
    let mut apply = Command::new(kubectl);
    // --force-conflicts: taking over fields another manager applied is never
    // stored in a dry run, and the result must not depend on who else applied
    // the same objects to this cluster.
    apply
        .args([
            "apply",
            "--server-side",
            "--dry-run=server",
            "--force-conflicts",
        ])
        .args(["--field-manager=views-gateway-lint", "--output=json"]);
    if let Some(namespace) = namespace {
        apply.arg(format!("--namespace={namespace}"));
    }
    let output = kubectl_with_input(apply.args(["--filename", "-"]), rendered)?;
    if !output.status.success() {
        bail!(
            "the API server rejects {name}:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // One object comes back as itself, several as a List.
    let mut answer: Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("reading kubectl's answer for {name}"))?;
    let objects = if answer["kind"] == "List" {
        match answer["items"].take() {
            Value::Array(items) => items,
            _ => Vec::new(),
        }
    } else {
        vec![answer]
    };
    step.done();
    Ok(objects)
}

/// `kubectl kustomize <dir>`: the rendered manifests.
fn kustomize(kubectl: &Path, dir: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    let step = progress::step(format!("kubectl kustomize {name}"));
    let output = Command::new(kubectl).arg("kustomize").arg(dir).output()?;
    if !output.status.success() {
        bail!(
            "kustomize {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    step.done();
    Ok(output.stdout)
}

/// Where lint dry-runs `k3d-example`: a namespace of its own, not the
/// overlay's `views`, which `cargo xtask dev` and the e2e tests use in the same
/// local cluster. Their live objects there would turn the dry run into an
/// update of whatever they left (immutable fields and all), and lint must not
/// touch their namespace.
const K3D_LINT_NAMESPACE: &str = "k3d-example-lint";

/// `k3d-example`: the overlay renders and the API server accepts it; every
/// image it names is pinned; its pins agree with the local tools' (the lake's
/// DuckDB, AWS CLI and s3s-fs versions); and its sample-data generator is the
/// local lake's.
fn k3d_example() -> anyhow::Result<()> {
    let root = paths::repo_root();
    let example = root.join("k3d-example");
    let kubectl = cluster::kubectl()?;

    // The overlay as users apply it renders...
    kustomize(&kubectl, &example, "k3d-example")?;

    // ... and the API server accepts it, moved into K3D_LINT_NAMESPACE by an
    // overlay of the overlay: kustomize's namespace transformer renames the
    // Namespace object and every reference (the RoleBinding's subject), so
    // nothing else changes. It lives in the repository's (ignored) target/
    // so that its path to k3d-example is relative, as kustomize requires.
    let lint_overlay = root.join("target").join("lint").join("k3d-example");
    std::fs::create_dir_all(&lint_overlay)
        .with_context(|| format!("creating {}", lint_overlay.display()))?;
    std::fs::write(
        lint_overlay.join("kustomization.yaml"),
        format!(
            "# Written by `cargo xtask lint`: k3d-example, in a namespace of lint's own.\n\
             apiVersion: kustomize.config.k8s.io/v1beta1\n\
             kind: Kustomization\n\
             namespace: {K3D_LINT_NAMESPACE}\n\
             resources:\n\
             - ../../../k3d-example\n"
        ),
    )?;

    // A dry run of objects in a namespace that does not exist fails (the
    // dry-run Namespace in the same apply is not stored), so the namespace is
    // created for real: empty, it is harmless in the shared local cluster,
    // applying it again is a no-op, and it is left in place on purpose:
    // deleting it would leave it Terminating, which fails a concurrent or the
    // next lint run.
    let step = progress::step(format!("namespace {K3D_LINT_NAMESPACE} (for real)"));
    let namespace = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": K3D_LINT_NAMESPACE },
    });
    let output = kubectl_with_input(
        Command::new(&kubectl)
            .args([
                "apply",
                "--server-side",
                "--field-manager=views-gateway-lint",
            ])
            .args(["--filename", "-"]),
        serde_json::to_vec(&namespace)?,
    )?;
    if !output.status.success() {
        bail!(
            "creating namespace {K3D_LINT_NAMESPACE}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    step.done();

    // The overlay names the namespace of every object itself.
    let objects = render_and_dry_run(&kubectl, &lint_overlay, None)?;

    let step = progress::step("k3d-example: images pinned, versions agree with the local lake's");
    let mut problems = Vec::new();
    let mut env = std::collections::BTreeMap::new();
    for object in &objects {
        collect_images_and_env(object, &mut problems, &mut env);
    }
    let duckdb = duckdb_version(&root)?;
    let expected = [
        ("DUCKDB_VERSION", duckdb.as_str()),
        ("AWSCLI_VERSION", crate::lake::AWSCLI_VERSION),
    ];
    for (variable, version) in expected {
        match env.get(variable) {
            Some(value) if value == version => {}
            other => problems.push(format!(
                "env {variable} is {}, the local lake uses {version}",
                other.map_or("unset", String::as_str)
            )),
        }
    }
    let s3s_fs = crate::lake::S3S_FS_VERSION;
    let lake_image = format!("ghcr.io/views-gateway/s3s-fs:{s3s_fs}");
    if !objects.iter().any(|o| {
        o["metadata"]["name"] == "lake"
            && o["spec"]["template"]["spec"]["containers"][0]["image"] == lake_image.as_str()
    }) {
        problems.push(format!("the lake Deployment does not run {lake_image}"));
    }
    let dockerfile = read(&example.join("lake").join("Dockerfile"))?;
    if !dockerfile.contains(&format!("ARG S3S_FS_VERSION={s3s_fs}\n")) {
        problems.push(format!(
            "k3d-example/lake/Dockerfile does not build s3s-fs {s3s_fs}"
        ));
    }
    if !problems.is_empty() {
        bail!("k3d-example:\n  {}", problems.join("\n  "));
    }
    step.done();
    Ok(())
}

/// Every `image` in `value` (containers of any pod template) and every
/// `VIEW_IMAGE` must carry a version tag (or a digest), never `latest`; the
/// values of all plain env entries are collected by name.
fn collect_images_and_env(
    value: &Value,
    problems: &mut Vec<String>,
    env: &mut std::collections::BTreeMap<String, String>,
) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(image)) = map.get("image") {
                check_pinned(image, problems);
            }
            if let (Some(Value::String(name)), Some(Value::String(plain))) =
                (map.get("name"), map.get("value"))
            {
                if name == "VIEW_IMAGE" {
                    check_pinned(plain, problems);
                }
                env.insert(name.clone(), plain.clone());
            }
            for child in map.values() {
                collect_images_and_env(child, problems, env);
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_images_and_env(item, problems, env);
            }
        }
        _ => {}
    }
}

fn check_pinned(image: &str, problems: &mut Vec<String>) {
    // The tag is in the last path segment (a registry's port is not a tag).
    let last = image.rsplit('/').next().unwrap_or(image);
    let pinned = last.contains('@')
        || last
            .split_once(':')
            .is_some_and(|(_, tag)| !tag.is_empty() && tag != "latest");
    if !pinned {
        problems.push(format!("image {image} is not pinned by a version tag"));
    }
}

/// The DuckDB release `ui/duckdb-view/duckdb-runtime.toml` pins.
fn duckdb_version(root: &Path) -> anyhow::Result<String> {
    let pins = root
        .join("ui")
        .join("duckdb-view")
        .join("duckdb-runtime.toml");
    let pins: toml::Table =
        toml::from_str(&read(&pins)?).with_context(|| format!("parsing {}", pins.display()))?;
    pins.get("version")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .context("duckdb-runtime.toml has no version")
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Run `kubectl` (a command with its arguments) against the local cluster
/// with `input` on its stdin, collecting its output.
fn kubectl_with_input(
    kubectl: &mut Command,
    input: Vec<u8>,
) -> anyhow::Result<std::process::Output> {
    let mut child = kubectl
        .arg("--kubeconfig")
        .arg(cluster::kubeconfig())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting kubectl")?;
    // Written from another thread: kubectl may answer before it has read
    // everything, and neither side may block the other on a full pipe.
    let mut stdin = child.stdin.take().context("kubectl's stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output()?;
    let written = writer.join().expect("the writer thread does not panic");
    // A failed write shows as kubectl's failure; report that one first.
    if output.status.success() {
        written.context("writing kubectl's input")?;
    }
    Ok(output)
}
