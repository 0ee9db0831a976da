//! A tiny HTTP/1.1 server used as a real pod process: the local cluster's pod
//! runner starts it at a pod IP, tests talk to it, benchmarks use it as a
//! backend. It therefore stays small and does nothing per request beyond
//! matching the path.
//!
//! - `GET /` → `200`, body `pod: <$POD_NAME>\nmessage: <$ECHO_MESSAGE>\n`
//! - `GET /healthz` → `200 ok`, or `503` until `--ready-after-ms` has passed
//! - anything else → `404`
//!
//! Listens on `--listen ADDR`, else `$VIEW_LISTEN` (as a view workload
//! started by the gateway), else `$LISTEN`, else `0.0.0.0:8080`. The local
//! cluster's process pods all share one network namespace, so a pod there
//! should listen on its own address (`--listen $(POD_IP):8080`, with `POD_IP`
//! from the downward API) rather than on every address.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const USAGE: &str = "usage: echo-server [--listen ADDR] [--ready-after-ms N]";

struct Options {
    listen: SocketAddr,
    ready_after: Duration,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    // VIEW_LISTEN is what the gateway gives a view's workload, so the echo
    // server can stand in for one.
    let mut listen = std::env::var("VIEW_LISTEN")
        .or_else(|_| std::env::var("LISTEN"))
        .unwrap_or_else(|_| "0.0.0.0:8080".to_owned());
    let mut ready_after = Duration::ZERO;
    while let Some(arg) = args.next() {
        // Both `--flag value` and `--flag=value`, as the pod spec may use either.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--listen" => listen = value()?,
            "--ready-after-ms" => {
                let ms = value()?;
                let ms = ms
                    .parse()
                    .map_err(|_| format!("--ready-after-ms: not a number: {ms}"))?;
                ready_after = Duration::from_millis(ms);
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    let listen = listen
        .parse()
        .map_err(|_| format!("not a socket address: {listen}"))?;
    Ok(Options {
        listen,
        ready_after,
    })
}

struct State {
    body: Bytes,
    ready_at: Instant,
}

fn handle(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, body) = match req.uri().path() {
        "/" => (StatusCode::OK, state.body.clone()),
        // What reached the pod: lets tests see which headers the gateway
        // passes on and which it keeps back.
        "/headers" => (
            StatusCode::OK,
            Bytes::from(
                req.headers()
                    .iter()
                    .map(|(name, value)| format!("{name}: {}\n", value.to_str().unwrap_or("?")))
                    .collect::<String>(),
            ),
        ),
        "/healthz" if Instant::now() >= state.ready_at => {
            (StatusCode::OK, Bytes::from_static(b"ok\n"))
        }
        "/healthz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(b"not ready\n"),
        ),
        _ => (StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n")),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("echo-server: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let pod = std::env::var("POD_NAME").unwrap_or_default();
    let message = std::env::var("ECHO_MESSAGE").unwrap_or_default();
    let state = Arc::new(State {
        body: Bytes::from(format!("pod: {pod}\nmessage: {message}\n")),
        ready_at: Instant::now() + options.ready_after,
    });
    let listener = match TcpListener::bind(options.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("echo-server: listening on {}: {e}", options.listen);
            return ExitCode::FAILURE;
        }
    };
    eprintln!("echo-server: listening on {}", options.listen);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            // Running out of descriptors under load must not end the server.
            Err(e) => {
                eprintln!("echo-server: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = handle(&state, &req);
                async move { Ok::<_, Infallible>(response) }
            });
            // Clients hanging up mid-request are normal; nothing to report.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn flags_take_separate_or_inline_values() {
        let options = parse(&["--listen", "127.0.0.1:9", "--ready-after-ms=250"]).unwrap();
        assert_eq!(options.listen, "127.0.0.1:9".parse().unwrap());
        assert_eq!(options.ready_after, Duration::from_millis(250));
    }

    #[test]
    fn unknown_flags_are_refused() {
        assert!(parse(&["--nope"]).is_err());
        assert!(parse(&["--ready-after-ms", "soon"]).is_err());
        assert!(parse(&["--listen"]).is_err());
    }
}
