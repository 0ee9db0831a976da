//! Data entitlements: which users and groups may read (or write) which
//! buckets and key prefixes of the lake. This module owns the document's
//! format, its validation, and every entitlement decision (create, share,
//! start, `/_api/me`); the index keeps the current [`Entitlements`] in each
//! snapshot, and the entitlements metrics come from here.
//!
//! # Where they live
//!
//! The operator writes them in a ConfigMap in the views' namespace (name from
//! `ENTITLEMENTS_CONFIGMAP`, default `views-gateway-entitlements`), under the
//! key `entitlements.yaml`. Every replica watches it like the views, so a
//! change takes effect on every replica within a watch round trip, with no
//! restart:
//!
//! ```yaml
//! grants:
//! - groups: [analysts]        # and/or users: [ana]
//!   bucket: lake
//!   prefixes: [sales/]        # "" = the whole bucket
//!   access: read              # read (the default) | write (write includes read)
//! - users: [bob]
//!   groups: [finance]
//!   bucket: lake
//!   prefixes: [tpch/, sales-private/]
//! ```
//!
//! # Validation: fail closed
//!
//! A grant names at least one user or group (user ids as the identity
//! provider names them, group names as in its groups claim), a bucket (an S3
//! bucket name, the same rule as a view's subset), at least one prefix, and
//! an access of `read` or `write`; unknown fields are refused. A prefix is
//! either `""` (the whole bucket) or a key prefix by the subset's rule, which
//! means it **ends with `/`**: a grant of `sales` would also cover
//! `sales-private/`, so it is refused rather than silently read either way.
//!
//! A document with any problem grants **nothing** (every replica must decide
//! the same whatever it happened to see first, and a typo must never widen
//! access). Its problems are logged, exported as
//! `views_gateway_entitlements_valid 0`, and named in the 403 of every
//! refused create or share ([`Refused`]). A missing ConfigMap also grants
//! nothing (logged as a warning).
//!
//! # Decisions
//!
//! - **Containment** is on S3 key semantics: a subset's prefix is entitled
//!   when it starts with a granted prefix of the same bucket (`sales/` covers
//!   `sales/region=eu/`; `""` covers the bucket). Prefixes granted separately
//!   do not add up to a wider one: `sales/a/` and `sales/b/` do not cover
//!   `sales/`. A subset's tables lie within its prefixes (the API checks
//!   that), so checking the prefixes covers them.
//! - **Access**: a subset with `write: true` needs a `write` grant; any other
//!   subset needs `read` or `write`.
//! - **Whose grants**: a signed-in user has the grants naming them and those
//!   naming any group their token lists ([`Entitlements::check`]). Sharing a
//!   view needs the target itself to be entitled
//!   ([`Entitlements::check_target`]): a share with a group needs grants
//!   naming that group, a share with a user needs grants naming that user.
//!   The gateway cannot know a user's groups until they sign in, so a user
//!   entitled only through a group is shared with through that group.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use views_types::{
    Access, BucketName, Grant, GrantPrefixesItem, GroupName, KeyPrefix, Owner, Subset,
};

use crate::identity::Identity;
use crate::index::Index;

/// The ConfigMap key holding the document.
pub const DOCUMENT_KEY: &str = "entitlements.yaml";

/// Who an entitlement decision is about: a user by id, or a group by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Principal {
    User(String),
    Group(String),
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::User(user) => write!(f, "user {user:?}"),
            Principal::Group(group) => write!(f, "group {group:?}"),
        }
    }
}

/// Why the entitlements document grants nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("the ConfigMap has no `{DOCUMENT_KEY}` key")]
    NoDocument,
    #[error("{DOCUMENT_KEY} is not a valid document: {0}")]
    Syntax(String),
    #[error("{DOCUMENT_KEY} has invalid grants: {}", .0.join("; "))]
    Grants(Vec<String>),
}

/// Where the current entitlements come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Status {
    /// No ConfigMap (or not seen yet): nothing is granted.
    #[default]
    Absent,
    Valid,
    /// The document has problems: nothing is granted until they are fixed.
    Invalid(Invalid),
}

/// A subset (or one of its prefixes) a principal is not entitled to: the
/// first one found. Its JSON form ([`Refused::details`]) is the API error's
/// `details`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(rename_all = "camelCase")]
#[error("{who} may not {access} {bucket}/{prefix}{}", .entitlements.as_ref().map(|e| format!(" ({e})")).unwrap_or_default())]
pub struct Refused {
    /// The subset's index in the request (none for the lake browser's checks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subset: Option<u32>,
    pub bucket: String,
    pub prefix: String,
    /// The access missing: `write` for a subset with `write: true`.
    pub access: Access,
    #[serde(flatten)]
    pub who: Principal,
    /// Why nothing at all is granted, when that is why: the entitlements are
    /// absent or invalid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entitlements: Option<String>,
}

impl Refused {
    /// The API error's `details`: `{"subset", "bucket", "prefix", "access",
    /// "user" | "group", "entitlements"?}`.
    pub fn details(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// One checked grant of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    users: BTreeSet<String>,
    groups: BTreeSet<String>,
    bucket: BucketName,
    /// `""` or key prefixes ending with `/`.
    prefixes: Vec<GrantPrefixesItem>,
    access: Access,
}

impl Rule {
    /// Whether this rule lets `access` reach every key under `prefix`.
    fn covers(&self, bucket: &str, prefix: &str, access: Access) -> bool {
        self.access >= access
            && *self.bucket == bucket
            && self
                .prefixes
                .iter()
                .any(|granted| prefix.starts_with(granted.as_str()))
    }
}

/// The document as written, before its values are checked: the structure
/// and field names are refused by serde, the values are checked all at once
/// so that every problem is reported.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    grants: Vec<DocumentGrant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentGrant {
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    bucket: String,
    prefixes: Vec<String>,
    #[serde(default = "least_access")]
    access: Access,
}

/// A grant that does not say allows reading only.
fn least_access() -> Access {
    Access::Read
}

impl DocumentGrant {
    /// This grant checked, or what is wrong with it (each problem prefixed
    /// with `grants[<index>]`).
    fn check(self, index: usize) -> Result<Rule, Vec<String>> {
        let at = |field: &str, value: &str, problem: &dyn std::fmt::Display| {
            format!("grants[{index}].{field} {value:?}: {problem}")
        };
        let mut problems = Vec::new();
        if self.users.is_empty() && self.groups.is_empty() {
            problems.push(format!("grants[{index}]: names no users and no groups"));
        }
        const NAME: &str = "not 1 to 253 printable characters without surrounding space";
        for user in &self.users {
            if Owner::from_str(user).is_err() {
                problems.push(at("users", user, &NAME));
            }
        }
        for group in &self.groups {
            if GroupName::from_str(group).is_err() {
                problems.push(at("groups", group, &NAME));
            }
        }
        let bucket = BucketName::from_str(&self.bucket)
            .map_err(|_| problems.push(at("bucket", &self.bucket, &"not an S3 bucket name")))
            .ok();
        if self.prefixes.is_empty() {
            problems.push(format!(
                "grants[{index}].prefixes: none (\"\" is the whole bucket)"
            ));
        }
        let mut prefixes = Vec::new();
        for prefix in &self.prefixes {
            let checked = if prefix.is_empty() {
                Ok(())
            } else {
                KeyPrefix::from_str(prefix).map(drop)
            };
            match checked.and_then(|()| GrantPrefixesItem::from_str(prefix)) {
                Ok(prefix) => prefixes.push(prefix),
                Err(_) => problems.push(at(
                    "prefixes",
                    prefix,
                    &"neither \"\" (the whole bucket) nor a key prefix: \"/\"-terminated \
                      segments, none empty, \".\" or \"..\", no leading \"/\", no glob characters",
                )),
            }
        }
        match bucket {
            Some(bucket) if problems.is_empty() => Ok(Rule {
                users: self.users.into_iter().collect(),
                groups: self.groups.into_iter().collect(),
                bucket,
                prefixes,
                access: self.access,
            }),
            _ => Err(problems),
        }
    }
}

/// The operator's entitlements as one replica currently has them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entitlements {
    rules: Vec<Rule>,
    status: Status,
}

impl Entitlements {
    /// Read an `entitlements.yaml` document.
    pub fn parse(yaml: &str) -> Result<Entitlements, Invalid> {
        // One line per problem, for the 403 message and the log: no snippet.
        let options = serde_saphyr::options! { with_snippet: false };
        let document: Document = serde_saphyr::from_str_with_options(yaml, options)
            .map_err(|error| Invalid::Syntax(error.to_string()))?;
        let mut rules = Vec::new();
        let mut problems = Vec::new();
        for (index, grant) in document.grants.into_iter().enumerate() {
            match grant.check(index) {
                Ok(rule) => rules.push(rule),
                Err(found) => problems.extend(found),
            }
        }
        if !problems.is_empty() {
            return Err(Invalid::Grants(problems));
        }
        Ok(Entitlements {
            rules,
            status: Status::Valid,
        })
    }

    /// The entitlements a ConfigMap holds (`None`: there is none). Never
    /// fails: an invalid document gives entitlements that grant nothing and
    /// say why.
    pub fn from_config_map(config_map: Option<&ConfigMap>) -> Entitlements {
        let Some(config_map) = config_map else {
            return Entitlements::default();
        };
        let document = config_map
            .data
            .as_ref()
            .and_then(|data| data.get(DOCUMENT_KEY))
            .ok_or(Invalid::NoDocument);
        document
            .and_then(|yaml| Entitlements::parse(yaml))
            .unwrap_or_else(|invalid| Entitlements {
                rules: Vec::new(),
                status: Status::Invalid(invalid),
            })
    }

    pub fn status(&self) -> &Status {
        &self.status
    }

    /// The document's problems, when it has any (then nothing is granted).
    pub fn invalid(&self) -> Option<&Invalid> {
        match &self.status {
            Status::Invalid(invalid) => Some(invalid),
            _ => None,
        }
    }

    /// How many grants are in force.
    pub fn grants(&self) -> usize {
        self.rules.len()
    }

    /// Whether `who` (by their user id or any of their groups) may access
    /// every prefix of every subset as the subset asks (`write: true` needs
    /// write access).
    pub fn check(&self, who: &Identity, subsets: &[Subset]) -> Result<(), Refused> {
        self.check_rules(
            |rule| applies_to(rule, who),
            Principal::User(who.user.clone()),
            subsets,
        )
    }

    /// Whether a view over `subsets` may be shared with `target`: by grants
    /// that name the target itself (a user's groups are unknown until they
    /// sign in).
    pub fn check_target(&self, target: &Principal, subsets: &[Subset]) -> Result<(), Refused> {
        self.check_rules(
            |rule| match target {
                Principal::User(user) => rule.users.contains(user),
                Principal::Group(group) => rule.groups.contains(group),
            },
            target.clone(),
            subsets,
        )
    }

    fn check_rules(
        &self,
        applies: impl Fn(&Rule) -> bool,
        who: Principal,
        subsets: &[Subset],
    ) -> Result<(), Refused> {
        let rules: Vec<&Rule> = self.rules.iter().filter(|rule| applies(rule)).collect();
        for (index, subset) in subsets.iter().enumerate() {
            let access = if subset.write {
                Access::Write
            } else {
                Access::Read
            };
            let refused = subset.prefixes.iter().find(|prefix| {
                !rules
                    .iter()
                    .any(|rule| rule.covers(&subset.bucket, prefix, access))
            });
            if let Some(prefix) = refused {
                return Err(Refused {
                    subset: u32::try_from(index).ok(),
                    bucket: subset.bucket.to_string(),
                    prefix: prefix.to_string(),
                    access,
                    who,
                    entitlements: self.why_nothing_is_granted(),
                });
            }
        }
        Ok(())
    }

    /// Whether `who` may read every key under `prefix` of `bucket` (`""`:
    /// the whole bucket): the lake browser's check, on the same containment
    /// rule as a subset's. A refusal names no subset.
    pub fn check_read(&self, who: &Identity, bucket: &str, prefix: &str) -> Result<(), Refused> {
        let granted = self
            .rules
            .iter()
            .any(|rule| applies_to(rule, who) && rule.covers(bucket, prefix, Access::Read));
        if granted {
            return Ok(());
        }
        Err(Refused {
            subset: None,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            access: Access::Read,
            who: Principal::User(who.user.clone()),
            entitlements: self.why_nothing_is_granted(),
        })
    }

    fn why_nothing_is_granted(&self) -> Option<String> {
        match &self.status {
            Status::Valid => None,
            Status::Absent => Some("no entitlements are configured".into()),
            Status::Invalid(invalid) => Some(format!("the entitlements are invalid: {invalid}")),
        }
    }

    /// What `who` may access, merged from every grant to them or their
    /// groups: per bucket, the write prefixes and the read prefixes not
    /// already within a write prefix, none within another of its list.
    pub fn readable(&self, who: &Identity) -> Vec<Grant> {
        // Per bucket: the prefixes granted for reading, and for writing.
        let mut by_bucket: BTreeMap<
            &BucketName,
            (BTreeSet<&GrantPrefixesItem>, BTreeSet<&GrantPrefixesItem>),
        > = BTreeMap::new();
        for rule in self.rules.iter().filter(|rule| applies_to(rule, who)) {
            let (read, write) = by_bucket.entry(&rule.bucket).or_default();
            let prefixes = match rule.access {
                Access::Read => read,
                Access::Write => write,
            };
            prefixes.extend(&rule.prefixes);
        }
        let mut grants = Vec::new();
        for (bucket, (read, write)) in by_bucket {
            let write = outermost(&write, &[]);
            let read = outermost(&read, &write);
            for (access, prefixes) in [(Access::Read, read), (Access::Write, write)] {
                if !prefixes.is_empty() {
                    grants.push(Grant {
                        bucket: bucket.clone(),
                        prefixes: prefixes.into_iter().cloned().collect(),
                        access,
                    });
                }
            }
        }
        grants
    }
}

/// Whether a grant is to this user or one of their groups.
fn applies_to(rule: &Rule, who: &Identity) -> bool {
    rule.users.contains(&who.user) || !rule.groups.is_disjoint(&who.groups)
}

/// The prefixes of `prefixes` within no other of them nor of `wider`, in
/// order.
fn outermost<'a>(
    prefixes: &BTreeSet<&'a GrantPrefixesItem>,
    wider: &[&GrantPrefixesItem],
) -> Vec<&'a GrantPrefixesItem> {
    let within = |prefix: &str, other: &GrantPrefixesItem| prefix.starts_with(other.as_str());
    prefixes
        .iter()
        .copied()
        .filter(|prefix| {
            !prefixes
                .iter()
                .any(|other| other != prefix && within(prefix, other))
                && !wider.iter().any(|other| within(prefix, other))
        })
        .collect()
}

/// Register the entitlements metrics, read from the index's current
/// snapshot at each scrape: `views_gateway_entitlements_valid` (0 while the
/// document is invalid) and `views_gateway_entitlements_grants`.
pub fn register_metrics(registry: &mut Registry, index: Index) {
    registry
        .sub_registry_with_prefix("entitlements")
        .register_collector(Box::new(EntitlementsCollector(index)));
}

#[derive(Clone)]
struct EntitlementsCollector(Index);

impl std::fmt::Debug for EntitlementsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EntitlementsCollector")
    }
}

impl Collector for EntitlementsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let entitlements: Arc<Entitlements> = self.0.snapshot().entitlements.clone();
        for (name, help, value) in [
            (
                "valid",
                "Whether the entitlements document is valid (0: it grants nothing until fixed)",
                i64::from(entitlements.invalid().is_none()),
            ),
            (
                "grants",
                "Entitlement grants in force",
                i64::try_from(entitlements.grants()).unwrap_or(i64::MAX),
            ),
        ] {
            let gauge = ConstGauge::new(value);
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use googletest::prelude::*;
    use serde_json::json;

    use super::*;

    const DEMO: &str = r#"
grants:
- groups: [analysts]
  bucket: lake
  prefixes: [sales/]
- users: [bob]
  groups: [finance]
  bucket: lake
  prefixes: [tpch/, sales-private/]
  access: read
- groups: [finance]
  bucket: scratch
  prefixes: [finance/]
  access: write
- users: [admin]
  bucket: lake
  prefixes: [""]
"#;

    fn demo() -> Entitlements {
        Entitlements::parse(DEMO).expect("the demo document is valid")
    }

    fn subsets(value: serde_json::Value) -> Vec<Subset> {
        serde_json::from_value(value).expect("valid subsets")
    }

    fn read(bucket: &str, prefixes: &[&str]) -> Vec<Subset> {
        subsets(json!([{"bucket": bucket, "prefixes": prefixes}]))
    }

    fn ana() -> Identity {
        Identity::new("ana", ["analysts"])
    }

    fn problems(yaml: &str) -> Vec<String> {
        match Entitlements::parse(yaml) {
            Err(Invalid::Grants(problems)) => problems,
            other => panic!("expected invalid grants, got {other:?}"),
        }
    }

    #[gtest]
    fn a_group_member_may_read_within_the_group_s_prefix_and_nothing_beside_it() {
        let entitlements = demo();
        expect_that!(
            entitlements.check(&ana(), &read("lake", &["sales/"])),
            ok(anything())
        );
        expect_that!(
            entitlements.check(&ana(), &read("lake", &["sales/region=eu/2025/"])),
            ok(anything())
        );
        // `sales/` does not cover its sibling `sales-private/`.
        expect_that!(
            entitlements.check(&ana(), &read("lake", &["sales-private/"])),
            err(eq(&Refused {
                subset: Some(0),
                bucket: "lake".into(),
                prefix: "sales-private/".into(),
                access: Access::Read,
                who: Principal::User("ana".into()),
                entitlements: None,
            }))
        );
        // Same prefix, other bucket.
        expect_that!(
            entitlements.check(&ana(), &read("scratch", &["sales/"])),
            err(field!(Refused.bucket, eq("scratch")))
        );
        // Without the group, nothing.
        expect_that!(
            entitlements.check(&Identity::new("ana", ["other"]), &read("lake", &["sales/"])),
            err(anything())
        );
    }

    #[gtest]
    fn the_lake_browser_reads_within_a_grant_only() {
        let entitlements = demo();
        expect_that!(
            entitlements.check_read(&ana(), "lake", "sales/"),
            ok(anything())
        );
        expect_that!(
            entitlements.check_read(&ana(), "lake", "sales/region=eu/"),
            ok(anything())
        );
        for (bucket, prefix) in [
            ("lake", "sales-private/"),
            ("lake", ""),
            ("lake", "tpch/"),
            ("scratch", "sales/"),
        ] {
            expect_that!(
                entitlements.check_read(&ana(), bucket, prefix),
                err(anything()),
                "{bucket}/{prefix}"
            );
        }
        let refused = entitlements
            .check_read(&ana(), "lake", "tpch/")
            .expect_err("refused");
        expect_that!(
            refused.details(),
            eq(&json!({"bucket": "lake", "prefix": "tpch/", "access": "read", "user": "ana"}))
        );
    }

    #[gtest]
    fn the_refusal_names_the_first_subset_and_prefix_not_entitled() {
        let bob = Identity::new("bob", Vec::<String>::new());
        let refused = demo()
            .check(
                &bob,
                &subsets(json!([
                    {"bucket": "lake", "prefixes": ["tpch/", "sales-private/q1/"]},
                    {"bucket": "lake", "prefixes": ["tpch/orders/", "sales/"]},
                    {"bucket": "lake", "prefixes": ["hr/"]},
                ])),
            )
            .expect_err("sales/ is not bob's");
        expect_that!(
            refused.details(),
            eq(&json!({
                "subset": 1, "bucket": "lake", "prefix": "sales/", "access": "read", "user": "bob",
            }))
        );
        expect_that!(
            refused.to_string(),
            eq("user \"bob\" may not read lake/sales/")
        );
    }

    #[gtest]
    fn writing_needs_a_write_grant_and_a_write_grant_allows_reading() {
        let finance = Identity::new("fay", ["finance"]);
        let entitlements = demo();
        let scratch = |write: bool| {
            subsets(json!([{"bucket": "scratch", "prefixes": ["finance/q1/"], "write": write}]))
        };
        expect_that!(entitlements.check(&finance, &scratch(true)), ok(anything()));
        expect_that!(
            entitlements.check(&finance, &scratch(false)),
            ok(anything())
        );
        let write_tpch = subsets(json!([{"bucket": "lake", "prefixes": ["tpch/"], "write": true}]));
        expect_that!(
            entitlements.check(&finance, &write_tpch),
            err(all!(
                field!(Refused.access, eq(&Access::Write)),
                displays_as(eq("user \"fay\" may not write lake/tpch/"))
            ))
        );
    }

    #[gtest]
    fn the_empty_prefix_grants_the_whole_bucket() {
        let admin = Identity::new("admin", Vec::<String>::new());
        expect_that!(
            demo().check(
                &admin,
                &read("lake", &["anything/at/all/", "sales-private/"])
            ),
            ok(anything())
        );
        expect_that!(
            demo().check(&admin, &read("scratch", &["x/"])),
            err(anything())
        );
    }

    #[gtest]
    fn a_share_needs_grants_naming_the_target_itself() {
        let entitlements = demo();
        let private = read("lake", &["sales-private/"]);
        // bob is named, and so is his group.
        expect_that!(
            entitlements.check_target(&Principal::User("bob".into()), &private),
            ok(anything())
        );
        expect_that!(
            entitlements.check_target(&Principal::Group("finance".into()), &private),
            ok(anything())
        );
        // ana is entitled to sales/ only through her group: sharing with her
        // by name is refused (her groups are unknown until she signs in),
        // sharing with the group is not.
        let sales = read("lake", &["sales/"]);
        expect_that!(
            entitlements.check_target(&Principal::User("ana".into()), &sales),
            err(field!(Refused.who, eq(&Principal::User("ana".into()))))
        );
        expect_that!(
            entitlements.check_target(&Principal::Group("analysts".into()), &sales),
            ok(anything())
        );
        let refused = entitlements
            .check_target(&Principal::Group("analysts".into()), &private)
            .expect_err("not the analysts'");
        expect_that!(refused.details()["group"], eq(&json!("analysts")));
        expect_that!(
            refused.to_string(),
            eq("group \"analysts\" may not read lake/sales-private/")
        );
    }

    #[gtest]
    fn readable_merges_a_user_s_grants_and_drops_what_a_wider_grant_covers() {
        let entitlements = Entitlements::parse(
            r#"
grants:
- users: [ana]
  bucket: lake
  prefixes: [sales/2025/, tpch/]
- groups: [analysts]
  bucket: lake
  prefixes: [sales/, sales/]
- groups: [writers]
  bucket: lake
  prefixes: [tpch/]
  access: write
- groups: [writers]
  bucket: scratch
  prefixes: [ana/]
  access: write
- groups: [someone-else]
  bucket: lake
  prefixes: [""]
"#,
        )
        .expect("valid");
        let grants = entitlements.readable(&Identity::new("ana", ["analysts", "writers"]));
        expect_that!(
            serde_json::to_value(&grants).expect("serializable"),
            eq(&json!([
                {"bucket": "lake", "prefixes": ["sales/"], "access": "read"},
                {"bucket": "lake", "prefixes": ["tpch/"], "access": "write"},
                {"bucket": "scratch", "prefixes": ["ana/"], "access": "write"},
            ]))
        );
        expect_that!(
            entitlements.readable(&Identity::new("nobody", Vec::<String>::new())),
            is_empty()
        );
    }

    #[gtest]
    fn every_problem_of_every_grant_is_reported() {
        let found = problems(
            r#"
grants:
- bucket: Lake
  prefixes: [sales]
- users: [" ana"]
  groups: [""]
  bucket: lake
  prefixes: []
- groups: [ok]
  bucket: lake
  prefixes: [/sales/, "sales/../hr/", "sales/*/", sales/]
"#,
        );
        expect_that!(
            found,
            elements_are![
                eq("grants[0]: names no users and no groups"),
                eq("grants[0].bucket \"Lake\": not an S3 bucket name"),
                starts_with(
                    "grants[0].prefixes \"sales\": neither \"\" (the whole bucket) nor a key prefix"
                ),
                eq(
                    "grants[1].users \" ana\": not 1 to 253 printable characters without surrounding space"
                ),
                starts_with("grants[1].groups \"\": "),
                eq("grants[1].prefixes: none (\"\" is the whole bucket)"),
                starts_with("grants[2].prefixes \"/sales/\": "),
                starts_with("grants[2].prefixes \"sales/../hr/\": "),
                starts_with("grants[2].prefixes \"sales/*/\": "),
            ]
        );
    }

    #[gtest]
    fn unknown_fields_and_access_values_and_broken_yaml_are_refused() {
        for (yaml, says) in [
            (
                "grants:\n- users: [ana]\n  bucket: lake\n  prefixes: [a/]\n  acess: write\n",
                "acess",
            ),
            (
                "grants:\n- users: [ana]\n  bucket: lake\n  prefixes: [a/]\n  access: all\n",
                "all",
            ),
            ("grant: []\n", "grant"),
            ("grants:\n- users: [ana\n", ""),
        ] {
            expect_that!(
                Entitlements::parse(yaml),
                err(all!(
                    matches_pattern!(Invalid::Syntax(_)),
                    displays_as(contains_substring(says))
                )),
                "{yaml}"
            );
        }
        expect_that!(
            Entitlements::parse("grants: []\n"),
            ok(field!(Entitlements.status, eq(&Status::Valid)))
        );
    }

    fn config_map(data: Option<&str>) -> ConfigMap {
        ConfigMap {
            data: data.map(|yaml| [(DOCUMENT_KEY.to_string(), yaml.to_string())].into()),
            ..ConfigMap::default()
        }
    }

    #[gtest]
    fn an_invalid_or_absent_document_grants_nothing_and_says_why() {
        let admin = Identity::new("admin", Vec::<String>::new());
        let lake = read("lake", &["sales/"]);
        expect_that!(
            Entitlements::from_config_map(Some(&config_map(Some(DEMO)))).check(&admin, &lake),
            ok(anything())
        );

        // One bad grant fails the whole document, not just that grant.
        let broken = format!("{DEMO}- users: [ana]\n  bucket: Lake\n  prefixes: [x/]\n");
        let invalid = Entitlements::from_config_map(Some(&config_map(Some(&broken))));
        expect_that!(
            invalid.invalid(),
            some(matches_pattern!(Invalid::Grants(_)))
        );
        expect_that!(invalid.grants(), eq(0));
        let refused = invalid
            .check(&admin, &lake)
            .expect_err("nothing is granted");
        expect_that!(
            refused.to_string(),
            starts_with(
                "user \"admin\" may not read lake/sales/ (the entitlements are invalid: \
                 entitlements.yaml has invalid grants: grants[4].bucket \"Lake\""
            )
        );
        expect_that!(
            refused.details()["entitlements"].as_str(),
            some(starts_with("the entitlements are invalid: "))
        );

        let no_key = Entitlements::from_config_map(Some(&config_map(None)));
        expect_that!(no_key.invalid(), some(eq(&Invalid::NoDocument)));

        let absent = Entitlements::from_config_map(None);
        expect_that!(absent.status(), eq(&Status::Absent));
        expect_that!(absent.invalid(), none());
        expect_that!(
            absent.check(&admin, &lake),
            err(field!(
                Refused.entitlements,
                some(eq("no entitlements are configured"))
            ))
        );
    }

    #[gtest]
    fn the_example_config_map_is_valid_and_grants_the_local_demo_s_users() {
        let example: ConfigMap =
            serde_saphyr::from_str(include_str!("../../gateway/entitlements.example.yaml"))
                .expect("a ConfigMap");
        expect_that!(
            example.metadata.name.as_deref(),
            some(eq("views-gateway-entitlements"))
        );
        let entitlements = Entitlements::from_config_map(Some(&example));
        expect_that!(entitlements.status(), eq(&Status::Valid));
        let bob = Identity::new("bob", ["finance"]);
        expect_that!(
            entitlements.check(&ana(), &read("lake", &["sales/"])),
            ok(anything())
        );
        expect_that!(
            entitlements.check(&ana(), &read("lake", &["sales-private/"])),
            err(anything())
        );
        expect_that!(
            entitlements.check(&bob, &read("lake", &["tpch/", "sales-private/"])),
            ok(anything())
        );
        expect_that!(
            entitlements.check(&bob, &read("lake", &["sales/"])),
            err(anything())
        );
    }

    #[gtest]
    fn the_metrics_follow_the_index_s_current_entitlements() {
        let (tx, index) = crate::index::channel();
        let mut registry = Registry::with_prefix("views_gateway");
        register_metrics(&mut registry, index);
        let scrape = |registry: &Registry| {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, registry).expect("encodes");
            text
        };
        let publish = |entitlements: Entitlements| {
            tx.send_replace(Arc::new(crate::index::Snapshot {
                entitlements: Arc::new(entitlements),
                ..Default::default()
            }));
        };

        publish(demo());
        let valid = scrape(&registry);
        expect_that!(
            valid,
            contains_substring("\nviews_gateway_entitlements_valid 1\n")
        );
        expect_that!(
            valid,
            contains_substring("\nviews_gateway_entitlements_grants 4\n")
        );

        publish(Entitlements::from_config_map(Some(&config_map(None))));
        let invalid = scrape(&registry);
        expect_that!(
            invalid,
            contains_substring("\nviews_gateway_entitlements_valid 0\n")
        );
        expect_that!(
            invalid,
            contains_substring("\nviews_gateway_entitlements_grants 0\n")
        );
    }
}
