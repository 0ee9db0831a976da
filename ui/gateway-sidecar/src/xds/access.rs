//! Sign-in and access in Envoy's own filters, so that a warm view's requests
//! never reach the sidecar:
//!
//! ```text
//! early header mutation: drop the client's `x-views-identity` (only jwt_authn may set it)
//! oauth2     browsers: no session → authorization code + PKCE at the provider, callback
//!            /_gateway/oauth2/callback on the same host, session cookies for that host only
//!            (HMAC-bound to it); `Authorization: Bearer` passes through; a request that does
//!            not accept HTML gets 401, never a redirect
//! jwt_authn  the access token (Bearer, or the session's) against the provider's JWKS:
//!            issuer, audience, expiry; claims → metadata (RBAC) and `x-views-identity`
//! rbac       per view host: the view's owner, the users and groups it is shared with;
//!            anyone else gets exactly what an unknown host gets (404 "no such view")
//! ext_authz  cold views only (the activator)
//! ```
//!
//! Secrets (the client secret and the cookies' HMAC key) go to Envoy over SDS
//! on the same ADS stream, never in a listener.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::accesslog::v3 as accesslog;
use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as endpoint;
use envoy_types::pb::envoy::config::rbac::v3 as rbac;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3 as jwt;
use envoy_types::pb::envoy::extensions::filters::http::oauth2::v3 as oauth2;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3 as rbac_filter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::google::protobuf::{Any, UInt32Value};
use sha2::{Digest, Sha256};
use views_types::ViewRequest;

use super::resources::{NO_SUCH_VIEW, ads, any, inline, json_body, seconds};
use crate::api::SERVICE_ACCOUNT_KEYS_PATH;
use crate::config::Config;
use crate::identity::{PAYLOAD_HEADER, Provider};

pub const SECRET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// Where the provider sends browsers back (on every host: cookies are per host).
pub const CALLBACK_PATH: &str = "/_gateway/oauth2/callback";
/// Signs the browser out of this host (and, with the provider's end-session
/// endpoint, out of the provider).
pub const SIGN_OUT_PATH: &str = "/_gateway/sign-out";
/// Public on every host: Envoy's readiness probe goes through it.
pub const READINESS_PATH: &str = "/_api/readyz";

const JWT_FILTER: &str = "envoy.filters.http.jwt_authn";
const RBAC_FILTER: &str = "envoy.filters.http.rbac";
const PROVIDER: &str = "oidc";
const KUBERNETES_PROVIDER: &str = "kubernetes";
/// Where jwt_authn puts a verified token's claims, under [`JWT_FILTER`].
const CLAIMS_KEY: &str = "jwt";
const CLIENT_SECRET: &str = "oidc-client-secret";
/// The SDS name of the gateway's certificate.
const CERTIFICATE: &str = "gateway-tls";
const HMAC_SECRET: &str = "oauth2-hmac";

/// The sign-in settings with the provider's endpoints: present when sign-in is on.
fn provider(config: &Config) -> Option<&Provider> {
    config
        .identity
        .oidc_issuer
        .as_ref()
        .and(config.provider.as_ref())
}

/// The HTTP filters that run before ext_authz and the router.
pub fn http_filters(config: &Config) -> Vec<hcm::HttpFilter> {
    let Some(provider) = provider(config) else {
        return Vec::new();
    };
    let mut filters = Vec::new();
    if config.identity.oidc_client_secret.is_some() {
        filters.push(filter(
            "envoy.filters.http.oauth2",
            "type.googleapis.com/envoy.extensions.filters.http.oauth2.v3.OAuth2",
            &oauth2::OAuth2 {
                config: Some(sign_in(config, provider)),
            },
        ));
    }
    filters.push(filter(
        JWT_FILTER,
        "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        &verify_tokens(config, provider),
    ));
    // No rules here: a route with no per-route policy (the API, whose
    // sidecar checks the caller itself) is not restricted by this filter.
    filters.push(filter(
        RBAC_FILTER,
        "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        &rbac_filter::Rbac::default(),
    ));
    filters
}

fn filter<M: prost::Message>(name: &str, type_url: &str, message: &M) -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: name.into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(
            type_url, message,
        ))),
        ..Default::default()
    }
}

fn exact(path: &str) -> Option<matcher::StringMatcher> {
    Some(matcher::StringMatcher {
        match_pattern: Some(matcher::string_matcher::MatchPattern::Exact(path.into())),
        ..Default::default()
    })
}

fn path_matcher(path: &str) -> Option<matcher::PathMatcher> {
    Some(matcher::PathMatcher {
        rule: Some(matcher::path_matcher::Rule::Path(exact(path).unwrap())),
    })
}

fn header_matcher(
    name: &str,
    pattern: matcher::string_matcher::MatchPattern,
    invert: bool,
) -> route::HeaderMatcher {
    route::HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(route::header_matcher::HeaderMatchSpecifier::StringMatch(
            matcher::StringMatcher {
                match_pattern: Some(pattern),
                ..Default::default()
            },
        )),
        invert_match: invert,
        treat_missing_header_as_empty: true,
    }
}

fn sds(name: &str) -> Option<tls::SdsSecretConfig> {
    Some(tls::SdsSecretConfig {
        name: name.into(),
        sds_config: Some(ads()),
    })
}

/// The browser's sign-in: authorization code with PKCE, per host.
fn sign_in(config: &Config, provider: &Provider) -> oauth2::OAuth2Config {
    use matcher::string_matcher::MatchPattern;
    let lax = Some(oauth2::CookieConfig {
        same_site: oauth2::cookie_config::SameSite::Lax as i32,
        ..Default::default()
    });
    oauth2::OAuth2Config {
        token_endpoint: Some(http_uri(&provider.token_endpoint)),
        authorization_endpoint: provider.authorization_endpoint.clone(),
        end_session_endpoint: provider.end_session_endpoint.clone().unwrap_or_default(),
        credentials: Some(oauth2::OAuth2Credentials {
            client_id: config.identity.oidc_client_id.clone(),
            token_secret: sds(CLIENT_SECRET),
            token_formation: Some(oauth2::o_auth2_credentials::TokenFormation::HmacSecret(
                sds(HMAC_SECRET).unwrap(),
            )),
            // Host-only cookies (no Domain), named `__Host-…`: a browser
            // refuses such a cookie set with a Domain, so a page on one view
            // host cannot plant a session on another host or on the gateway's
            // (cookie tossing, the JupyterHub advisory GHSA-7r3h).
            cookie_domain: String::new(),
            cookie_names: Some(oauth2::o_auth2_credentials::CookieNames {
                bearer_token: "__Host-views-token".into(),
                oauth_hmac: "__Host-views-hmac".into(),
                oauth_expires: "__Host-views-expires".into(),
                id_token: "__Host-views-id".into(),
                refresh_token: "__Host-views-refresh".into(),
                oauth_nonce: "__Host-views-nonce".into(),
                code_verifier: "__Host-views-verifier".into(),
            }),
        }),
        // The host as the browser sent it, port included, so the provider
        // sends it back to this very host (and, after the code exchange, to
        // the page it asked for).
        redirect_uri: format!("%REQ(x-forwarded-proto)%://%REQ(:authority)%{CALLBACK_PATH}"),
        redirect_path_matcher: path_matcher(CALLBACK_PATH),
        signout_path: path_matcher(SIGN_OUT_PATH),
        // The session's access token goes on to jwt_authn as a bearer token
        // (jwt_authn removes it again before the request goes upstream).
        forward_bearer_token: true,
        pass_through_matcher: vec![
            header_matcher(
                "authorization",
                MatchPattern::Prefix("Bearer ".into()),
                false,
            ),
            header_matcher(":path", MatchPattern::Exact(READINESS_PATH.into()), false),
        ],
        // Programs (no `Accept: text/html`) get 401, never a redirect.
        deny_redirect_matcher: vec![header_matcher(
            "accept",
            MatchPattern::Contains("text/html".into()),
            true,
        )],
        auth_scopes: config.identity.oidc_scopes.clone(),
        resources: config.identity.oidc_resource.iter().cloned().collect(),
        // No refresh through the filter: it would trade one host's refresh
        // cookie for a session on whatever host it is sent to. An expired
        // session goes back through the provider (silent while its own
        // session lasts), which sets a session for that host only.
        use_refresh_token: Some(envoy_types::pb::google::protobuf::BoolValue { value: false }),
        cookie_configs: Some(oauth2::CookieConfigs {
            bearer_token_cookie_config: lax.clone(),
            oauth_hmac_cookie_config: lax.clone(),
            oauth_expires_cookie_config: lax.clone(),
            id_token_cookie_config: lax.clone(),
            refresh_token_cookie_config: lax.clone(),
            oauth_nonce_cookie_config: lax.clone(),
            code_verifier_cookie_config: lax,
        }),
        stat_prefix: "sign_in".into(),
        ..Default::default()
    }
}

/// `envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication` with its
/// providers in a fixed order: prost encodes a map in its `HashMap`'s order,
/// which differs between processes, and a listener whose bytes change on
/// every restart would be pushed again (draining every connection).
#[derive(Clone, PartialEq, prost::Message)]
struct JwtAuthentication {
    #[prost(message, repeated, tag = "1")]
    providers: Vec<ProviderEntry>,
    #[prost(message, repeated, tag = "2")]
    rules: Vec<jwt::RequirementRule>,
}

/// One entry of `map<string, JwtProvider>`.
#[derive(Clone, PartialEq, prost::Message)]
struct ProviderEntry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<jwt::JwtProvider>,
}

/// Every request but the readiness probe carries a token of the provider's
/// (or, for programs in the cluster, of Kubernetes'), for this gateway's
/// audience.
fn verify_tokens(config: &Config, provider: &Provider) -> JwtAuthentication {
    let identity = &config.identity;
    let verified = |issuer: &str, jwks: core::HttpUri, cache: i64| jwt::JwtProvider {
        issuer: issuer.into(),
        audiences: vec![identity.audience().to_string()],
        require_expiration: true,
        // Envoy's default allows a minute; the provider and the gateway
        // share NTP-synchronised clocks, and an expired token should stop
        // working promptly.
        clock_skew_seconds: 10,
        from_headers: vec![jwt::JwtHeader {
            name: "Authorization".into(),
            value_prefix: "Bearer ".into(),
        }],
        // Removed after verification: a view never receives the token.
        forward: false,
        forward_payload_header: PAYLOAD_HEADER.into(),
        payload_in_metadata: CLAIMS_KEY.into(),
        jwt_cache_config: Some(jwt::JwtCacheConfig {
            jwt_cache_size: 1000,
            ..Default::default()
        }),
        jwks_source_specifier: Some(jwt::jwt_provider::JwksSourceSpecifier::RemoteJwks(
            jwt::RemoteJwks {
                http_uri: Some(jwks),
                cache_duration: seconds(cache),
                async_fetch: Some(jwt::JwksAsyncFetch {
                    failed_refetch_duration: seconds(2),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let mut providers = vec![ProviderEntry {
        key: PROVIDER.into(),
        value: Some(verified(
            &provider.issuer,
            http_uri(&provider.jwks_uri),
            600,
        )),
    }];
    if let Some(issuer) = &identity.service_account_issuer {
        let keys = core::HttpUri {
            uri: format!("http://gateway-sidecar{SERVICE_ACCOUNT_KEYS_PATH}"),
            timeout: seconds(5),
            http_upstream_type: Some(core::http_uri::HttpUpstreamType::Cluster(
                config.sidecar_api_cluster.clone(),
            )),
        };
        providers.push(ProviderEntry {
            key: KUBERNETES_PROVIDER.into(),
            value: Some(verified(issuer, keys, 300)),
        });
    }
    let by_name = |name: &str| jwt::JwtRequirement {
        requires_type: Some(jwt::jwt_requirement::RequiresType::ProviderName(
            name.into(),
        )),
    };
    let signed_in = match providers.len() {
        1 => by_name(PROVIDER),
        _ => jwt::JwtRequirement {
            requires_type: Some(jwt::jwt_requirement::RequiresType::RequiresAny(
                jwt::JwtRequirementOrList {
                    requirements: providers.iter().map(|p| by_name(&p.key)).collect(),
                },
            )),
        },
    };
    let rule = |path: route::route_match::PathSpecifier, requires: Option<jwt::JwtRequirement>| {
        jwt::RequirementRule {
            r#match: Some(route::RouteMatch {
                path_specifier: Some(path),
                ..Default::default()
            }),
            requirement_type: requires.map(jwt::requirement_rule::RequirementType::Requires),
        }
    };
    JwtAuthentication {
        providers,
        rules: vec![
            rule(
                route::route_match::PathSpecifier::Path(READINESS_PATH.into()),
                None,
            ),
            rule(
                route::route_match::PathSpecifier::Prefix("/".into()),
                Some(signed_in),
            ),
        ],
    }
}

fn http_uri(uri: &str) -> core::HttpUri {
    core::HttpUri {
        uri: uri.into(),
        timeout: seconds(5),
        http_upstream_type: Some(core::http_uri::HttpUpstreamType::Cluster(cluster_name_for(
            uri,
        ))),
    }
}

/// `scheme://host:port` of a URL.
fn authority(uri: &str) -> (bool, String, u16) {
    let (https, rest) = match uri.split_once("://") {
        Some(("https", rest)) => (true, rest),
        Some((_, rest)) => (false, rest),
        None => (false, uri),
    };
    let host_port = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = host_port.rsplit('@').next().unwrap_or_default();
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host_port.starts_with('[') => {
            (host, port.parse().ok())
        }
        _ => (host_port, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (
        https,
        host.to_string(),
        port.unwrap_or(if https { 443 } else { 80 }),
    )
}

fn cluster_name_for(uri: &str) -> String {
    let (https, host, port) = authority(uri);
    format!("idp-{}-{host}-{port}", if https { "https" } else { "http" })
}

/// The clusters Envoy reaches the provider through (its JWKS and token
/// endpoints; usually one).
pub fn provider_clusters(config: &Config) -> Vec<cluster::Cluster> {
    let Some(provider) = provider(config) else {
        return Vec::new();
    };
    let mut uris = vec![provider.jwks_uri.as_str()];
    if config.identity.oidc_client_secret.is_some() {
        uris.push(provider.token_endpoint.as_str());
    }
    let by_name: std::collections::BTreeMap<String, &str> =
        uris.into_iter().map(|u| (cluster_name_for(u), u)).collect();
    by_name
        .into_iter()
        .map(|(name, uri)| provider_cluster(config, uri, name))
        .collect()
}

fn provider_cluster(config: &Config, uri: &str, name: String) -> cluster::Cluster {
    let (https, host, port) = authority(uri);
    let transport_socket = https.then(|| {
        let context = tls::UpstreamTlsContext {
            sni: host.clone(),
            common_tls_context: Some(tls::CommonTlsContext {
                validation_context_type: Some(
                    tls::common_tls_context::ValidationContextType::ValidationContext(
                        tls::CertificateValidationContext {
                            trusted_ca: Some(core::DataSource {
                                specifier: Some(core::data_source::Specifier::Filename(
                                    config.identity.oidc_ca_file.clone(),
                                )),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        core::TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(core::transport_socket::ConfigType::TypedConfig(any(
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                &context,
            ))),
        }
    });
    cluster::Cluster {
        name: name.clone(),
        cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::Type(
            cluster::cluster::DiscoveryType::LogicalDns as i32,
        )),
        // `localhost` resolves to ::1 first; providers often listen on IPv4 only.
        dns_lookup_family: cluster::cluster::DnsLookupFamily::V4Preferred as i32,
        connect_timeout: seconds(2),
        load_assignment: Some(endpoint::ClusterLoadAssignment {
            cluster_name: name,
            endpoints: vec![endpoint::LocalityLbEndpoints {
                lb_endpoints: vec![endpoint::LbEndpoint {
                    host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
                        endpoint::Endpoint {
                            address: Some(core::Address {
                                address: Some(core::address::Address::SocketAddress(
                                    core::SocketAddress {
                                        address: host,
                                        port_specifier: Some(
                                            core::socket_address::PortSpecifier::PortValue(
                                                port.into(),
                                            ),
                                        ),
                                        ..Default::default()
                                    },
                                )),
                            }),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        transport_socket,
        ..Default::default()
    }
}

/// The secrets the sign-in filter names: the client secret, and the key its
/// session cookies are signed with. The key is derived from the client
/// secret, so every replica signs alike without another Secret to keep, and
/// rotating the client secret signs everyone out.
pub fn secrets(config: &Config) -> Vec<tls::Secret> {
    let Some(client_secret) = config
        .identity
        .oidc_client_secret
        .as_ref()
        .filter(|_| provider(config).is_some())
    else {
        return Vec::new();
    };
    let hmac_key: String =
        Sha256::digest(format!("views-gateway session cookies\n{client_secret}"))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
    [
        (CLIENT_SECRET, client_secret.as_str()),
        (HMAC_SECRET, hmac_key.as_str()),
    ]
    .into_iter()
    .map(|(name, value)| tls::Secret {
        name: name.into(),
        r#type: Some(tls::secret::Type::GenericSecret(tls::GenericSecret {
            secret: inline(value),
            ..Default::default()
        })),
    })
    .collect()
}

fn claim_matcher(claim: &str, value: matcher::value_matcher::MatchPattern) -> rbac::Principal {
    rbac::Principal {
        identifier: Some(rbac::principal::Identifier::SourcedMetadata(
            rbac::SourcedMetadata {
                metadata_matcher: Some(matcher::MetadataMatcher {
                    filter: JWT_FILTER.into(),
                    path: [CLAIMS_KEY, claim]
                        .iter()
                        .map(|key| matcher::metadata_matcher::PathSegment {
                            segment: Some(matcher::metadata_matcher::path_segment::Segment::Key(
                                key.to_string(),
                            )),
                        })
                        .collect(),
                    value: Some(matcher::ValueMatcher {
                        match_pattern: Some(value),
                    }),
                    invert: false,
                }),
                ..Default::default()
            },
        )),
    }
}

fn string_is(value: &str) -> matcher::value_matcher::MatchPattern {
    matcher::value_matcher::MatchPattern::StringMatch(exact(value).unwrap())
}

/// Who may reach a view's host: its owner and whom it is shared with. The
/// per-host filter configuration of its virtual host (empty with sign-in off).
pub fn view_access(config: &Config, spec: &ViewRequest) -> HashMap<String, Any> {
    if provider(config).is_none() {
        return HashMap::new();
    }
    let user_claim = config.identity.oidc_user_claim.as_str();
    let groups_claim = config.identity.oidc_groups_claim.as_str();
    let shares = spec.shared_with.as_ref();
    let mut users: Vec<&str> = spec.owner.iter().map(|o| o.as_str()).collect();
    users.extend(
        shares
            .and_then(|s| s.users.as_deref())
            .unwrap_or_default()
            .iter()
            .map(|u| u.as_str()),
    );
    let mut principals: Vec<rbac::Principal> = users
        .into_iter()
        .map(|user| claim_matcher(user_claim, string_is(user)))
        .collect();
    principals.extend(
        shares
            .and_then(|s| s.groups.as_deref())
            .unwrap_or_default()
            .iter()
            .map(|group| {
                claim_matcher(
                    groups_claim,
                    matcher::value_matcher::MatchPattern::ListMatch(Box::new(
                        matcher::ListMatcher {
                            match_pattern: Some(matcher::list_matcher::MatchPattern::OneOf(
                                Box::new(matcher::ValueMatcher {
                                    match_pattern: Some(string_is(group)),
                                }),
                            )),
                        },
                    )),
                )
            }),
    );
    if principals.is_empty() {
        // A view without an owner (made while sign-in was off): nobody.
        principals.push(rbac::Principal {
            identifier: Some(rbac::principal::Identifier::NotId(Box::new(
                rbac::Principal {
                    identifier: Some(rbac::principal::Identifier::Any(true)),
                },
            ))),
        });
    }
    let policy = rbac::Policy {
        permissions: vec![rbac::Permission {
            rule: Some(rbac::permission::Rule::Any(true)),
        }],
        principals,
        ..Default::default()
    };
    let rbac_per_host = rbac_filter::RbacPerRoute {
        rbac: Some(rbac_filter::Rbac {
            rules: Some(rbac::Rbac {
                action: rbac::rbac::Action::Allow as i32,
                policies: HashMap::from([("owner-or-shared".to_string(), policy)]),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    // One entry per map: prost encodes a map in its HashMap's order, and
    // these bytes must be the same in every process (see `routed`).
    HashMap::from([(
        RBAC_FILTER.to_string(),
        any(
            "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
            &rbac_per_host,
        ),
    )])
}

/// Local replies of the sign-in filters, mapped: a signed-in user a view's
/// policy refuses gets what an unknown host gets (so names do not leak);
/// a missing, expired or foreign token gets the API's JSON 401.
pub fn local_replies(config: &Config) -> Vec<hcm::ResponseMapper> {
    if provider(config).is_none() {
        return Vec::new();
    }
    let status = |code: u32| accesslog::AccessLogFilter {
        filter_specifier: Some(
            accesslog::access_log_filter::FilterSpecifier::StatusCodeFilter(
                accesslog::StatusCodeFilter {
                    comparison: Some(accesslog::ComparisonFilter {
                        op: accesslog::comparison_filter::Op::Eq as i32,
                        value: Some(core::RuntimeUInt32 {
                            default_value: code,
                            runtime_key: format!("views_gateway.local_reply.{code}"),
                        }),
                    }),
                },
            ),
        ),
    };
    let signed_in = accesslog::AccessLogFilter {
        filter_specifier: Some(
            accesslog::access_log_filter::FilterSpecifier::MetadataFilter(
                accesslog::MetadataFilter {
                    matcher: Some(matcher::MetadataMatcher {
                        filter: JWT_FILTER.into(),
                        path: vec![matcher::metadata_matcher::PathSegment {
                            segment: Some(matcher::metadata_matcher::path_segment::Segment::Key(
                                CLAIMS_KEY.into(),
                            )),
                        }],
                        value: Some(matcher::ValueMatcher {
                            match_pattern: Some(
                                matcher::value_matcher::MatchPattern::PresentMatch(true),
                            ),
                        }),
                        invert: false,
                    }),
                    match_if_key_not_found: Some(envoy_types::pb::google::protobuf::BoolValue {
                        value: false,
                    }),
                },
            ),
        ),
    };
    let both =
        |a: accesslog::AccessLogFilter, b: accesslog::AccessLogFilter| accesslog::AccessLogFilter {
            filter_specifier: Some(accesslog::access_log_filter::FilterSpecifier::AndFilter(
                accesslog::AndFilter {
                    filters: vec![a, b],
                },
            )),
        };
    let unauthenticated = |filter| hcm::ResponseMapper {
        filter: Some(filter),
        status_code: Some(UInt32Value { value: 401 }),
        body: inline(
            r#"{"error":"unauthenticated","message":"sign in first: a session, or Authorization: Bearer <access token> from the identity provider (missing, expired or not for this gateway)"}"#,
        ),
        body_format_override: json_body(),
        ..Default::default()
    };
    vec![
        // The activator's own answers (ext_authz: not entitled, failed,
        // starting) stay as they are.
        hcm::ResponseMapper {
            filter: Some(accesslog::AccessLogFilter {
                filter_specifier: Some(
                    accesslog::access_log_filter::FilterSpecifier::ResponseFlagFilter(
                        accesslog::ResponseFlagFilter {
                            flags: vec!["UAEX".into()],
                        },
                    ),
                ),
            }),
            ..Default::default()
        },
        hcm::ResponseMapper {
            filter: Some(both(status(403), signed_in)),
            status_code: Some(UInt32Value { value: 404 }),
            body: inline(NO_SUCH_VIEW),
            ..Default::default()
        },
        // jwt_authn refuses a token for another audience with 403.
        unauthenticated(status(403)),
        unauthenticated(status(401)),
    ]
}

/// TLS on the gateway's listener, with the certificate from SDS (rotated
/// without touching the listener, so open connections stay).
pub fn terminate_tls() -> core::TransportSocket {
    let context = tls::DownstreamTlsContext {
        common_tls_context: Some(tls::CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds(CERTIFICATE).unwrap()],
            alpn_protocols: vec!["h2".into(), "http/1.1".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    core::TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(any(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            &context,
        ))),
    }
}

/// The certificate as an SDS secret.
pub fn certificate(certificate: &crate::tls::Certificate) -> tls::Secret {
    let bytes = |b: &[u8]| core::DataSource {
        specifier: Some(core::data_source::Specifier::InlineBytes(b.to_vec())),
        ..Default::default()
    };
    tls::Secret {
        name: CERTIFICATE.into(),
        r#type: Some(tls::secret::Type::TlsCertificate(tls::TlsCertificate {
            certificate_chain: Some(bytes(&certificate.chain)),
            private_key: Some(bytes(&certificate.key)),
            ..Default::default()
        })),
    }
}

/// What browsers are told on HTTPS: this host and the views' hosts under it
/// are HTTPS only, for a year (RFC 6797).
pub const STRICT_TRANSPORT_SECURITY: &str = "max-age=31536000; includeSubDomains";

/// With TLS, wherever plain HTTP only redirects (every hostname but
/// `localhost`): every response tells the browser to use HTTPS only, so that
/// a network attacker cannot keep a later visit on plain HTTP by answering
/// its first request himself. Not on `localhost`, whose plain HTTP is served
/// (development): HSTS applies to a host on every port, and would turn
/// every other local server on `localhost` to HTTPS in that browser.
/// First in the chain, so that the replies of the filters after it (sign-in
/// redirects, 401, 403, 404) carry it too.
pub fn strict_transport_security(config: &Config) -> Option<hcm::HttpFilter> {
    use envoy_types::pb::envoy::config::common::mutation_rules::v3 as rules;
    use envoy_types::pb::envoy::extensions::filters::http::header_mutation::v3 as mutation;
    if config.tls_secret.is_none() || config.gateway_hostname == "localhost" {
        return None;
    }
    let header = rules::HeaderMutation {
        action: Some(rules::header_mutation::Action::Append(
            core::HeaderValueOption {
                header: Some(core::HeaderValue {
                    key: "strict-transport-security".into(),
                    value: STRICT_TRANSPORT_SECURITY.into(),
                    ..Default::default()
                }),
                append_action: core::header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd
                    as i32,
                ..Default::default()
            },
        )),
    };
    Some(filter(
        "envoy.filters.http.header_mutation",
        "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
        &mutation::HeaderMutation {
            mutations: Some(mutation::Mutations {
                response_mutations: vec![header],
                ..Default::default()
            }),
            ..Default::default()
        },
    ))
}

/// Plain HTTP when the gateway serves TLS: every request is sent to HTTPS,
/// on `public_port` when people reach HTTPS on a port of its own.
pub fn redirect_to_https(public_port: Option<u16>) -> hcm::HttpConnectionManager {
    let redirect = route::Route {
        r#match: Some(route::RouteMatch {
            path_specifier: Some(route::route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(route::route::Action::Redirect(route::RedirectAction {
            scheme_rewrite_specifier: Some(
                route::redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true),
            ),
            port_redirect: public_port.map_or(0, u32::from),
            ..Default::default()
        })),
        ..Default::default()
    };
    hcm::HttpConnectionManager {
        stat_prefix: "gateway_http".into(),
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(
            route::RouteConfiguration {
                name: "to-https".into(),
                virtual_hosts: vec![route::VirtualHost {
                    name: "to-https".into(),
                    domains: vec!["*".into()],
                    routes: vec![redirect],
                    ..Default::default()
                }],
                ..Default::default()
            },
        )),
        http_filters: vec![hcm::HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(
                "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                &envoy_types::pb::envoy::extensions::filters::http::router::v3::Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    }
}

const LOWERCASE_FILTER: &str = "envoy.filters.http.lua";

/// Host names are case-insensitive, but the scope a request is routed by is
/// the Host's first label, compared exactly: a Host with capitals finds no
/// route. This filter lowercases the Host and routes again; every routed
/// request has it off ([`routed`]), so it runs only for requests that found
/// no route (capitals, or a host that does not exist).
pub fn lowercase_hosts() -> hcm::HttpFilter {
    use envoy_types::pb::envoy::extensions::filters::http::lua::v3::Lua;
    let script = Lua {
        default_source_code: Some(core::DataSource {
            specifier: Some(core::data_source::Specifier::InlineString(
                r#"function envoy_on_request(request)
  local headers = request:headers()
  local host = headers:get(":authority")
  local lower = string.lower(host)
  if lower ~= host then
    headers:replace(":authority", lower)
    request:clearRouteCache()
  end
end
"#
                .into(),
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    filter(
        LOWERCASE_FILTER,
        "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
        &script,
    )
}

/// The filter settings of every route configuration: a request that found
/// a route needs no lowercasing. (At the route configuration's level, so
/// that each map of filter settings has one entry: virtual hosts carry
/// RBAC, cold routes ext_authz.)
pub fn routed() -> HashMap<String, Any> {
    let off = route::FilterConfig {
        disabled: true,
        ..Default::default()
    };
    HashMap::from([(
        LOWERCASE_FILTER.to_string(),
        any(
            "type.googleapis.com/envoy.config.route.v3.FilterConfig",
            &off,
        ),
    )])
}

/// Drop what only Envoy's filters may set before any filter runs.
pub fn strip_internal_headers() -> core::TypedExtensionConfig {
    use envoy_types::pb::envoy::config::common::mutation_rules::v3 as rules;
    use envoy_types::pb::envoy::extensions::http::early_header_mutation::header_mutation::v3 as early;
    core::TypedExtensionConfig {
        name: "strip-internal-headers".into(),
        typed_config: Some(any(
            "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
            &early::HeaderMutation {
                mutations: vec![rules::HeaderMutation {
                    action: Some(rules::header_mutation::Action::Remove(
                        PAYLOAD_HEADER.into(),
                    )),
                }],
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use googletest::prelude::*;

    use super::*;

    #[gtest]
    fn provider_clusters_are_named_by_scheme_host_and_port() {
        expect_that!(
            authority("http://localhost:32702/jwks"),
            eq(&(false, "localhost".to_string(), 32702))
        );
        expect_that!(
            authority("https://id.example.com/realms/x/protocol/openid-connect/certs"),
            eq(&(true, "id.example.com".to_string(), 443))
        );
        expect_that!(
            authority("https://[::1]:8443/x"),
            eq(&(true, "::1".to_string(), 8443))
        );
        expect_that!(
            cluster_name_for("https://id.example.com/certs"),
            eq("idp-https-id.example.com-443")
        );
    }
}
