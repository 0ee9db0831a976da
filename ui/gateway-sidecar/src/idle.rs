//! Scale to zero: a view nobody uses for its idle timeout is stopped (its
//! Job deleted; the next request starts it again).
//!
//! ```text
//! Envoy admin /stats ──every IDLE_CHECK_SECONDS──► per view cluster: upstream_rq_total
//!   (this replica's traffic)                         changed, or upstream_rq_active > 0?
//!                                                           │ yes: activity now
//!                                                           ▼
//!           Service annotation views.dev/last-activity ◄── written when older than the
//!           (shared by every replica: the latest of all)   resolution (idle timeout / 3)
//!                                                           │
//!  index: views with a live Job, last activity = max(annotation, this replica's,
//!         Job start) ──older than the view's idle timeout──► delete the Job
//! ```
//!
//! Warm traffic never touches the sidecar, so activity is read from Envoy's
//! own counters (no per-request cost) and aggregated across replicas through
//! the view's Service: a replica that sees no traffic does not stop a view
//! another replica serves, because that replica keeps the annotation fresh.
//! `activeDeadlineSeconds` stays the hard cap whatever the activity.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use crate::config::Config;
use crate::envoy_admin::{AdminError, EnvoyAdmin};
use crate::index::{Index, ViewState};
use crate::kubernetes::Writer;
use crate::kubernetes::health::ApiServer;
use crate::xds::resources::cluster_name;

/// On the view's Service: when some replica last saw a request for it (RFC 3339).
pub const ACTIVITY_ANNOTATION: &str = "views.dev/last-activity";

/// When some replica last saw activity on the view, as recorded on its Service.
pub fn recorded_activity(view: &ViewState) -> Option<Timestamp> {
    view.annotations.get(ACTIVITY_ANNOTATION)?.parse().ok()
}

/// One counter sample of a view's cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Sample {
    total: u64,
    active: u64,
}

pub struct Reaper {
    config: Arc<Config>,
    index: Index,
    writer: Writer,
    /// Views this replica stopped for being idle.
    stops: Counter,
    admin: EnvoyAdmin,
    /// The last sample of each view's cluster.
    samples: HashMap<String, Sample>,
    /// When this replica last saw activity on each view.
    seen: HashMap<String, Timestamp>,
}

impl Reaper {
    pub fn new(config: Arc<Config>, index: Index, writer: Writer) -> Self {
        Self {
            admin: EnvoyAdmin::new(&config.workload.envoy_admin_url),
            config,
            index,
            writer,
            stops: Counter::default(),
            samples: HashMap::new(),
            seen: HashMap::new(),
        }
    }

    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.sub_registry_with_prefix("idle").register(
            "stops",
            "Views this replica stopped for being idle",
            self.stops.clone(),
        );
    }

    /// Check every `IDLE_CHECK_SECONDS` until the process ends.
    pub async fn run(mut self) {
        let period = Duration::from_secs(self.config.workload.idle_check_seconds.max(1));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // While the API server is away, no replica's activity reaches the
        // Services, so after its return they look idle for as long as it
        // was away: stop nothing until every replica has written again (each
        // does on its first check after the return) and the index has it.
        let settle = period * 2 + Duration::from_secs(5);
        let mut stale_until: Option<Instant> = None;
        loop {
            ticks.tick().await;
            if !self.index.snapshot().synced {
                continue;
            }
            if !matches!(
                self.writer.health().get(),
                ApiServer::Ready | ApiServer::Unknown
            ) {
                stale_until = Some(Instant::now() + settle);
            }
            match self.stats().await {
                Ok(samples) => self.observe(samples, Timestamp::now()),
                // Without this replica's counters its own traffic is
                // unknown: stop nothing on its word.
                Err(error) => {
                    tracing::warn!(%error, "idle check skipped");
                    continue;
                }
            }
            let reap = stale_until.is_none_or(|until| Instant::now() >= until);
            self.record_and_reap(Timestamp::now(), reap).await;
        }
    }

    /// The request counters of every view cluster Envoy has.
    async fn stats(&self) -> Result<HashMap<String, Sample>, AdminError> {
        // ^cluster\.view-[a-z0-9-]+\.upstream_rq_(total|active)$
        let stats = self
            .admin
            .stats("%5Ecluster%5C.view-%5Ba-z0-9-%5D%2B%5C.upstream_rq_%28total%7Cactive%29%24")
            .await?;
        let mut samples: HashMap<String, Sample> = HashMap::new();
        for stat in stats["stats"].as_array().into_iter().flatten() {
            let (Some(name), Some(value)) = (stat["name"].as_str(), stat["value"].as_u64()) else {
                continue;
            };
            let Some((cluster, counter)) = name
                .strip_prefix("cluster.")
                .and_then(|rest| rest.rsplit_once('.'))
            else {
                continue;
            };
            let sample = samples.entry(cluster.to_owned()).or_default();
            match counter {
                "upstream_rq_total" => sample.total = value,
                "upstream_rq_active" => sample.active = value,
                _ => {}
            }
        }
        Ok(samples)
    }

    /// Note which views had requests since the last sample.
    fn observe(&mut self, samples: HashMap<String, Sample>, now: Timestamp) {
        for (cluster, sample) in &samples {
            let before = self.samples.get(cluster);
            // Counters restart when a cluster is re-created: any change counts.
            if sample.active > 0
                || before.is_some_and(|b| b.total != sample.total)
                || (before.is_none() && sample.total > 0)
            {
                self.seen.insert(cluster.clone(), now);
            }
        }
        self.samples = samples;
    }

    /// Share this replica's activity through the Services; stop idle views
    /// if `reap`.
    async fn record_and_reap(&mut self, now: Timestamp, reap: bool) {
        let snapshot = self.index.snapshot();
        self.seen
            .retain(|cluster, _| snapshot.views.contains_key(&cluster["view-".len()..]));
        for (name, view) in &snapshot.views {
            let Some(live) = view.live_activation() else {
                continue;
            };
            let idle_timeout = SignedDuration::from_secs(
                view.spec
                    .idle_timeout_seconds
                    .as_ref()
                    .map_or(self.config.default_idle_timeout_seconds, |t| t.0),
            );
            let recorded = recorded_activity(view);
            let mine = self.seen.get(&cluster_name(name)).copied();
            if let Some(mine) = mine
                && recorded.is_none_or(|r| mine.duration_since(r) >= resolution(idle_timeout))
                && let Err(error) = self.writer.record_activity(name, mine).await
            {
                tracing::warn!(view = name, %error, "could not record activity");
            }
            // A start in progress is not idle: it may take the whole budget.
            let grace = match live.phase {
                crate::workload::Phase::Ready => SignedDuration::ZERO,
                _ => SignedDuration::from_secs(
                    i64::try_from(self.config.workload.cold_start_budget_seconds)
                        .unwrap_or(i64::MAX),
                ),
            };
            let started = live.created_at.and_then(|c| c.checked_add(grace).ok());
            let last = [recorded, mine, started]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(now);
            if reap && now.duration_since(last) >= idle_timeout {
                tracing::info!(
                    view = name,
                    job = live.job,
                    idle_seconds = now.duration_since(last).as_secs(),
                    "stopping idle view"
                );
                match self.writer.delete_job(&live.job).await {
                    Ok(()) => {
                        self.stops.inc();
                    }
                    Err(error) => tracing::warn!(view = name, %error, "could not stop idle view"),
                }
            }
        }
    }
}

/// How fresh the shared annotation is kept: often enough that no replica
/// takes a busy view for idle, rarely enough not to write on every check.
fn resolution(idle_timeout: SignedDuration) -> SignedDuration {
    (idle_timeout / 3).clamp(SignedDuration::from_secs(5), SignedDuration::from_secs(60))
}
