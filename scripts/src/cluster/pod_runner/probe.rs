//! Readiness probes against the real process: `httpGet` (plain HTTP) and
//! `tcpSocket`, with the kubelet's timing and threshold rules.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

enum Check {
    Http {
        addr: SocketAddr,
        url: String,
        request: Vec<u8>,
    },
    Tcp {
        addr: SocketAddr,
    },
    /// A probe this runtime cannot perform: never succeeds, and says why.
    Unsupported(String),
}

pub struct Prober {
    check: Check,
    pub initial_delay: Duration,
    pub period: Duration,
    timeout: Duration,
    success_threshold: u32,
    failure_threshold: u32,
    successes: u32,
    failures: u32,
    ready: bool,
}

fn seconds(value: Option<i32>, default: u64, min: u64) -> Duration {
    let value = value.and_then(|v| u64::try_from(v).ok()).unwrap_or(default);
    Duration::from_secs(value.max(min))
}

fn threshold(value: Option<i32>, default: u32) -> u32 {
    value
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

impl Prober {
    pub fn new(probe: &Probe, container: &Container, pod_ip: Ipv4Addr) -> Self {
        Self {
            check: check(probe, container, pod_ip),
            initial_delay: seconds(probe.initial_delay_seconds, 0, 0),
            period: seconds(probe.period_seconds, 10, 1),
            timeout: seconds(probe.timeout_seconds, 1, 1),
            success_threshold: threshold(probe.success_threshold, 1),
            failure_threshold: threshold(probe.failure_threshold, 3),
            successes: 0,
            failures: 0,
            ready: false,
        }
    }

    /// Why this probe can never pass, if it cannot.
    pub fn unsupported(&self) -> Option<&str> {
        match &self.check {
            Check::Unsupported(why) => Some(why),
            _ => None,
        }
    }

    /// Probe once. `Err` carries a failure message.
    pub async fn probe(&self) -> Result<(), String> {
        match &self.check {
            Check::Unsupported(why) => Err(why.clone()),
            Check::Tcp { addr } => {
                match tokio::time::timeout(self.timeout, TcpStream::connect(addr)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("dial tcp {addr}: {e}")),
                    Err(_) => Err(format!(
                        "dial tcp {addr}: timed out after {:?}",
                        self.timeout
                    )),
                }
            }
            Check::Http { addr, url, request } => {
                match tokio::time::timeout(self.timeout, http_status(*addr, request)).await {
                    Ok(Ok(status)) if (200..400).contains(&status) => Ok(()),
                    Ok(Ok(status)) => Err(format!("HTTP probe failed with statuscode: {status}")),
                    Ok(Err(e)) => Err(format!("Get {url:?}: {e}")),
                    Err(_) => Err(format!("Get {url:?}: timed out after {:?}", self.timeout)),
                }
            }
        }
    }

    /// Fold one result in; returns the new readiness when it changes.
    pub fn record(&mut self, passed: bool) -> Option<bool> {
        if passed {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.ready && self.successes >= self.success_threshold {
                self.ready = true;
                return Some(true);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.ready && self.failures >= self.failure_threshold {
                self.ready = false;
                return Some(false);
            }
        }
        None
    }
}

fn check(probe: &Probe, container: &Container, pod_ip: Ipv4Addr) -> Check {
    let port = |port: &IntOrString| -> Result<u16, String> {
        match port {
            IntOrString::Int(n) => u16::try_from(*n)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("invalid port {n}")),
            IntOrString::String(name) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("no container port named {name:?}")),
        }
    };
    let host = |host: Option<&String>| -> Result<IpAddr, String> {
        match host.filter(|h| !h.is_empty()) {
            None => Ok(IpAddr::V4(pod_ip)),
            Some(h) => h
                .parse()
                .map_err(|_| format!("probe host {h:?}: only IP addresses are supported")),
        }
    };
    let built = if let Some(http) = &probe.http_get {
        (|| {
            if let Some(scheme) = http
                .scheme
                .as_deref()
                .filter(|s| !s.eq_ignore_ascii_case("HTTP"))
            {
                return Err(format!(
                    "httpGet scheme {scheme} is not supported by the process runtime (HTTP only)"
                ));
            }
            let addr = SocketAddr::new(host(http.host.as_ref())?, port(&http.port)?);
            let headers: Vec<(String, String)> = http
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect();
            let (path, request) = http_request(http.path.as_deref(), addr, &headers)?;
            Ok(Check::Http {
                addr,
                url: format!("http://{addr}{path}"),
                request,
            })
        })()
    } else if let Some(tcp) = &probe.tcp_socket {
        (|| {
            Ok(Check::Tcp {
                addr: SocketAddr::new(host(tcp.host.as_ref())?, port(&tcp.port)?),
            })
        })()
    } else if probe.exec.is_some() {
        Err("exec probes are not supported by the process runtime".to_owned())
    } else if probe.grpc.is_some() {
        Err("grpc probes are not supported by the process runtime".to_owned())
    } else {
        Err("the probe has no handler".to_owned())
    };
    built.unwrap_or_else(Check::Unsupported)
}

fn http_request(
    path: Option<&str>,
    addr: SocketAddr,
    headers: &[(String, String)],
) -> Result<(String, Vec<u8>), String> {
    let path = match path.unwrap_or_default() {
        "" => "/".to_owned(),
        p if p.starts_with('/') => p.to_owned(),
        p => format!("/{p}"),
    };
    let bad = |s: &str| s.chars().any(|c| c.is_control() && c != '\t');
    if bad(&path) || path.contains(' ') {
        return Err(format!("probe path {path:?} is not a valid request target"));
    }
    let mut host = addr.to_string();
    let mut extra = String::new();
    for (name, value) in headers {
        if bad(name) || bad(value) || name.contains(':') || name.is_empty() {
            return Err(format!("probe header {name:?} is not a valid HTTP header"));
        }
        if name.eq_ignore_ascii_case("host") {
            host = value.clone();
        } else {
            extra.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    let has = |header: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(header));
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    if !has("user-agent") {
        request.push_str("User-Agent: kube-probe/1.33\r\n");
    }
    if !has("accept") {
        request.push_str("Accept: */*\r\n");
    }
    request.push_str(&extra);
    request.push_str("Connection: close\r\n\r\n");
    Ok((path, request.into_bytes()))
}

/// Send the request and read just the status code.
async fn http_status(addr: SocketAddr, request: &[u8]) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_status(&head).ok_or_else(|| std::io::Error::other("malformed HTTP response"))
}

fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    parts.next()?.starts_with("HTTP/").then_some(())?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction};

    use super::*;

    fn http_probe(port: IntOrString, scheme: Option<&str>) -> Probe {
        Probe {
            http_get: Some(HTTPGetAction {
                path: Some("healthz".into()),
                port,
                scheme: scheme.map(Into::into),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(0),
            ..Probe::default()
        }
    }

    fn container() -> Container {
        Container {
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..ContainerPort::default()
            }]),
            ..Container::default()
        }
    }

    const IP: Ipv4Addr = Ipv4Addr::new(10, 233, 1, 1);

    #[test]
    fn named_ports_and_defaults() {
        let prober = Prober::new(
            &http_probe(IntOrString::String("http".into()), None),
            &container(),
            IP,
        );
        assert_eq!(prober.period, Duration::from_secs(1));
        assert_eq!(prober.timeout, Duration::from_secs(1));
        match &prober.check {
            Check::Http { addr, url, request } => {
                assert_eq!(addr.to_string(), "10.233.1.1:8080");
                assert_eq!(url, "http://10.233.1.1:8080/healthz");
                assert!(String::from_utf8_lossy(request).starts_with("GET /healthz HTTP/1.1\r\n"));
            }
            _ => panic!("expected an HTTP check"),
        }
    }

    #[test]
    fn unsupported_probes_say_why() {
        let https = Prober::new(
            &http_probe(IntOrString::Int(443), Some("HTTPS")),
            &container(),
            IP,
        );
        assert!(https.unsupported().is_some_and(|why| why.contains("HTTPS")));
        let unnamed = Prober::new(
            &http_probe(IntOrString::String("nope".into()), None),
            &container(),
            IP,
        );
        assert!(unnamed.unsupported().is_some());
        let bad_port = Prober::new(&http_probe(IntOrString::Int(70000), None), &container(), IP);
        assert!(bad_port.unsupported().is_some());
    }

    #[test]
    fn thresholds_flip_readiness_only_on_change() {
        let mut probe = http_probe(IntOrString::Int(1), None);
        probe.success_threshold = Some(2);
        probe.failure_threshold = Some(2);
        let mut prober = Prober::new(&probe, &container(), IP);
        assert_eq!(prober.record(true), None);
        assert_eq!(prober.record(true), Some(true));
        assert_eq!(prober.record(true), None);
        assert_eq!(prober.record(false), None);
        assert_eq!(prober.record(true), None);
        assert_eq!(prober.record(false), None);
        assert_eq!(prober.record(false), Some(false));
    }

    #[test]
    fn reads_status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status(b"SSH-2.0-x\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }
}
