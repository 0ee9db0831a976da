//! `cargo xtask test`: everything CI runs. Lint, build the workspace (tests
//! run real binaries from it as pod processes), bring up (or reuse) the local
//! cluster, the S3 lake and the OIDC provider, build the view image from its
//! Dockerfile into the real node, every Rust test, then the
//! end-to-end suite in Chromium against the whole stack (`cargo xtask e2e`:
//! reuses a running `dev` gateway, or starts one and stops it again
//! afterwards).

use crate::{browser, cluster, cmd, e2e, images, lake, lint, oidc, progress};

pub fn run() -> anyhow::Result<()> {
    lint::run()?;
    browser::ensure()?;

    let step = progress::step("cargo build --workspace (binaries used as pod processes)");
    cmd::cargo(&["build", "--workspace", "--bins", "--quiet"])?;
    step.done();

    let step = progress::step("local cluster");
    cluster::up()?;
    step.done();

    let step = progress::step("S3 lake with sample data");
    lake::ensure_running()?;
    step.done();

    let step = progress::step("OpenID Connect provider");
    oidc::ensure_running()?;
    step.done();

    // From its Dockerfile, once per run (cached layers make an unchanged
    // tree quick): the view image, which the real node's tests run. The
    // gateway's and the lake's images (`cargo xtask images`) join once a
    // test runs them: each is a release build of its own, the sidecar's
    // ~30 min on a fresh 2-core machine, which CI's 90 minutes cannot spare
    // for an image nothing runs yet.
    let step = progress::step("the view image from its Dockerfile, loaded into the real node");
    images::build(&[images::Image::DuckdbView], false)?;
    step.done();

    let step = progress::step("cargo test --workspace");
    cmd::cargo(&["test", "--workspace", "--no-fail-fast"])?;
    step.done();

    e2e::run()
}
