//! What a person sees while a view starts: a small self-contained page (no
//! external assets) that follows the start through a server-sent event
//! stream at `/_gateway/status` on the view's own host (same origin; Envoy
//! routes that path of every view host to the sidecar), and reloads into the
//! view once it is ready.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;

use super::{Activator, Progress};

/// The path of the status stream on every view host.
pub const STATUS_PATH: &str = "/_gateway/status";

/// The view a Host header names, if it is `<view>.<gateway hostname>[:port]`.
pub fn view_of_host(host: &str, gateway_hostname: &str) -> Option<String> {
    let host = host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            name
        } else {
            host
        }
    });
    let view = host
        .to_ascii_lowercase()
        .strip_suffix(&format!(".{}", gateway_hostname.to_ascii_lowercase()))?
        .to_owned();
    views_types::ViewName::try_from(view.as_str()).ok()?;
    Some(view)
}

/// One progress event as the page reads it.
fn event_json(progress: &Progress) -> serde_json::Value {
    match progress {
        Progress::Starting(stage) => {
            serde_json::json!({"phase": "starting", "stage": stage.as_str()})
        }
        Progress::Ready => serde_json::json!({"phase": "ready"}),
        Progress::Failed(failure) => serde_json::json!({
            "phase": "failed", "reason": failure.reason, "message": failure.message,
        }),
        Progress::Gone => serde_json::json!({"phase": "gone", "message": "the view was deleted"}),
        Progress::Unavailable(message) => {
            serde_json::json!({"phase": "unavailable", "message": message})
        }
    }
}

/// The status stream of `view`'s start (starting it if nothing runs): one
/// event per change, ending after the final one.
pub fn events(
    activator: &Activator,
    view: &str,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
    let progress = activator.activate(view);
    let stream = futures::stream::unfold(
        (progress, false, false),
        |(mut progress, first_sent, done)| async move {
            if done {
                return None;
            }
            if first_sent && progress.changed().await.is_err() {
                // The driver ended; its last value was already sent.
                return None;
            }
            let current = progress.borrow_and_update().clone();
            let is_final = !matches!(current, Progress::Starting(_));
            let event = Event::default().data(event_json(&current).to_string());
            Some((Ok(event), (progress, true, is_final)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
}

/// The progress page for `view` (a validated view name: safe in HTML).
pub fn html(view: &str) -> String {
    PAGE.replace("{{VIEW}}", view)
        .replace("{{STATUS_PATH}}", STATUS_PATH)
}

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Starting {{VIEW}}…</title>
<style>
  :root { color-scheme: light dark; font-family: system-ui, sans-serif; }
  body { display: grid; place-items: center; min-height: 100vh; margin: 0; }
  main { max-width: 32rem; padding: 2rem; text-align: center; }
  h1 { font-size: 1.4rem; margin: 0 0 1rem; }
  ol { list-style: none; padding: 0; display: flex; gap: .5rem; justify-content: center; }
  li { padding: .3rem .7rem; border-radius: 1rem; border: 1px solid #8884; opacity: .5; }
  li.done { opacity: 1; background: #2a72; }
  li.now { opacity: 1; border-color: #2a7; font-weight: 600; }
  #message { min-height: 1.5rem; }
  .failed #message { color: #c33; font-weight: 600; }
</style>
</head>
<body>
<main id="page" data-phase="starting">
  <h1>Starting view <code>{{VIEW}}</code></h1>
  <ol>
    <li id="scheduled">scheduled</li>
    <li id="starting">starting</li>
    <li id="ready">ready</li>
  </ol>
  <p id="message" role="status">Waiting for a workload…</p>
  <noscript>This page reloads by itself once the view is ready when JavaScript is on; otherwise reload it in a few seconds.</noscript>
</main>
<script>
(() => {
  const steps = ["scheduled", "starting", "ready"];
  // Stages of the start, mapped onto the three steps people see.
  const stepOf = { creating: -1, pending: -1, scheduled: 0, starting: 1, routing: 2 };
  const says = {
    creating: "Creating the workload…",
    pending: "Waiting for a place to run…",
    scheduled: "Scheduled; starting the workload…",
    starting: "The workload is starting…",
    routing: "Almost there…",
  };
  const page = document.getElementById("page");
  const message = document.getElementById("message");
  const show = (reached, text) => {
    steps.forEach((id, i) => {
      const li = document.getElementById(id);
      li.className = i < reached ? "done" : i === reached ? "now" : "";
    });
    message.textContent = text;
  };
  const source = new EventSource("{{STATUS_PATH}}");
  source.onmessage = (e) => {
    const status = JSON.parse(e.data);
    page.dataset.phase = status.phase;
    if (status.phase === "starting") {
      show(stepOf[status.stage] ?? -1, says[status.stage] ?? "Starting…");
    } else if (status.phase === "ready") {
      show(3, "Ready: opening the view…");
      source.close();
      location.reload();
    } else {
      source.close();
      page.className = "failed";
      message.textContent = (status.phase === "failed" ? "The view could not start: " : "") +
        status.message + (status.reason ? " (" + status.reason + ")" : "");
    }
  };
})();
</script>
</body>
</html>
"#;
