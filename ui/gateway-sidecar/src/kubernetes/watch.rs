//! The watches that feed the index, merged into one stream of changes:
//! view Services and their EndpointSlices (selected by the view label, which
//! EndpointSlices inherit from their Service), the views' Jobs and pods (same
//! label, set by the activator), and the Job controller's `FailedCreate`
//! events (how a quota or admission refusal of a view's pod shows), the
//! operator's entitlements ConfigMap and TLS Secret (each selected by name).

use futures::{Stream, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use crate::view;

/// One change seen by a watch, or a watch failing (it retries with backoff).
pub enum Change {
    Service(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
    Job(Box<watcher::Event<Job>>),
    Pod(Box<watcher::Event<Pod>>),
    Event(Box<watcher::Event<Event>>),
    /// The entitlements ConfigMap (the only object its watch selects).
    Entitlements(Box<watcher::Event<ConfigMap>>),
    /// The TLS Secret (the only object its watch selects); without
    /// `TLS_SECRET` one empty listing.
    Tls(Box<watcher::Event<Secret>>),
    Failed(watcher::Error),
}

/// The field selector for the Job controller's pod-creation failures.
const FAILED_CREATE: &str = "involvedObject.kind=Job,reason=FailedCreate";

/// Watch everything the index is built from, in `namespace`; the
/// entitlements are the ConfigMap named `entitlements`.
pub fn watch_views(
    client: kube::Client,
    namespace: &str,
    entitlements: &str,
    tls: Option<&str>,
) -> impl Stream<Item = Change> + Send + use<> {
    let labelled = watcher::Config::default().labels(view::SELECTOR);
    let events = watcher::Config::default().fields(FAILED_CREATE);
    // By name: the RBAC Role grants this one ConfigMap (resourceNames).
    let entitlements = watcher::Config::default().fields(&format!("metadata.name={entitlements}"));
    futures::stream::select_all([
        watch(&client, namespace, labelled.clone(), Change::Service),
        watch(&client, namespace, labelled.clone(), Change::Slice),
        watch(&client, namespace, labelled.clone(), Change::Job),
        watch(&client, namespace, labelled, Change::Pod),
        watch(&client, namespace, events, Change::Event),
        watch(&client, namespace, entitlements, Change::Entitlements),
        match tls {
            // By name, as the Role allows.
            Some(name) => watch(
                &client,
                namespace,
                watcher::Config::default().fields(&format!("metadata.name={name}")),
                Change::Tls,
            ),
            None => futures::stream::iter([
                Change::Tls(Box::new(watcher::Event::Init)),
                Change::Tls(Box::new(watcher::Event::InitDone)),
            ])
            .chain(futures::stream::pending())
            .boxed(),
        },
    ])
}

fn watch<K>(
    client: &kube::Client,
    namespace: &str,
    config: watcher::Config,
    wrap: fn(Box<watcher::Event<K>>) -> Change,
) -> futures::stream::BoxStream<'static, Change>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
    K::DynamicType: Default,
{
    watcher(Api::<K>::namespaced(client.clone(), namespace), config)
        .default_backoff()
        .map(move |event| event.map_or_else(Change::Failed, |e| wrap(Box::new(e))))
        .boxed()
}
