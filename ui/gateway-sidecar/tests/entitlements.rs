//! The entitlements ConfigMap against the local cluster: creating, changing,
//! breaking and deleting it reaches the index snapshot, watched with exactly
//! the permissions the kustomize base's Role (`ui/gateway/rbac.yaml`) grants.

use std::sync::Arc;
use std::time::Duration;

use gateway_sidecar::entitlements::{Entitlements, Invalid, Status};
use gateway_sidecar::identity::Identity;
use gateway_sidecar::index::{self, Index, Snapshot};
use gateway_sidecar::kubernetes;
use googletest::prelude::*;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};
use test_support::TestNamespace;

const WAIT: Duration = Duration::from_secs(30);
/// The default `ENTITLEMENTS_CONFIGMAP`, which the Role names.
const NAME: &str = "views-gateway-entitlements";

/// A client acting as the gateway's ServiceAccount in `namespace`, bound to
/// the Role of `ui/gateway/rbac.yaml` (as `kubectl apply -k` with the
/// namespace set would install it).
async fn as_gateway(admin: &kube::Client, namespace: &str) -> kube::Client {
    let rbac = std::fs::read_to_string(test_support::repo_root().join("ui/gateway/rbac.yaml"))
        .expect("reading ui/gateway/rbac.yaml");
    let documents: Vec<Value> = serde_saphyr::from_str_multiple(&rbac).expect("rbac.yaml is YAML");
    for mut document in documents {
        match document["kind"].as_str() {
            Some("Role") => {
                let role: Role = serde_json::from_value(document).expect("a Role");
                Api::<Role>::namespaced(admin.clone(), namespace)
                    .create(&PostParams::default(), &role)
                    .await
                    .expect("creating the Role");
            }
            Some("RoleBinding") => {
                for subject in document["subjects"].as_array_mut().into_iter().flatten() {
                    subject["namespace"] = json!(namespace);
                }
                let binding: RoleBinding = serde_json::from_value(document).expect("a RoleBinding");
                Api::<RoleBinding>::namespaced(admin.clone(), namespace)
                    .create(&PostParams::default(), &binding)
                    .await
                    .expect("creating the RoleBinding");
            }
            other => panic!("rbac.yaml has an unexpected {other:?}"),
        }
    }
    let kubeconfig = Kubeconfig::read_from(test_support::kubeconfig_path()).expect("kubeconfig");
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig usable");
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:gateway"));
    config.auth_info.impersonate_groups = Some(vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated".into(),
    ]);
    kube::Client::try_from(config).expect("client")
}

fn config_map(name: &str, yaml: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "data": {"entitlements.yaml": yaml},
    }))
    .expect("a ConfigMap")
}

/// The first snapshot (now or to come) for which `condition` holds.
async fn snapshot_when(index: &Index, condition: impl Fn(&Snapshot) -> bool) -> Arc<Snapshot> {
    assert!(
        index.wait_for(WAIT, condition).await,
        "no such snapshot within {WAIT:?}; last: {:?}",
        index.snapshot().entitlements
    );
    index.snapshot()
}

fn readable(entitlements: &Entitlements, who: &Identity) -> Value {
    serde_json::to_value(entitlements.readable(who)).expect("serializable")
}

#[gtest]
#[tokio::test]
async fn the_entitlements_config_map_reaches_the_index_through_the_gateway_s_role() {
    let admin = test_support::client().await;
    let namespace = TestNamespace::create(&admin).await;
    let gateway = as_gateway(&admin, namespace.name()).await;
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), namespace.name());
    let ana = Identity::new("ana", ["analysts"]);

    // The Role allows this one ConfigMap and no other.
    let others: Api<ConfigMap> = Api::namespaced(gateway.clone(), namespace.name());
    expect_that!(
        others.get("kube-root-ca.crt").await,
        err(displays_as(contains_substring("forbidden")))
    );

    let (tx, index) = index::channel();
    tokio::spawn(index::run(
        // No API server probe: the watches never start over.
        kubernetes::watch_views(
            gateway,
            namespace.name(),
            kubernetes::Named {
                entitlements: NAME,
                tls: None,
                master_key: None,
            },
            tokio::sync::watch::channel(0).1,
        ),
        tx,
    ));

    // No ConfigMap yet: listed, and nothing granted.
    let absent = snapshot_when(&index, |s| s.synced).await;
    expect_that!(absent.kubernetes_reachable, eq(true));
    expect_that!(absent.entitlements.status(), eq(&Status::Absent));

    // A ConfigMap by another name is not the entitlements.
    config_maps
        .create(
            &PostParams::default(),
            &config_map(
                "not-the-entitlements",
                "grants: [{users: [ana], bucket: lake, prefixes: [\"\"]}]",
            ),
        )
        .await
        .expect("creating another ConfigMap");

    config_maps
        .create(
            &PostParams::default(),
            &config_map(
                NAME,
                "grants:\n- groups: [analysts]\n  bucket: lake\n  prefixes: [sales/]\n",
            ),
        )
        .await
        .expect("creating the entitlements");
    let created = snapshot_when(&index, |s| s.entitlements.status() == &Status::Valid).await;
    expect_that!(
        readable(&created.entitlements, &ana),
        eq(&json!([{"bucket": "lake", "prefixes": ["sales/"], "access": "read"}]))
    );

    config_maps
        .replace(
            NAME,
            &PostParams::default(),
            &config_map(
                NAME,
                "grants:\n- groups: [analysts]\n  bucket: lake\n  prefixes: [sales/, tpch/]\n",
            ),
        )
        .await
        .expect("changing the entitlements");
    let changed = snapshot_when(&index, |s| {
        s.entitlements.grants() == 1
            && readable(&s.entitlements, &ana)[0]["prefixes"] == json!(["sales/", "tpch/"])
    })
    .await;
    expect_that!(changed.entitlements.invalid(), none());

    config_maps
        .replace(
            NAME,
            &PostParams::default(),
            &config_map(
                NAME,
                "grants:\n- groups: [analysts]\n  bucket: lake\n  prefixes: [sales]\n",
            ),
        )
        .await
        .expect("breaking the entitlements");
    let broken = snapshot_when(&index, |s| s.entitlements.invalid().is_some()).await;
    expect_that!(
        broken.entitlements.invalid(),
        some(matches_pattern!(Invalid::Grants(elements_are![
            starts_with("grants[0].prefixes \"sales\": ")
        ])))
    );
    expect_that!(readable(&broken.entitlements, &ana), eq(&json!([])));

    config_maps
        .delete(NAME, &DeleteParams::default())
        .await
        .expect("deleting the entitlements");
    let deleted = snapshot_when(&index, |s| s.entitlements.status() == &Status::Absent).await;
    expect_that!(deleted.synced, eq(true));
    expect_that!(deleted.kubernetes_reachable, eq(true));
}
