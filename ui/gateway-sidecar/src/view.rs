//! What a view is in Kubernetes terms: a headless Service carrying a
//! predefined label and its spec in an annotation. Pure mapping and
//! validation, shared by the writers (API) and the watchers (index).
//!
//! ```text
//! Service view-<name>                     (the view; the only state)
//!   labels:      app.kubernetes.io/managed-by=views-gateway, views.dev/view=<name>
//!   annotations: views.dev/spec = {"name":…,"subsets":[…],"deadlineSeconds":…}
//!   spec:        clusterIP None, publishNotReadyAddresses, selector views.dev/view=<name>
//! EndpointSlices of it                    (inherit the Service's labels)
//! ```

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use views_types::{DeadlineSeconds, IdleTimeoutSeconds, ViewRequest};

use crate::config::Config;

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "views-gateway";
/// On the Service (value: the view name) and on the view's pods, which the
/// Service selects by it.
pub const VIEW_LABEL: &str = "views.dev/view";
pub const SPEC_ANNOTATION: &str = "views.dev/spec";
/// Selects every view Service, and (labels are inherited) their EndpointSlices.
pub const SELECTOR: &str = "app.kubernetes.io/managed-by=views-gateway,views.dev/view";

pub fn service_name(view: &str) -> String {
    format!("view-{view}")
}

/// Why a request cannot become a view; the API maps each to its error code.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Invalid {
    #[error("`{0}` is reserved and cannot be a view name")]
    ReservedName(String),
    #[error("table `{table}` path `{path}` is not inside any prefix of its subset")]
    TableOutsidePrefixes {
        subset: usize,
        table: String,
        path: String,
    },
    #[error("table `{table}` is defined more than once")]
    DuplicateTable { subset: usize, table: String },
    #[error("{field} must be between {min} and {max}")]
    OutOfRange {
        field: &'static str,
        min: i64,
        max: i64,
    },
}

impl Invalid {
    /// The request's field at fault, as a JSON Pointer (the API error's
    /// `details.field`, so a form can show the error beside it).
    pub fn field(&self) -> String {
        let escape = |token: &str| token.replace('~', "~0").replace('/', "~1");
        match self {
            Invalid::ReservedName(_) => "/name".into(),
            Invalid::TableOutsidePrefixes { subset, table, .. } => {
                format!("/subsets/{subset}/tables/{}/path", escape(table))
            }
            Invalid::DuplicateTable { subset, table } => {
                format!("/subsets/{subset}/tables/{}", escape(table))
            }
            Invalid::OutOfRange { field, .. } => format!("/{field}"),
        }
    }
}

/// Check what the JSON Schema cannot say, and fill in defaults, so that the
/// stored spec is complete and two equal requests store equal specs.
pub fn normalize(mut request: ViewRequest, config: &Config) -> Result<ViewRequest, Invalid> {
    let name = request.name.to_string();
    if config.is_reserved(&name) {
        return Err(Invalid::ReservedName(name));
    }
    let mut tables = std::collections::BTreeSet::new();
    for (index, subset) in request.subsets.iter().enumerate() {
        for (table, definition) in &subset.tables {
            if !tables.insert(table.to_string()) {
                return Err(Invalid::DuplicateTable {
                    subset: index,
                    table: table.to_string(),
                });
            }
            let path = definition.path.to_string();
            if !subset
                .prefixes
                .iter()
                .any(|prefix| path.starts_with(prefix.as_str()))
            {
                return Err(Invalid::TableOutsidePrefixes {
                    subset: index,
                    table: table.to_string(),
                    path,
                });
            }
        }
    }
    let deadline = request
        .deadline_seconds
        .map_or(config.default_deadline_seconds, |d| d.0);
    if !(60..=86_400).contains(&deadline) {
        return Err(Invalid::OutOfRange {
            field: "deadlineSeconds",
            min: 60,
            max: 86_400,
        });
    }
    let idle = request
        .idle_timeout_seconds
        .map_or(config.default_idle_timeout_seconds, |d| d.0);
    if !(30..=86_400).contains(&idle) {
        return Err(Invalid::OutOfRange {
            field: "idleTimeoutSeconds",
            min: 30,
            max: 86_400,
        });
    }
    request.deadline_seconds = Some(DeadlineSeconds(deadline));
    request.idle_timeout_seconds = Some(IdleTimeoutSeconds(idle));
    Ok(request)
}

/// The Service that is the view.
pub fn to_service(spec: &ViewRequest, config: &Config) -> Service {
    let name = spec.name.to_string();
    Service {
        metadata: ObjectMeta {
            name: Some(service_name(&name)),
            namespace: Some(config.namespace.clone()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                (VIEW_LABEL.to_string(), name.clone()),
            ])),
            annotations: Some(BTreeMap::from([(
                SPEC_ANNOTATION.to_string(),
                serde_json::to_string(spec).expect("a ViewRequest serializes"),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(BTreeMap::from([(VIEW_LABEL.to_string(), name)])),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: i32::from(config.view_port),
                target_port: Some(IntOrString::String("http".into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// Why a Service carrying the view label is not a usable view (someone edited
/// it by hand, or an older version wrote it).
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error("no {SPEC_ANNOTATION} annotation")]
    MissingSpec,
    #[error("{SPEC_ANNOTATION} is not a valid view spec: {0}")]
    BadSpec(#[from] serde_json::Error),
    #[error("the spec names view `{spec}` but the label says `{label}`")]
    NameMismatch { spec: String, label: String },
}

/// Read a view's spec back from its Service.
pub fn from_service(service: &Service) -> Result<ViewRequest, Unreadable> {
    let raw = service
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SPEC_ANNOTATION))
        .ok_or(Unreadable::MissingSpec)?;
    let spec: ViewRequest = serde_json::from_str(raw)?;
    let label = service
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(VIEW_LABEL))
        .cloned()
        .unwrap_or_default();
    if spec.name.as_str() != label {
        return Err(Unreadable::NameMismatch {
            spec: spec.name.to_string(),
            label,
        });
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use googletest::prelude::*;

    use super::*;

    fn config() -> Config {
        Config::parse_from(["gateway-sidecar"])
    }

    fn request(json: serde_json::Value) -> ViewRequest {
        serde_json::from_value(json).expect("valid request")
    }

    fn sales() -> serde_json::Value {
        serde_json::json!({
            "name": "sales",
            "subsets": [{"bucket": "lake", "prefixes": ["sales/"],
                         "tables": {"orders": {"path": "sales/orders/*.parquet", "format": "parquet"}}}],
        })
    }

    #[gtest]
    fn normalize_fills_in_defaults_so_equal_requests_store_equal_specs() {
        let spec = normalize(request(sales()), &config()).expect("valid");
        expect_that!(spec.deadline_seconds.map(|d| d.0), some(eq(3600)));
        expect_that!(spec.idle_timeout_seconds.map(|d| d.0), some(eq(900)));
    }

    #[gtest]
    fn reserved_names_are_refused() {
        let mut json = sales();
        json["name"] = "api".into();
        expect_that!(
            normalize(request(json), &config()),
            err(eq(&Invalid::ReservedName("api".into())))
        );
    }

    #[gtest]
    fn a_table_outside_its_prefixes_is_refused() {
        let mut json = sales();
        json["subsets"][0]["tables"]["orders"]["path"] = "private/orders.parquet".into();
        let refused = normalize(request(json), &config()).expect_err("refused");
        expect_that!(
            refused,
            matches_pattern!(Invalid::TableOutsidePrefixes { .. })
        );
        // The field a form shows the error beside.
        expect_that!(refused.field(), eq("/subsets/0/tables/orders/path"));
        expect_that!(Invalid::ReservedName("api".into()).field(), eq("/name"));
    }

    #[gtest]
    fn deadlines_out_of_range_are_refused() {
        let mut json = sales();
        json["deadlineSeconds"] = 10.into();
        expect_that!(
            normalize(request(json), &config()),
            err(matches_pattern!(Invalid::OutOfRange {
                field: eq(&"deadlineSeconds"),
                ..
            }))
        );
    }

    #[gtest]
    fn a_service_round_trips_to_the_same_spec() {
        let spec = normalize(request(sales()), &config()).expect("valid");
        let service = to_service(&spec, &config());
        expect_that!(service.metadata.name.as_deref(), some(eq("view-sales")));
        expect_that!(from_service(&service).expect("readable"), eq(&spec));
    }

    #[gtest]
    fn a_hand_edited_service_is_unreadable_not_a_panic() {
        let spec = normalize(request(sales()), &config()).expect("valid");
        let mut service = to_service(&spec, &config());
        service
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(SPEC_ANNOTATION.into(), "{not json".into());
        expect_that!(
            from_service(&service),
            err(matches_pattern!(Unreadable::BadSpec(_)))
        );
    }
}
