//! A container's environment and command line, resolved from the pod spec the
//! way the kubelet does it: `envFrom` first, then `env` (later entries win),
//! `$(VAR)` references expanded against what is already defined.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::{Api, Client};

use super::Error;
use super::images::Image;
use crate::cluster::network;

/// Variables every process gets unless the pod sets them: a container
/// image would normally provide `PATH`; the runtime provides `HOSTNAME`.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn config_error(message: String) -> Error {
    Error::Container {
        reason: "CreateContainerConfigError",
        message,
    }
}

/// The environment for `container` of `pod`, whose address is `pod_ip`.
/// Secrets and ConfigMaps are read through the API at each start, so a
/// restarted container sees their current values, as with the kubelet.
pub async fn resolve(
    client: &Client,
    pod: &Pod,
    container: &Container,
    pod_ip: Ipv4Addr,
) -> Result<Vec<(String, String)>, Error> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut sources = Sources {
        secrets: Api::namespaced(client.clone(), &namespace),
        config_maps: Api::namespaced(client.clone(), &namespace),
        namespace,
        cache: HashMap::new(),
    };
    let mut vars = Vars::default();
    vars.set("PATH".into(), DEFAULT_PATH.into());
    if let Some(name) = &pod.metadata.name {
        vars.set("HOSTNAME".into(), name.clone());
    }
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (kind, name, optional) = match (&from.secret_ref, &from.config_map_ref) {
            (Some(s), _) => (Kind::Secret, s.name.clone(), s.optional.unwrap_or(false)),
            (None, Some(c)) => (Kind::ConfigMap, c.name.clone(), c.optional.unwrap_or(false)),
            (None, None) => continue,
        };
        match sources.data(kind, &name).await? {
            Some(data) => {
                for (key, value) in data {
                    vars.set(format!("{prefix}{key}"), value);
                }
            }
            None if optional => {}
            None => {
                return Err(config_error(format!(
                    "{} {:?} not found",
                    kind.as_str(),
                    name
                )));
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => Some(vars.expand(var.value.as_deref().unwrap_or_default())),
            Some(from) => {
                if let Some(selector) = &from.secret_key_ref {
                    sources
                        .key(
                            Kind::Secret,
                            &selector.name,
                            &selector.key,
                            selector.optional,
                        )
                        .await?
                } else if let Some(selector) = &from.config_map_key_ref {
                    sources
                        .key(
                            Kind::ConfigMap,
                            &selector.name,
                            &selector.key,
                            selector.optional,
                        )
                        .await?
                } else if let Some(field) = &from.field_ref {
                    Some(field_value(pod, &field.field_path, pod_ip)?)
                } else {
                    return Err(config_error(format!(
                        "env {}: only secretKeyRef, configMapKeyRef and fieldRef are supported by the process runtime",
                        var.name
                    )));
                }
            }
        };
        // An optional key that is absent leaves the variable unset.
        if let Some(value) = value {
            vars.set(var.name.clone(), value);
        }
    }
    Ok(vars.into_list())
}

/// The argument vector for `container` (without the binary itself).
///
/// An image's entrypoint here is the mapped binary, and nothing else can be
/// run. So `command` (which replaces an image's entrypoint) is accepted only
/// when `command[0]` names that binary — by its entrypoint name, with or
/// without a directory, as a Dockerfile would install it — and its remaining
/// items come before `args`, exactly as they would after the entrypoint.
pub fn command_line(
    container: &Container,
    image: &Image,
    env: &[(String, String)],
) -> Result<Vec<String>, Error> {
    let vars = Vars::from_list(env);
    let mut argv = Vec::new();
    if let Some(command) = container.command.as_ref().filter(|c| !c.is_empty()) {
        let program = vars.expand(&command[0]);
        let name = program.rsplit('/').next().unwrap_or_default();
        if name != image.entrypoint && program != image.binary.to_string_lossy() {
            return Err(Error::Container {
                reason: "CreateContainerError",
                message: format!(
                    "command[0] {program:?} is not this image's entrypoint {:?}: the process runtime runs only {}",
                    image.entrypoint,
                    image.binary.display()
                ),
            });
        }
        argv.extend(command[1..].iter().map(|a| vars.expand(a)));
    }
    argv.extend(container.args.iter().flatten().map(|a| vars.expand(a)));
    Ok(argv)
}

#[derive(Clone, Copy)]
enum Kind {
    Secret,
    ConfigMap,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::ConfigMap => "configmap",
        }
    }
}

struct Sources {
    namespace: String,
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    cache: HashMap<(&'static str, String), Option<BTreeMap<String, String>>>,
}

impl Sources {
    /// All keys of a Secret or ConfigMap, or None if it does not exist.
    async fn data(
        &mut self,
        kind: Kind,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, Error> {
        let key = (kind.as_str(), name.to_owned());
        if let Some(data) = self.cache.get(&key) {
            return Ok(data.clone());
        }
        let data = match kind {
            Kind::Secret => self.secrets.get_opt(name).await?.map(|secret| {
                secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    // Environment values are text; a binary secret is passed
                    // through lossily rather than refused.
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect()
            }),
            Kind::ConfigMap => self.config_maps.get_opt(name).await?.map(|cm| {
                let mut data = cm.data.unwrap_or_default();
                for (k, v) in cm.binary_data.unwrap_or_default() {
                    data.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                }
                data
            }),
        };
        self.cache.insert(key, data.clone());
        Ok(data)
    }

    /// One key; None when it may be absent and is.
    async fn key(
        &mut self,
        kind: Kind,
        name: &str,
        key: &str,
        optional: Option<bool>,
    ) -> Result<Option<String>, Error> {
        let optional = optional.unwrap_or(false);
        match self.data(kind, name).await? {
            Some(data) => match data.get(key) {
                Some(value) => Ok(Some(value.clone())),
                None if optional => Ok(None),
                None => Err(config_error(format!(
                    "couldn't find key {key} in {} {}/{name}",
                    kind.as_str(),
                    self.namespace
                ))),
            },
            None if optional => Ok(None),
            None => Err(config_error(format!(
                "{} {:?} not found",
                kind.as_str(),
                name
            ))),
        }
    }
}

/// The fields the downward API offers that make sense for a process.
fn field_value(pod: &Pod, path: &str, pod_ip: Ipv4Addr) -> Result<String, Error> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let subscript = |prefix: &str| {
        path.strip_prefix(prefix)?
            .strip_suffix("']")
            .map(str::to_owned)
    };
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" | "status.podIPs" => Some(pod_ip.to_string()),
        "status.hostIP" | "status.hostIPs" => Some(network::HOST_IP.to_string()),
        _ => {
            if let Some(key) = subscript("metadata.labels['") {
                meta.labels.as_ref().and_then(|l| l.get(&key).cloned())
            } else if let Some(key) = subscript("metadata.annotations['") {
                meta.annotations.as_ref().and_then(|a| a.get(&key).cloned())
            } else {
                return Err(config_error(format!(
                    "fieldRef {path:?} is not supported by the process runtime"
                )));
            }
        }
    };
    Ok(value.unwrap_or_default())
}

/// Variables in definition order, with the kubelet's `$(VAR)` expansion.
#[derive(Default)]
struct Vars {
    order: Vec<String>,
    values: HashMap<String, String>,
}

impl Vars {
    fn from_list(list: &[(String, String)]) -> Self {
        let mut vars = Self::default();
        for (k, v) in list {
            vars.set(k.clone(), v.clone());
        }
        vars
    }

    fn set(&mut self, name: String, value: String) {
        if self.values.insert(name.clone(), value).is_none() {
            self.order.push(name);
        }
    }

    fn into_list(mut self) -> Vec<(String, String)> {
        self.order
            .into_iter()
            .filter_map(|name| {
                let value = self.values.remove(&name)?;
                Some((name, value))
            })
            .collect()
    }

    /// `$(NAME)` becomes NAME's value when defined and stays as written
    /// otherwise; `$$` is a literal `$` (so `$$(NAME)` stays unexpanded).
    fn expand(&self, input: &str) -> String {
        let mut out = String::with_capacity(input.len());
        let mut rest = input;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(inner) = after.strip_prefix('(') {
                match inner.find(')') {
                    Some(close) => {
                        let name = &inner[..close];
                        match self.values.get(name) {
                            Some(value) => out.push_str(value),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        rest = &inner[close + 1..];
                    }
                    None => {
                        out.push_str("$(");
                        rest = inner;
                    }
                }
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn vars() -> Vars {
        Vars::from_list(&[("A".into(), "1".into()), ("B".into(), "x y".into())])
    }

    #[test]
    fn expands_like_the_kubelet() {
        let vars = vars();
        for (input, expected) in [
            ("$(A)", "1"),
            ("a$(A)b$(B)", "a1bx y"),
            ("$(C)", "$(C)"),
            ("$$(A)", "$(A)"),
            ("$$", "$"),
            ("$(A", "$(A"),
            ("cost $5", "cost $5"),
            ("trailing $", "trailing $"),
            ("é$(A)é", "é1é"),
        ] {
            assert_eq!(vars.expand(input), expected, "{input}");
        }
    }

    #[test]
    fn later_definitions_win_but_keep_their_place() {
        let mut vars = vars();
        vars.set("A".into(), "2".into());
        assert_eq!(
            vars.into_list(),
            vec![("A".into(), "2".into()), ("B".into(), "x y".into())]
        );
    }

    fn image() -> Image {
        Image {
            binary: PathBuf::from("/repo/target/debug/echo-server"),
            entrypoint: "echo-server".into(),
        }
    }

    fn container(command: Option<&[&str]>, args: &[&str]) -> Container {
        Container {
            name: "c".into(),
            command: command.map(|c| c.iter().map(|s| (*s).to_owned()).collect()),
            args: Some(args.iter().map(|s| (*s).to_owned()).collect()),
            ..Container::default()
        }
    }

    #[test]
    fn command_must_name_the_entrypoint_and_goes_before_args() {
        let env = [("PORT".to_owned(), "9000".to_owned())];
        let argv = command_line(
            &container(
                Some(&["/usr/bin/echo-server", "--listen"]),
                &["0.0.0.0:$(PORT)"],
            ),
            &image(),
            &env,
        )
        .unwrap();
        assert_eq!(argv, vec!["--listen", "0.0.0.0:9000"]);
        let argv = command_line(&container(None, &["--a"]), &image(), &env).unwrap();
        assert_eq!(argv, vec!["--a"]);
        let refused = command_line(&container(Some(&["sh", "-c"]), &[]), &image(), &env);
        assert!(matches!(
            refused,
            Err(Error::Container {
                reason: "CreateContainerError",
                ..
            })
        ));
    }

    #[test]
    fn downward_api_fields() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("p".into());
        pod.metadata.labels = Some([("app".to_owned(), "x".to_owned())].into());
        let ip = Ipv4Addr::new(10, 233, 1, 9);
        assert_eq!(field_value(&pod, "metadata.name", ip).unwrap(), "p");
        assert_eq!(field_value(&pod, "status.podIP", ip).unwrap(), "10.233.1.9");
        assert_eq!(
            field_value(&pod, "metadata.labels['app']", ip).unwrap(),
            "x"
        );
        assert_eq!(
            field_value(&pod, "metadata.labels['none']", ip).unwrap(),
            ""
        );
        assert!(field_value(&pod, "spec.nope", ip).is_err());
    }
}
