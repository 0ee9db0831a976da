//! Logs: through `tracing`, as JSON when not on a terminal. (Metrics are
//! each module's own: every one registers its metrics in the registry
//! `/metrics` serves; see `main`.)

/// Install the global tracing subscriber.
pub fn init_logging(json: Option<bool>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube_client::client::builder=warn".into());
    let json = json.unwrap_or_else(|| !std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
