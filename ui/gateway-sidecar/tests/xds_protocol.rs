//! The incremental ADS server, judged by Envoy itself (a resource Envoy
//! rejects is NACKed, logged and counted, and not pushed again; the next good
//! one is ACKed) and by a scripted client (deltas only, make-before-break, a
//! reconnect listing what it holds gets nothing again). No Kubernetes here:
//! snapshots are fed to the server directly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use gateway_sidecar::config::Config;
use gateway_sidecar::index::{Endpoint, Snapshot, ViewState};
use gateway_sidecar::xds::resources::{
    self, Builder, CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, Resource,
    SCOPED_ROUTE_TYPE, XdsSnapshot,
};
use gateway_sidecar::xds::{AdsServer, EnvoyStatus, EnvoysWatch, Metrics, TypeLabel};
use googletest::prelude::*;
use prost::Message;
use test_support::eventually;
use test_support::gateway::{free_port, spawn_envoy, write_bootstrap};
use tokio::sync::watch;

fn listener_type() -> TypeLabel {
    TypeLabel {
        r#type: "Listener".into(),
    }
}

/// The gateway's real configuration, but with a listener address Envoy
/// cannot parse.
fn with_broken_listener(good: &XdsSnapshot) -> XdsSnapshot {
    let mut bad = good.clone();
    let listeners = bad.by_type.get_mut(LISTENER_TYPE).expect("listeners");
    let name = listeners
        .keys()
        .next()
        .cloned()
        .expect("the gateway listener");
    let resource = listeners.get_mut(&name).expect("the gateway listener");
    let mut listener = Listener::decode(resource.body.value.as_slice()).expect("a listener");
    listener.address = Some(core::Address {
        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
            address: "not-an-ip".into(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(1)),
            ..Default::default()
        })),
    });
    *resource = Arc::new(Resource {
        name: resource.name.clone(),
        version: "broken".into(),
        body: Any {
            type_url: LISTENER_TYPE.into(),
            value: listener.encode_to_vec(),
        },
        refs: Default::default(),
    });
    bad
}

#[gtest]
#[tokio::test]
async fn a_nacked_listener_is_counted_not_repushed_and_the_next_good_one_is_acked() {
    let (xds_port, listen_port) = (free_port(), free_port());
    let config = {
        use clap::Parser;
        Config::parse_from([
            "gateway-sidecar",
            "--envoy-listen",
            &format!("127.0.0.1:{listen_port}"),
        ])
    };
    let synced = Snapshot {
        synced: true,
        ..Snapshot::default()
    };
    let good = resources::build(&synced, &config);
    let bad = with_broken_listener(&good);

    let (snapshots, receiver) = watch::channel(Arc::new(bad.clone()));
    let metrics = Arc::new(Metrics::default());
    let envoys = serve_ads(receiver, metrics.clone(), xds_port);
    let dir = std::env::temp_dir().join(format!("views-xds-protocol-{xds_port}"));
    std::fs::create_dir_all(&dir).expect("dir");
    write_bootstrap(&dir, xds_port, free_port(), free_port());
    let mut envoy = spawn_envoy(&dir, "protocol");

    eventually(Duration::from_secs(30), || async {
        let nacks = metrics.nacks.get_or_create(&listener_type()).get();
        ensure!(
            nacks >= 1,
            "no NACK yet (Envoy log: {})",
            dir.join("envoy.log").display()
        );
        Ok(())
    })
    .await;
    let status = envoys.borrow().get("protocol").cloned().unwrap_or_default();
    expect_that!(status.nacks, eq(1));
    expect_that!(status.acked_versions.get(LISTENER_TYPE), none());

    // A good configuration arrives: Envoy ACKs it (its ACKed listener
    // version is the good one's). Exactly two listener responses were ever
    // sent — the bad one was not pushed again.
    snapshots.send_replace(Arc::new(good.clone()));
    let good_version = resources::set_version(
        good.resources(LISTENER_TYPE)
            .values()
            .map(|r| (&*r.name, &*r.version)),
    );
    eventually(Duration::from_secs(30), || async {
        let acked = envoys
            .borrow()
            .get("protocol")
            .and_then(|s| s.acked_versions.get(LISTENER_TYPE).cloned());
        ensure!(
            acked.as_ref() == Some(&good_version),
            "not acked yet: {acked:?}"
        );
        Ok(())
    })
    .await;
    expect_that!(
        metrics.responses.get_or_create(&listener_type()).get(),
        eq(2)
    );
    expect_that!(metrics.nacks.get_or_create(&listener_type()).get(), eq(1));
    // Envoy serves the accepted listener (once its routes arrive): unknown
    // hosts get the gateway's 404.
    let status = eventually(Duration::from_secs(30), || async {
        let answer = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{listen_port}/"))
            .header("host", "nobody.localhost")
            .send()
            .await?;
        ensure!(
            answer.status().as_u16() == 404,
            "not serving yet: {}",
            answer.status()
        );
        Ok(answer.status().as_u16())
    })
    .await;
    expect_that!(status, eq(404));
    let _ = envoy.kill();
    let _ = envoy.wait();
}

/// Serve incremental ADS from `snapshots` on `port`; the status of every
/// Envoy connected.
fn serve_ads(
    snapshots: watch::Receiver<Arc<XdsSnapshot>>,
    metrics: Arc<Metrics>,
    port: u16,
) -> EnvoysWatch {
    let ads = AdsServer::new(snapshots, metrics);
    let envoys = ads.envoys();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(ads))
            .serve(([127, 0, 0, 1], port).into()),
    );
    envoys
}

/// A scripted Envoy: one incremental ADS stream to the server.
struct Client {
    requests: tokio::sync::mpsc::Sender<DeltaDiscoveryRequest>,
    responses: tonic::Streaming<DeltaDiscoveryResponse>,
}

impl Client {
    async fn connect(port: u16) -> Client {
        let mut client = eventually(Duration::from_secs(10), || async {
            Ok(
                AggregatedDiscoveryServiceClient::connect(format!("http://127.0.0.1:{port}"))
                    .await?,
            )
        })
        .await;
        let (requests, rx) = tokio::sync::mpsc::channel(16);
        let responses = client
            .delta_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("a delta ADS stream")
            .into_inner();
        Client {
            requests,
            responses,
        }
    }

    async fn send(&self, request: DeltaDiscoveryRequest) {
        self.requests.send(request).await.expect("stream open");
    }

    /// The first request of a type: a wildcard (no names) or these names,
    /// with the versions already held.
    async fn subscribe(&self, type_url: &str, names: &[&str], held: &[(String, String)]) {
        self.send(DeltaDiscoveryRequest {
            node: Some(core::Node {
                id: "scripted".into(),
                ..Default::default()
            }),
            type_url: type_url.into(),
            resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
            initial_resource_versions: held.iter().cloned().collect(),
            ..Default::default()
        })
        .await;
    }

    async fn ack(&self, response: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    async fn next(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(10), self.responses.message())
            .await
            .expect("a response within 10 s")
            .expect("a healthy stream")
            .expect("an open stream")
    }

    /// Nothing more arrives for a while.
    async fn quiet(&mut self) -> bool {
        tokio::time::timeout(Duration::from_millis(300), self.responses.message())
            .await
            .is_err()
    }
}

fn names(response: &DeltaDiscoveryResponse) -> Vec<String> {
    response.resources.iter().map(|r| r.name.clone()).collect()
}

fn view(name: &str, serving: bool) -> Arc<ViewState> {
    Arc::new(ViewState {
        spec: serde_json::from_value(serde_json::json!({
            "name": name, "subsets": [{"bucket": "lake", "prefixes": ["p/"]}],
        }))
        .expect("spec"),
        uid: format!("uid-{name}"),
        created_at: None,
        annotations: BTreeMap::new(),
        endpoints: if serving {
            vec![Endpoint {
                ip: [10, 233, 0, 42].into(),
                port: 8080,
                serving: true,
                terminating: false,
            }]
        } else {
            Vec::new()
        },
        activations: BTreeMap::new(),
    })
}

/// The scripted Envoy's status as the server records it, once `holds` (10 s at most).
async fn scripted_status(
    envoys: &EnvoysWatch,
    waiting_for: &str,
    holds: impl Fn(&EnvoyStatus) -> bool,
) -> EnvoyStatus {
    eventually(Duration::from_secs(10), || async {
        let status = envoys.borrow().get("scripted").cloned().unwrap_or_default();
        ensure!(holds(&status), "{waiting_for}: {status:?}");
        Ok(status)
    })
    .await
}

#[gtest]
#[tokio::test]
async fn deltas_only_clusters_go_after_the_routes_and_a_reconnect_resends_nothing() {
    use clap::Parser;
    let port = free_port();
    let config = Arc::new(Config::parse_from(["gateway-sidecar"]));
    let mut builder = Builder::new(config);
    let warm = builder
        .update(&Snapshot::of(&[view("shop", true), view("idle", false)]))
        .expect("a snapshot");
    let (snapshots, receiver) = watch::channel(Arc::new(warm));
    let envoys = serve_ads(receiver, Arc::new(Metrics::default()), port);

    // Envoy's start: clusters, their endpoints, the listener, its scopes,
    // their routes; each first request answered once, each response ACKed.
    let mut envoy = Client::connect(port).await;
    let mut held: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
    for (type_url, subscribe, expected) in [
        (CLUSTER_TYPE, vec![], vec!["view-shop"]),
        (ENDPOINT_TYPE, vec!["view-shop"], vec!["view-shop"]),
        (LISTENER_TYPE, vec![], vec!["gateway"]),
        (
            SCOPED_ROUTE_TYPE,
            vec![],
            vec!["gateway", "view-idle", "view-shop"],
        ),
        (
            ROUTE_TYPE,
            vec!["gateway", "view-idle", "view-shop"],
            vec!["gateway", "view-idle", "view-shop"],
        ),
    ] {
        envoy.subscribe(type_url, &subscribe, &[]).await;
        let response = envoy.next().await;
        expect_that!(response.type_url.as_str(), eq(type_url));
        let mut got = names(&response);
        got.sort();
        expect_that!(got, eq(&expected), "{type_url}");
        held.insert(
            type_url,
            response
                .resources
                .iter()
                .map(|r| (r.name.clone(), r.version.clone()))
                .collect(),
        );
        envoy.ack(&response).await;
    }
    let status = scripted_status(&envoys, "not all ACKed yet", |s| {
        s.acked_versions.len() == 5
    })
    .await;
    expect_that!(
        status
            .routed_hosts
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        elements_are![eq(&"api"), eq(&"view-idle"), eq(&"view-shop")]
    );
    expect_that!(
        status
            .clusters_with_endpoints
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        elements_are![eq(&"view-shop")]
    );

    // `shop` goes cold: only its routes change (ext_authz on); its cluster
    // stays until Envoy has ACKed those routes, then goes.
    let cold = builder
        .update(&Snapshot::of(&[view("shop", false), view("idle", false)]))
        .expect("a change");
    snapshots.send_replace(Arc::new(cold));
    let routes = envoy.next().await;
    expect_that!(routes.type_url.as_str(), eq(ROUTE_TYPE));
    expect_that!(names(&routes), elements_are![eq("view-shop")]);
    expect_that!(envoy.quiet().await, eq(true), "nothing else before the ACK");
    envoy.ack(&routes).await;
    let clusters = envoy.next().await;
    expect_that!(clusters.type_url.as_str(), eq(CLUSTER_TYPE));
    expect_that!(clusters.resources, is_empty());
    expect_that!(clusters.removed_resources, elements_are![eq("view-shop")]);
    envoy.ack(&clusters).await;
    // Envoy drops the cluster's endpoints with it.
    envoy
        .send(DeltaDiscoveryRequest {
            type_url: ENDPOINT_TYPE.into(),
            resource_names_unsubscribe: vec!["view-shop".into()],
            ..Default::default()
        })
        .await;
    let before = scripted_status(&envoys, "endpoints still counted", |s| {
        s.clusters_with_endpoints.is_empty()
    })
    .await;
    expect_that!(envoy.quiet().await, eq(true));

    // The sidecar restarts (a new server, the same content) and Envoy
    // reconnects listing what it has: every type is answered, with nothing.
    let port = free_port();
    let (_restarted, receiver) = watch::channel(Arc::new(resources::build(
        &Snapshot::of(&[view("shop", false), view("idle", false)]),
        &Config::parse_from(["gateway-sidecar"]),
    )));
    let envoys = serve_ads(receiver, Arc::new(Metrics::default()), port);
    drop(envoy);
    let mut envoy = Client::connect(port).await;
    // What Envoy holds now: its first responses with the later changes applied.
    let routes_now: Vec<(String, String)> = held[ROUTE_TYPE]
        .iter()
        .map(|(name, version)| {
            let version = routes
                .resources
                .iter()
                .find(|r| &r.name == name)
                .map_or(version.clone(), |r| r.version.clone());
            (name.clone(), version)
        })
        .collect();
    for (type_url, subscribe, held) in [
        (CLUSTER_TYPE, vec![], vec![]),
        (LISTENER_TYPE, vec![], held[LISTENER_TYPE].clone()),
        (SCOPED_ROUTE_TYPE, vec![], held[SCOPED_ROUTE_TYPE].clone()),
        (
            ROUTE_TYPE,
            vec!["gateway", "view-idle", "view-shop"],
            routes_now,
        ),
    ] {
        envoy.subscribe(type_url, &subscribe, &held).await;
        let response = envoy.next().await;
        expect_that!(response.type_url.as_str(), eq(type_url));
        expect_that!(response.resources, is_empty(), "{type_url}");
        expect_that!(response.removed_resources, is_empty(), "{type_url}");
        envoy.ack(&response).await;
    }
    let after = scripted_status(&envoys, "not all ACKed yet", |s| {
        s.acked_versions.len() == 4
    })
    .await;
    let mut expected = before.clone();
    expected.acked_versions.remove(ENDPOINT_TYPE);
    expect_that!(after, eq(&expected));
}

/// View `name` started (its activation's pod running), with a serving
/// endpoint or not yet.
fn starting(name: &str, serving: bool) -> Arc<ViewState> {
    let mut view = (*view(name, serving)).clone();
    view.activations.insert(
        1,
        gateway_sidecar::workload::Activation {
            number: 1,
            job: format!("view-{name}-1"),
            uid: "job-uid".into(),
            created_at: None,
            deadline: None,
            max_deadline: None,
            requests: Default::default(),
            phase: gateway_sidecar::workload::Phase::Starting,
        },
    );
    Arc::new(view)
}

#[gtest]
#[tokio::test]
async fn an_ack_of_endpoints_that_were_already_replaced_by_none_does_not_count() {
    use clap::Parser;
    let port = free_port();
    let mut builder = Builder::new(Arc::new(Config::parse_from(["gateway-sidecar"])));
    let (snapshots, receiver) = watch::channel(Arc::new(
        builder
            .update(&Snapshot::of(&[starting("shop", true)]))
            .expect("a snapshot"),
    ));
    let envoys = serve_ads(receiver, Arc::new(Metrics::default()), port);
    let mut envoy = Client::connect(port).await;
    envoy.subscribe(CLUSTER_TYPE, &[], &[]).await;
    let clusters = envoy.next().await;
    envoy.ack(&clusters).await;
    envoy.subscribe(ENDPOINT_TYPE, &["view-shop"], &[]).await;
    let with_endpoint = envoy.next().await;
    expect_that!(names(&with_endpoint), elements_are![eq("view-shop")]);

    // Before Envoy ACKs it, the pod stops serving: an assignment without
    // endpoints follows. The ACK of the first one is stale on arrival.
    snapshots.send_replace(Arc::new(
        builder
            .update(&Snapshot::of(&[starting("shop", false)]))
            .expect("a change"),
    ));
    let without = envoy.next().await;
    expect_that!(without.type_url.as_str(), eq(ENDPOINT_TYPE));
    envoy.ack(&with_endpoint).await;
    let status = scripted_status(&envoys, "the first ACK recorded", |s| {
        s.acked_versions.contains_key(ENDPOINT_TYPE)
    })
    .await;
    expect_that!(status.clusters_with_endpoints, is_empty());
    envoy.ack(&without).await;

    // Serving again: counted once Envoy ACKs that.
    snapshots.send_replace(Arc::new(
        builder
            .update(&Snapshot::of(&[starting("shop", true)]))
            .expect("a change"),
    ));
    let again = envoy.next().await;
    expect_that!(again.type_url.as_str(), eq(ENDPOINT_TYPE));
    envoy.ack(&again).await;
    scripted_status(&envoys, "endpoints counted", |s| {
        s.clusters_with_endpoints.contains("view-shop")
    })
    .await;
}
