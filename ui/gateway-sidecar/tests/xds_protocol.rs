//! The ADS server judged by Envoy itself: a resource Envoy rejects is NACKed,
//! logged and counted, and not pushed again; the next good configuration is
//! ACKed. No Kubernetes here: snapshots are fed to the server directly.

use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use envoy_types::pb::google::protobuf::Any;
use gateway_sidecar::config::Config;
use gateway_sidecar::index::Snapshot;
use gateway_sidecar::telemetry::{Metrics, TypeLabel};
use gateway_sidecar::xds::AdsServer;
use gateway_sidecar::xds::resources::{self, LISTENER_TYPE, XdsSnapshot};
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
    let (_, any) = listeners.0.iter_mut().next().expect("the gateway listener");
    let mut listener = Listener::decode(any.value.as_slice()).expect("a listener");
    listener.address = Some(core::Address {
        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
            address: "not-an-ip".into(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(1)),
            ..Default::default()
        })),
    });
    *any = Any {
        type_url: LISTENER_TYPE.into(),
        value: listener.encode_to_vec(),
    };
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
    let ads = AdsServer::new(receiver, metrics.clone());
    let envoys = ads.envoys();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(ads))
            .serve(([127, 0, 0, 1], xds_port).into()),
    );
    let dir = std::env::temp_dir().join(format!("views-xds-protocol-{xds_port}"));
    std::fs::create_dir_all(&dir).expect("dir");
    write_bootstrap(&dir, xds_port, free_port(), free_port());
    let mut envoy = spawn_envoy(&dir, "protocol");

    eventually(Duration::from_secs(30), || async {
        let nacks = metrics.xds_nacks.get_or_create(&listener_type()).get();
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

    // A good configuration arrives: Envoy ACKs it. Exactly two listener
    // responses were ever sent — the bad one was not pushed again.
    snapshots.send_replace(Arc::new(good.clone()));
    let good_version = good.resources(LISTENER_TYPE).version();
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
        metrics.xds_responses.get_or_create(&listener_type()).get(),
        eq(2)
    );
    expect_that!(
        metrics.xds_nacks.get_or_create(&listener_type()).get(),
        eq(1)
    );
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
