//! The watches that feed the index: view Services and their EndpointSlices,
//! selected by the view label (EndpointSlices inherit their Service's
//! labels), merged into one stream of changes.

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};

use crate::view;

/// One change seen by a watch, or a watch failing (it retries with backoff).
pub enum Change {
    Service(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
    Failed(watcher::Error),
}

pub fn watch_views(
    client: kube::Client,
    namespace: &str,
) -> impl Stream<Item = Change> + Send + use<> {
    let config = watcher::Config::default().labels(view::SELECTOR);
    let services = watcher(
        Api::<Service>::namespaced(client.clone(), namespace),
        config.clone(),
    )
    .default_backoff()
    .map(|event| event.map_or_else(Change::Failed, |e| Change::Service(Box::new(e))));
    let slices = watcher(Api::<EndpointSlice>::namespaced(client, namespace), config)
        .default_backoff()
        .map(|event| event.map_or_else(Change::Failed, |e| Change::Slice(Box::new(e))));
    futures::stream::select(services, slices)
}
