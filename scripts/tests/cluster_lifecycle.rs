//! `cluster up` is idempotent and fast: on a running cluster it returns in
//! under 5 s and changes nothing; from cached binaries a cold start reaches a
//! ready API in under 30 s. This stops and restarts the cluster, so it lives
//! in its own test binary (cargo runs test binaries one after another).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use googletest::prelude::*;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{Api, ListParams};

fn xtask(args: &[&str]) -> std::process::Output {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("running xtask");
    assert!(
        output.status.success(),
        "xtask {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn cluster_dir() -> PathBuf {
    test_support::kubeconfig_path()
        .parent()
        .expect("cluster dir")
        .to_path_buf()
}

/// Every pid file of the cluster with its content.
fn pids() -> BTreeMap<String, String> {
    std::fs::read_dir(cluster_dir().join("run"))
        .expect("run dir")
        .map(|entry| {
            let entry = entry.expect("entry");
            let pid = std::fs::read_to_string(entry.path()).expect("pid file");
            (entry.file_name().to_string_lossy().into_owned(), pid)
        })
        .collect()
}

async fn runtime_class_version(client: kube::Client) -> Option<String> {
    Api::<RuntimeClass>::all(client)
        .get("process")
        .await
        .expect("RuntimeClass process")
        .metadata
        .resource_version
}

#[gtest]
#[tokio::test]
async fn up_reuses_a_running_cluster_and_starts_a_stopped_one_quickly() {
    let client = test_support::client().await;
    let pids_before = pids();
    let version_before = runtime_class_version(client.clone()).await;
    let pki_before = std::fs::metadata(cluster_dir().join("pki/ca.crt"))
        .and_then(|m| m.modified())
        .ok();

    let started = Instant::now();
    let output = xtask(&["cluster", "up"]);
    let warm = started.elapsed();

    expect_that!(warm, lt(Duration::from_secs(5)));
    expect_that!(
        String::from_utf8_lossy(&output.stderr).as_ref(),
        contains_substring("reusing it")
    );
    expect_that!(pids(), eq(&pids_before));
    expect_that!(
        runtime_class_version(client.clone()).await,
        eq(&version_before)
    );
    expect_that!(
        std::fs::metadata(cluster_dir().join("pki/ca.crt"))
            .and_then(|m| m.modified())
            .ok(),
        eq(pki_before)
    );
    expect_that!(pids_before.len(), eq(11));

    xtask(&["cluster", "down"]);
    expect_that!(pids(), is_empty());

    let started = Instant::now();
    xtask(&["cluster", "up"]);
    let cold = started.elapsed();

    expect_that!(cold, lt(Duration::from_secs(30)));
    let client = test_support::client().await;
    let nodes = Api::<Node>::all(client)
        .list(&ListParams::default())
        .await
        .expect("nodes");
    expect_that!(nodes.items.len(), eq(3));
    eprintln!("cluster up: {warm:?} on a running cluster, {cold:?} cold from cached binaries");
}
