//! Chaos: two gateway replicas under steady warm load and a stream of cold
//! starts, while the control plane fails under them, one fault after the
//! other. Each case counts the warm requests that failed (must be 0), the
//! cold starts that failed without a clear reason (must be 0: a clear one
//! has a machine-readable `error` in a JSON body, and a 503 `Retry-After`
//! too), and how long
//! the gateway took to recover after the fault ended (both replicas ready
//! with nothing degraded, and a new cold start served).
//!
//! The API server the replicas use is a private one of this test
//! ([`PrivateApiServer`]: the local cluster's own flags, the shared etcd
//! reached through a proxy of its own), so killing, pausing or cutting it
//! from etcd disturbs no other test; the controllers and kubelets keep
//! using the shared one, as they would keep using a healthy API server
//! while the gateway's failed.
//!
//! The load reaches the replicas as a Service's load balancer would: each
//! request goes to one replica in turn, and one that cannot connect or is
//! reset before any answer is tried once on the other (GET is idempotent;
//! what a load balancer with connect-failure retries does). A response is
//! never retried: any non-200 answer to a warm request is a failure.
//!
//! `CHAOS_PAUSE_SECONDS` sets how long the API server stays paused
//! (SIGSTOP); the default is the 30.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::ensure;
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::api_server::PrivateApiServer;
use test_support::gateway::Gateway;
use test_support::{TestNamespace, eventually};

/// Load before each fault, so the fault meets steady traffic.
const STEADY: Duration = Duration::from_secs(3);
/// Load after the recovery, so a late failure still counts.
const SETTLE: Duration = Duration::from_secs(3);
/// A cold start begins this often.
const COLD_EVERY: Duration = Duration::from_secs(2);
/// How long a killed sidecar or Envoy stays down (Kubernetes restarts a
/// container after a back-off).
const DOWN: Duration = Duration::from_secs(5);
/// The bound on recovering after a fault ends.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);
/// Views created for the cold starts (more than the suite uses).
const POOL: usize = 100;

/// How a request went, as a client sees it.
enum Answer {
    Response {
        /// The replica (its Envoy's port) that answered.
        port: u16,
        status: StatusCode,
        retry_after: bool,
        body: String,
    },
    /// No response from either replica.
    Failed(String),
}

/// Requests sent the way a load balancer in front of `ports` would.
#[derive(Clone)]
struct Balancer {
    client: reqwest::Client,
    ports: [u16; 2],
    next: Arc<AtomicU64>,
    retried: Arc<AtomicU64>,
}

impl Balancer {
    async fn get(&self, host: &str, timeout: Duration) -> Answer {
        let first = self.next.fetch_add(1, Ordering::Relaxed) as usize;
        let mut failure = String::new();
        for attempt in 0..2 {
            let port = self.ports[(first + attempt) % 2];
            let sent = self
                .client
                .get(format!("http://{host}:{port}/"))
                .timeout(timeout)
                .send()
                .await;
            match sent {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response.headers().contains_key("retry-after");
                    let body = response.text().await.unwrap_or_default();
                    return Answer::Response {
                        port,
                        status,
                        retry_after,
                        body,
                    };
                }
                Err(error) => {
                    failure = format!("port {port}: {error:#}");
                    if attempt == 0 {
                        self.retried.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        Answer::Failed(failure)
    }
}

/// What one cold start came to.
#[derive(Debug, Clone, PartialEq)]
enum Cold {
    Served,
    /// Refused with a reason a client can act on.
    Clear(String),
    Unclear(String),
}

fn classify_cold(answer: Answer) -> Cold {
    match answer {
        Answer::Response { status, body, .. }
            if status == StatusCode::OK && body.starts_with("pod: ") =>
        {
            Cold::Served
        }
        Answer::Response {
            port,
            status,
            retry_after,
            body,
        } => {
            let error = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned));
            // A reason to act on: the machine-readable error, and when to
            // try again if it passes (503).
            match error {
                Some(error)
                    if !status.is_success()
                        && (status != StatusCode::SERVICE_UNAVAILABLE || retry_after) =>
                {
                    Cold::Clear(error)
                }
                _ => Cold::Unclear(format!(
                    "port {port}: {status} retry-after={retry_after} body={}",
                    body.chars().take(200).collect::<String>()
                )),
            }
        }
        Answer::Failed(error) => Cold::Unclear(error),
    }
}

/// Everything the load saw, stamped with when it happened.
#[derive(Default)]
struct Record {
    warm: Mutex<Vec<(Instant, Option<String>)>>,
    cold: Mutex<Vec<(Instant, Cold)>>,
}

struct Load {
    record: Arc<Record>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pool: Arc<Mutex<Vec<String>>>,
    balancer: Balancer,
}

impl Load {
    fn start(balancer: Balancer, pool: Vec<String>) -> Self {
        let record = Arc::new(Record::default());
        let stop = Arc::new(AtomicBool::new(false));
        let pool = Arc::new(Mutex::new(pool));
        let mut tasks = Vec::new();
        // Steady warm load: four clients, each a request at a time.
        for _ in 0..4 {
            let (balancer, record, stop) = (balancer.clone(), record.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    let failure = match balancer
                        .get("warm.localhost", Duration::from_secs(10))
                        .await
                    {
                        Answer::Response { status, body, .. }
                            if status == StatusCode::OK && body.starts_with("pod: ") =>
                        {
                            None
                        }
                        Answer::Response { status, body, .. } => Some(format!("{status} {body}")),
                        Answer::Failed(error) => Some(error),
                    };
                    record.warm.lock().unwrap().push((at, failure));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
        // A stream of cold starts, each of a view never started before,
        // to each replica in turn (a count of their own: the warm load's
        // would decide which replica they meet by chance).
        let cold_balancer = Balancer {
            next: Arc::default(),
            ..balancer.clone()
        };
        let (cold_record, cold_stop, cold_pool) = (record.clone(), stop.clone(), pool.clone());
        tasks.push(tokio::spawn(async move {
            let mut starts = tokio::task::JoinSet::new();
            while !cold_stop.load(Ordering::Relaxed) {
                let Some(view) = cold_pool.lock().unwrap().pop() else {
                    break;
                };
                let (balancer, record) = (cold_balancer.clone(), cold_record.clone());
                starts.spawn(async move {
                    let at = Instant::now();
                    let host = format!("{view}.localhost");
                    let outcome = classify_cold(balancer.get(&host, Duration::from_secs(90)).await);
                    record.cold.lock().unwrap().push((at, outcome));
                });
                tokio::time::sleep(COLD_EVERY).await;
            }
            while starts.join_next().await.is_some() {}
        }));
        Self {
            record,
            stop,
            tasks,
            pool,
            balancer,
        }
    }

    /// A view not started yet.
    fn fresh_view(&self) -> String {
        self.pool
            .lock()
            .unwrap()
            .pop()
            .expect("views left in the pool")
    }

    /// Stop, and wait for every cold start under way.
    async fn finish(self) -> Arc<Record> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("load task");
        }
        self.record
    }
}

/// One case's window and what recovering took.
struct Case {
    name: String,
    from: Instant,
    to: Instant,
    recovery: Duration,
}

/// Until both replicas are ready with nothing degraded and a new cold
/// start is served; how long after `ended` (the fault's end: the process
/// started again, the connection restored) that was.
async fn recovered(load: &Load, replicas: [&Gateway; 2], ended: Instant) -> Duration {
    let http = replicas[0].client();
    eventually(RECOVERY_LIMIT, || async {
        for replica in replicas {
            let response = http.get(replica.ops_url("/readyz")).send().await?;
            let status = response.status();
            let body: Value = response.json().await?;
            ensure!(
                status == StatusCode::OK && body["degraded"] == json!([]),
                "{}: {status} {body}",
                replica.name
            );
        }
        Ok(())
    })
    .await;
    eventually(RECOVERY_LIMIT, || async {
        let view = load.fresh_view();
        let cold = classify_cold(
            load.balancer
                .get(&format!("{view}.localhost"), Duration::from_secs(60))
                .await,
        );
        ensure!(cold == Cold::Served, "cold start of {view}: {cold:?}");
        Ok(())
    })
    .await;
    ended.elapsed()
}

fn pause_for() -> Duration {
    let seconds = std::env::var("CHAOS_PAUSE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(seconds)
}

#[tokio::test]
async fn under_load_the_gateway_survives_control_plane_faults_and_recovers() {
    let client = test_support::client().await;
    let namespace = TestNamespace::create(&client).await;
    let ns = namespace.name();
    let mut api_server = PrivateApiServer::start(ns).await;
    let mut a = Gateway::start_with_api_server("chaos-a", ns, &[], &api_server.url()).await;
    let mut b = Gateway::start_with_api_server("chaos-b", ns, &[], &api_server.url()).await;
    a.create_view("warm").await;
    let pool: Vec<String> = (0..POOL).map(|n| format!("cold{n:03}")).collect();
    {
        use futures::StreamExt;
        futures::stream::iter(&pool)
            .for_each_concurrent(8, |view| a.create_view(view))
            .await;
    }
    let balancer = Balancer {
        client: a.client(),
        ports: [a.port, b.port],
        next: Arc::default(),
        retried: Arc::default(),
    };
    // Warm through both replicas before the load starts.
    for _ in 0..2 {
        let warm = balancer
            .get("warm.localhost", Duration::from_secs(60))
            .await;
        assert!(
            matches!(warm, Answer::Response { status, .. } if status == StatusCode::OK),
            "the warm view starts"
        );
    }
    a.wait_serving("warm").await;
    b.wait_serving("warm").await;

    let load = Load::start(balancer.clone(), pool);
    let mut cases = Vec::new();
    let pause = pause_for();

    // etcd restarts (as this API server sees it: its connections reset,
    // none accepted for 5 s).
    tokio::time::sleep(STEADY).await;
    let from = Instant::now();
    api_server.cut_etcd().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    api_server.restore_etcd().await;
    let recovery = recovered(&load, [&a, &b], Instant::now()).await;
    tokio::time::sleep(SETTLE).await;
    cases.push(Case {
        name: "etcd restart (down 5 s)".into(),
        from,
        to: Instant::now(),
        recovery,
    });

    // The API server paused: it answers nothing, closes nothing.
    tokio::time::sleep(STEADY).await;
    let from = Instant::now();
    api_server.pause();
    tokio::time::sleep(pause).await;
    api_server.resume();
    let recovery = recovered(&load, [&a, &b], Instant::now()).await;
    tokio::time::sleep(SETTLE).await;
    cases.push(Case {
        name: format!("API server paused {} s (SIGSTOP)", pause.as_secs()),
        from,
        to: Instant::now(),
        recovery,
    });

    // The API server killed, and started again.
    tokio::time::sleep(STEADY).await;
    let from = Instant::now();
    api_server.kill();
    let ended = Instant::now();
    let restart = api_server.restart().await;
    let recovery = recovered(&load, [&a, &b], ended).await;
    tokio::time::sleep(SETTLE).await;
    cases.push(Case {
        name: format!(
            "API server kill -9 and restart (ready after {:.1} s)",
            restart.as_secs_f64()
        ),
        from,
        to: Instant::now(),
        recovery,
    });

    // A sidecar killed, and started again by its supervisor (here: us)
    // after a restart back-off.
    tokio::time::sleep(STEADY).await;
    let from = Instant::now();
    a.kill_sidecar();
    tokio::time::sleep(DOWN).await;
    let ended = Instant::now();
    a.restart_sidecar().await;
    let recovery = recovered(&load, [&a, &b], ended).await;
    tokio::time::sleep(SETTLE).await;
    cases.push(Case {
        name: format!("sidecar kill -9, restarted after {} s", DOWN.as_secs()),
        from,
        to: Instant::now(),
        recovery,
    });

    // Envoy killed and started again: empty, it gets everything over xDS.
    tokio::time::sleep(STEADY).await;
    let from = Instant::now();
    a.kill_envoy();
    tokio::time::sleep(DOWN).await;
    let ended = Instant::now();
    a.restart_envoy().await;
    let recovery = recovered(&load, [&a, &b], ended).await;
    tokio::time::sleep(SETTLE).await;
    cases.push(Case {
        name: format!("Envoy kill -9, restarted after {} s", DOWN.as_secs()),
        from,
        to: Instant::now(),
        recovery,
    });

    // One of two replicas killed (Envoy and sidecar); the other serves
    // alone for 10 s, then the killed one comes back.
    tokio::time::sleep(STEADY).await;
    let from = Instant::now();
    b.kill_envoy();
    b.kill_sidecar();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let ended = Instant::now();
    b.restart_sidecar_and_envoy().await;
    let recovery = recovered(&load, [&a, &b], ended).await;
    tokio::time::sleep(SETTLE).await;
    cases.push(Case {
        name: "one of two replicas killed (10 s)".into(),
        from,
        to: Instant::now(),
        recovery,
    });

    let retried = balancer.retried.load(Ordering::Relaxed);
    let record = load.finish().await;
    let warm = record.warm.lock().unwrap();
    let cold = record.cold.lock().unwrap();
    println!(
        "| case | warm requests | warm failed | cold starts | served | refused with a reason | failed without a reason | recovered after |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut problems = Vec::new();
    for case in &cases {
        let within = |at: &Instant| *at >= case.from && *at < case.to;
        let warm_in: Vec<_> = warm.iter().filter(|(at, _)| within(at)).collect();
        let warm_failed: Vec<_> = warm_in.iter().filter_map(|(_, f)| f.as_ref()).collect();
        let cold_in: Vec<_> = cold.iter().filter(|(at, _)| within(at)).collect();
        let count = |pick: fn(&Cold) -> bool| cold_in.iter().filter(|(_, c)| pick(c)).count();
        let unclear: Vec<_> = cold_in
            .iter()
            .filter_map(|(_, c)| match c {
                Cold::Unclear(why) => Some(why),
                _ => None,
            })
            .collect();
        let reasons: std::collections::BTreeSet<_> = cold_in
            .iter()
            .filter_map(|(_, c)| match c {
                Cold::Clear(reason) => Some(reason.as_str()),
                _ => None,
            })
            .collect();
        println!(
            "| {} | {} | {} | {} | {} | {} {:?} | {} | {:.1} s |",
            case.name,
            warm_in.len(),
            warm_failed.len(),
            cold_in.len(),
            count(|c| *c == Cold::Served),
            count(|c| matches!(c, Cold::Clear(_))),
            reasons,
            unclear.len(),
            case.recovery.as_secs_f64()
        );
        if !warm_failed.is_empty() {
            problems.push(format!(
                "{}: {} warm requests failed, e.g. {:?}",
                case.name,
                warm_failed.len(),
                &warm_failed[..warm_failed.len().min(3)]
            ));
        }
        if !unclear.is_empty() {
            problems.push(format!(
                "{}: {} cold starts failed without a reason, e.g. {:?}",
                case.name,
                unclear.len(),
                &unclear[..unclear.len().min(3)]
            ));
        }
    }
    println!(
        "requests retried on the other replica after a connection failure: {retried}; logs in {} and {}",
        a.logs_dir().display(),
        b.logs_dir().display()
    );
    assert!(problems.is_empty(), "{problems:#?}");
}
