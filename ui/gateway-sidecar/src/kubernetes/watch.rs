//! The watches that feed the index, merged into one stream of changes:
//! view Services and their EndpointSlices (selected by the view label, which
//! EndpointSlices inherit from their Service), the views' Jobs and pods (same
//! label, set by the activator), and the Job controller's `FailedCreate`
//! events (how a quota or admission refusal of a view's pod shows), the
//! operator's entitlements ConfigMap and TLS Secret, and the credentials
//! master key Secret (each selected by name).

use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use crate::view;

/// One change seen by a watch, or a watch failing (it retries: see [`retrying`]).
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
    /// The credentials master key Secret (likewise); without
    /// `CREDENTIALS_LISTEN` one empty listing.
    MasterKey(Box<watcher::Event<Secret>>),
    Failed(watcher::Error),
}

/// The field selector for the Job controller's pod-creation failures.
const FAILED_CREATE: &str = "involvedObject.kind=Job,reason=FailedCreate";

/// The objects the index watches by name.
pub struct Named<'a> {
    /// The entitlements ConfigMap.
    pub entitlements: &'a str,
    /// The TLS Secret, if Envoy serves TLS.
    pub tls: Option<&'a str>,
    /// The credentials master key Secret, if the S3 endpoint runs.
    pub master_key: Option<&'a str>,
}

/// Watch everything the index is built from, in `namespace`. Every watch
/// starts over when `returns` changes (the API server is back: see
/// [`restarted`]).
pub fn watch_views(
    client: kube::Client,
    namespace: &str,
    named: Named<'_>,
    returns: tokio::sync::watch::Receiver<u64>,
) -> impl Stream<Item = Change> + Send + use<> {
    let labelled = watcher::Config::default().labels(view::SELECTOR);
    let events = watcher::Config::default().fields(FAILED_CREATE);
    let r = &returns;
    // By name: the RBAC Role grants these objects only (resourceNames).
    let by_name = |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
    let secret = |name: Option<&str>, wrap: fn(Box<watcher::Event<Secret>>) -> Change| match name {
        Some(name) => watch(&client, namespace, by_name(name), wrap, r),
        // Not configured: one empty listing.
        None => futures::stream::iter([
            wrap(Box::new(watcher::Event::Init)),
            wrap(Box::new(watcher::Event::InitDone)),
        ])
        .chain(futures::stream::pending())
        .boxed(),
    };
    futures::stream::select_all([
        watch(&client, namespace, labelled.clone(), Change::Service, r),
        watch(&client, namespace, labelled.clone(), Change::Slice, r),
        watch(&client, namespace, labelled.clone(), Change::Job, r),
        watch(&client, namespace, labelled, Change::Pod, r),
        watch(&client, namespace, events, Change::Event, r),
        watch(
            &client,
            namespace,
            by_name(named.entitlements),
            Change::Entitlements,
            r,
        ),
        secret(named.tls, Change::Tls),
        secret(named.master_key, Change::MasterKey),
    ])
}

fn watch<K>(
    client: &kube::Client,
    namespace: &str,
    config: watcher::Config,
    wrap: fn(Box<watcher::Event<K>>) -> Change,
    returns: &tokio::sync::watch::Receiver<u64>,
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
    let api = Api::<K>::namespaced(client.clone(), namespace);
    restarted(
        move || retrying(watcher(api.clone(), config.clone())),
        returns.clone(),
    )
    .map(move |event| event.map_or_else(Change::Failed, |e| wrap(Box::new(e))))
    .boxed()
}

/// The stream `start` makes, started over (a fresh list, then a watch) each
/// time `returns` changes, i.e. the API server answers again after it could
/// not be reached. A watch only reads: if the API server forgot its
/// connection without a reset reaching us (restarted behind a network that
/// dropped it), the watch would hang until the watcher's idle timeout
/// (295 s) instead of failing and retrying.
fn restarted<S>(
    start: impl Fn() -> S + Send + 'static,
    returns: tokio::sync::watch::Receiver<u64>,
) -> impl Stream<Item = S::Item> + Send + 'static
where
    S: Stream + Send + 'static,
{
    futures::stream::unfold(returns, move |mut returns| {
        returns.mark_unchanged();
        let mut next = returns.clone();
        let events = start().take_until(async move {
            if next.changed().await.is_err() {
                // Nobody says when it returns: never start over.
                std::future::pending::<()>().await;
            }
        });
        std::future::ready(Some((events, returns)))
    })
    .flatten()
}

/// The first pause after a failed watch request, doubled on each failure in
/// a row up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest pause between attempts: the API server's return is noticed
/// within this. (kube's `default_backoff` goes up to 30 s, client-go's, kind
/// to an API server with thousands of clients; a gateway has a few replicas
/// of seven watches, and its views must recover within seconds.)
const RETRY_MAX: Duration = Duration::from_secs(1);

/// A watch that retries failures after a short pause (reset by any event),
/// except `410 Gone`: the watcher has dropped its resource version and
/// relists at once, since waiting would only delay the recovery.
fn retrying<K>(
    events: impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static
where
    K: Send + 'static,
{
    let events = events.boxed();
    futures::stream::unfold(
        (events, RETRY_FIRST, Duration::ZERO),
        |(mut events, mut next_pause, pause)| async move {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            let event = events.next().await?;
            let pause = match &event {
                Ok(_) => {
                    next_pause = RETRY_FIRST;
                    Duration::ZERO
                }
                Err(error) if is_gone(error) => Duration::ZERO,
                Err(_) => {
                    let pause = next_pause;
                    next_pause = (next_pause * 2).min(RETRY_MAX);
                    pause
                }
            };
            Some((event, (events, next_pause, pause)))
        },
    )
}

/// The API server no longer has the watch's resource version (or list
/// continuation): only a fresh list helps.
fn is_gone(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use googletest::prelude::*;
    use kube::core::Status;

    use super::*;

    fn failure(code: u16) -> watcher::Result<watcher::Event<Service>> {
        Err(watcher::Error::WatchError(Box::new(
            Status::failure("test", "test").with_code(code),
        )))
    }

    /// How long the stream of `items` takes to yield them all.
    async fn duration(items: Vec<watcher::Result<watcher::Event<Service>>>) -> Duration {
        let started = Instant::now();
        let count = items.len();
        // take: stop at the last item, before the pause after it.
        let seen = retrying(futures::stream::iter(items))
            .take(count)
            .count()
            .await;
        assert_eq!(seen, count);
        started.elapsed()
    }

    #[gtest]
    #[tokio::test]
    async fn a_stream_starts_over_when_the_api_server_returns() {
        let (returned, returns) = tokio::sync::watch::channel(0);
        let starts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = starts.clone();
        // Each start says which it is, then waits (as a quiet watch does).
        let mut stream = std::pin::pin!(restarted(
            move || {
                let start = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                futures::stream::iter([start]).chain(futures::stream::pending())
            },
            returns,
        ));
        expect_that!(stream.next().await, some(eq(0)));
        let quiet = tokio::time::timeout(Duration::from_millis(100), stream.next()).await;
        expect_that!(quiet.is_err(), eq(true), "a second start without a return");
        returned.send_modify(|count| *count += 1);
        expect_that!(stream.next().await, some(eq(1)));
        returned.send_modify(|count| *count += 1);
        expect_that!(stream.next().await, some(eq(2)));
        // Without anyone to say so, it never starts over.
        drop(returned);
        let quiet = tokio::time::timeout(Duration::from_millis(100), stream.next()).await;
        expect_that!(quiet.is_err(), eq(true), "started over without a return");
    }

    #[gtest]
    #[tokio::test]
    async fn gone_relists_at_once_and_other_failures_pause_briefly() {
        let gone = duration((0..20).map(|_| failure(410)).collect()).await;
        expect_that!(gone, lt(Duration::from_millis(50)));

        // Paused after each failure: 100 + 200 + 400 + 800 + 1000 ms.
        let refused = duration((0..6).map(|_| failure(503)).collect()).await;
        expect_that!(refused, ge(Duration::from_millis(2_500)));
        expect_that!(refused, lt(Duration::from_millis(3_000)));

        // An event resets the pause.
        let mut items: Vec<_> = (0..3).map(|_| failure(503)).collect();
        items.push(Ok(watcher::Event::Init));
        items.extend((0..2).map(|_| failure(503)));
        let reset = duration(items).await;
        expect_that!(reset, ge(Duration::from_millis(800)));
        expect_that!(reset, lt(Duration::from_millis(1_000)));
    }
}
