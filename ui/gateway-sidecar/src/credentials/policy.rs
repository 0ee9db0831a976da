//! The access policy, as pure functions of a view's subsets and a request's
//! bucket, key or list prefix. The endpoint calls these; the tests below
//! cover the tricks (sibling prefixes, dot segments, encoded separators).
//!
//! - A key is in a subset when it starts with one of its prefixes. Prefixes
//!   end with '/' (the `KeyPrefix` schema), so `data/` never admits
//!   `data-private/…`; a prefix without one is treated as if it had it.
//! - Keys (and list prefixes) are refused, not normalised, when they could
//!   name something else to another component: empty, `.` or `..` segments,
//!   a leading '/', '\', control characters, percent-encoded separators or
//!   dots left after decoding (`%2F`, `%5C`, `%2E`, `%25`, `%00`), and the
//!   Unicode look-alikes of '/', '\' and '.' that normalise to them.
//! - A list must stay within one prefix: its `prefix` must start with an
//!   allowed prefix. Listing the bucket root or a parent of the allowed
//!   prefixes is refused (403) rather than filtered: a filtered parent
//!   listing would page through everything outside the subset, and the
//!   refusal message names the prefixes the view may list.

use views_types::Subset;

/// Why a request was refused by the policy. The message is the S3 error
/// message the client sees.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("anonymous requests are refused: sign with the view's credentials")]
    Anonymous,
    #[error("signature version 2 is refused: sign with SigV4")]
    SignatureV2,
    #[error("{0} is not available with view credentials")]
    Operation(String),
    #[error("bucket {0:?} is not in the view's subsets")]
    Bucket(String),
    #[error("key {key:?} is refused: {reason}")]
    UnsafeKey { key: String, reason: &'static str },
    #[error("{bucket}/{key} is outside the view's subsets")]
    OutsideSubsets { bucket: String, key: String },
    #[error("{bucket}/{key} is read-only for this view")]
    ReadOnly { bucket: String, key: String },
    #[error(
        "listing {bucket}/{prefix} is outside the view's prefixes; list within one of: {allowed}"
    )]
    ListOutside {
        bucket: String,
        prefix: String,
        allowed: String,
    },
    #[error("copy source {0:?} is outside the view's subsets")]
    CopySource(String),
}

impl Denial {
    /// A short machine-readable reason for the audit log.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Anonymous => "anonymous",
            Self::SignatureV2 => "signature-v2",
            Self::Operation(_) => "operation-not-allowed",
            Self::Bucket(_) => "bucket-outside-subsets",
            Self::UnsafeKey { .. } => "unsafe-key",
            Self::OutsideSubsets { .. } => "key-outside-subsets",
            Self::ReadOnly { .. } => "read-only",
            Self::ListOutside { .. } => "list-outside-prefixes",
            Self::CopySource(_) => "copy-source-outside-subsets",
        }
    }
}

/// Read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

/// Refuse keys that could mean something else to another component.
pub(crate) fn check_key(key: &str) -> Result<(), Denial> {
    let unsafe_key = |reason| {
        Err(Denial::UnsafeKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() {
        return unsafe_key("empty key");
    }
    if key.len() > 1024 {
        return unsafe_key("longer than 1024 bytes");
    }
    check_segments(key, unsafe_key)
}

/// A list prefix: like a key, but it may be empty (the whole bucket; refused
/// later unless within a prefix) and its last segment may be partial.
pub(crate) fn check_list_prefix(prefix: &str) -> Result<(), Denial> {
    if prefix.is_empty() {
        return Ok(());
    }
    check_key(prefix)
}

fn check_segments(
    key: &str,
    unsafe_key: impl Fn(&'static str) -> Result<(), Denial>,
) -> Result<(), Denial> {
    if key.starts_with('/') {
        return unsafe_key("leading '/'");
    }
    if key
        .chars()
        .any(|c| c.is_control() || c == '\\' || LOOK_ALIKES.contains(&c))
    {
        return unsafe_key("control character, '\\' or a look-alike of '/', '\\' or '.'");
    }
    let lower = key.to_ascii_lowercase();
    if ["%2f", "%5c", "%2e", "%25", "%00"]
        .iter()
        .any(|encoded| lower.contains(encoded))
    {
        return unsafe_key("percent-encoded separator, dot or '%' (double encoding)");
    }
    // Every segment but a trailing empty one (a "directory" key) must be a
    // real name.
    let body = key.strip_suffix('/').unwrap_or(key);
    for segment in body.split('/') {
        match segment {
            "" => return unsafe_key("empty segment ('//')"),
            "." | ".." => return unsafe_key("'.' or '..' segment"),
            _ => {}
        }
    }
    Ok(())
}

/// Characters that Unicode normalisation (NFKC) or lenient file systems turn
/// into '/', '\' or '.'.
const LOOK_ALIKES: &[char] = &[
    '\u{2215}', // DIVISION SLASH
    '\u{2044}', // FRACTION SLASH
    '\u{29F8}', // BIG SOLIDUS
    '\u{FF0F}', // FULLWIDTH SOLIDUS
    '\u{FE68}', // SMALL REVERSE SOLIDUS
    '\u{FF3C}', // FULLWIDTH REVERSE SOLIDUS
    '\u{2024}', // ONE DOT LEADER
    '\u{2025}', // TWO DOT LEADER
    '\u{FE52}', // SMALL FULL STOP
    '\u{FF0E}', // FULLWIDTH FULL STOP
];

/// The prefix with its '/' boundary.
fn bounded(prefix: &str) -> std::borrow::Cow<'_, str> {
    if prefix.ends_with('/') {
        prefix.into()
    } else {
        format!("{prefix}/").into()
    }
}

/// Whether `key` in `bucket` lies in one of the subsets (for `access`).
pub(crate) fn in_subsets(subsets: &[Subset], bucket: &str, key: &str, access: Access) -> bool {
    subsets
        .iter()
        .filter(|s| s.bucket.as_str() == bucket && (access == Access::Read || s.write))
        .flat_map(|s| s.prefixes.iter())
        .any(|p| key.starts_with(bounded(p).as_ref()))
}

/// An object operation on `bucket`/`key`.
pub(crate) fn authorize_object(
    subsets: &[Subset],
    bucket: &str,
    key: &str,
    access: Access,
) -> Result<(), Denial> {
    check_key(key)?;
    if in_subsets(subsets, bucket, key, access) {
        return Ok(());
    }
    if access == Access::Write && in_subsets(subsets, bucket, key, Access::Read) {
        return Err(Denial::ReadOnly {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        });
    }
    if !subsets.iter().any(|s| s.bucket.as_str() == bucket) {
        return Err(Denial::Bucket(bucket.to_owned()));
    }
    Err(Denial::OutsideSubsets {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
    })
}

/// A listing of `bucket` under `prefix` (empty: the whole bucket).
pub(crate) fn authorize_list(subsets: &[Subset], bucket: &str, prefix: &str) -> Result<(), Denial> {
    check_list_prefix(prefix)?;
    authorize_bucket(subsets, bucket)?;
    if !prefix.is_empty() && in_subsets(subsets, bucket, prefix, Access::Read) {
        return Ok(());
    }
    let allowed = subsets
        .iter()
        .filter(|s| s.bucket.as_str() == bucket)
        .flat_map(|s| s.prefixes.iter())
        .map(|p| bounded(p).into_owned())
        .collect::<Vec<_>>()
        .join(", ");
    Err(Denial::ListOutside {
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
        allowed,
    })
}

/// A bucket-level operation (HeadBucket, GetBucketLocation, a listing).
pub(crate) fn authorize_bucket(subsets: &[Subset], bucket: &str) -> Result<(), Denial> {
    if subsets.iter().any(|s| s.bucket.as_str() == bucket) {
        Ok(())
    } else {
        Err(Denial::Bucket(bucket.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use googletest::prelude::*;

    use super::*;

    fn subsets() -> Vec<Subset> {
        serde_json::from_value(serde_json::json!([
            { "bucket": "lake", "prefixes": ["data/", "sales/region=eu/"] },
            { "bucket": "scratch", "prefixes": ["teams/a/"], "write": true },
        ]))
        .unwrap()
    }

    fn read(bucket: &str, key: &str) -> Result<(), Denial> {
        authorize_object(&subsets(), bucket, key, Access::Read)
    }

    fn write(bucket: &str, key: &str) -> Result<(), Denial> {
        authorize_object(&subsets(), bucket, key, Access::Write)
    }

    fn list(bucket: &str, prefix: &str) -> Result<(), Denial> {
        authorize_list(&subsets(), bucket, prefix)
    }

    #[gtest]
    fn keys_under_a_prefix_are_readable() {
        expect_that!(read("lake", "data/x.parquet"), ok(anything()));
        expect_that!(read("lake", "data/deep/er/x.parquet"), ok(anything()));
        expect_that!(
            read("lake", "sales/region=eu/part-0.parquet"),
            ok(anything())
        );
        expect_that!(read("lake", "data/"), ok(anything()));
    }

    #[gtest]
    fn prefixes_end_on_a_slash_boundary() {
        expect_that!(
            read("lake", "data-private/x.parquet"),
            err(pat!(Denial::OutsideSubsets { .. }))
        );
        expect_that!(
            read("lake", "data"),
            err(pat!(Denial::OutsideSubsets { .. }))
        );
        expect_that!(
            read("lake", "sales/region=eu-private/x"),
            err(pat!(Denial::OutsideSubsets { .. }))
        );
        expect_that!(
            read("lake", "sales/region=us/x"),
            err(pat!(Denial::OutsideSubsets { .. }))
        );
    }

    #[gtest]
    fn a_prefix_without_a_trailing_slash_still_has_a_boundary() {
        // The KeyPrefix schema makes this impossible; the check holds anyway.
        expect_that!(bounded("data"), eq("data/"));
        expect_that!(bounded("data/"), eq("data/"));
    }

    #[gtest]
    fn other_buckets_are_refused() {
        expect_that!(read("other", "data/x"), err(pat!(Denial::Bucket(_))));
        expect_that!(
            read("scratch", "data/x"),
            err(pat!(Denial::OutsideSubsets { .. }))
        );
    }

    #[gtest]
    fn dot_segments_and_encoded_separators_are_refused() {
        for key in [
            "data/../secret/x",
            "data/./x",
            "data/..",
            "data//x",
            "/data/x",
            "data/%2e%2e/secret",
            "data/..%2Fsecret",
            "data/x%2fy",
            "data/x%5Cy",
            "data/%252e%252e/y",
            "data/x%00",
            "data\\..\\secret",
            "data/x\u{0}",
            "data/\u{FF0E}\u{FF0E}\u{FF0F}secret",
            "data/a\u{2215}b",
            "",
        ] {
            expect_that!(
                read("lake", key),
                err(pat!(Denial::UnsafeKey { .. })),
                "{key:?}"
            );
        }
    }

    #[gtest]
    fn names_with_dots_are_fine() {
        expect_that!(read("lake", "data/.hidden"), ok(anything()));
        expect_that!(read("lake", "data/...x"), ok(anything()));
        expect_that!(read("lake", "data/x..y.parquet"), ok(anything()));
        expect_that!(read("lake", "data/50% off.csv"), ok(anything()));
    }

    #[gtest]
    fn writes_need_a_writable_subset() {
        expect_that!(write("lake", "data/x"), err(pat!(Denial::ReadOnly { .. })));
        expect_that!(write("scratch", "teams/a/x"), ok(anything()));
        expect_that!(
            write("scratch", "teams/ab/x"),
            err(pat!(Denial::OutsideSubsets { .. }))
        );
    }

    #[gtest]
    fn lists_stay_within_a_prefix() {
        expect_that!(list("lake", "data/"), ok(anything()));
        expect_that!(list("lake", "data/2025/"), ok(anything()));
        expect_that!(list("lake", "data/part-"), ok(anything()));
        expect_that!(list("lake", ""), err(pat!(Denial::ListOutside { .. })));
        expect_that!(
            list("lake", "sales/"),
            err(pat!(Denial::ListOutside { .. }))
        );
        expect_that!(list("lake", "data"), err(pat!(Denial::ListOutside { .. })));
        expect_that!(
            list("lake", "data-private/"),
            err(pat!(Denial::ListOutside { .. }))
        );
        expect_that!(
            list("lake", "data/../"),
            err(pat!(Denial::UnsafeKey { .. }))
        );
        expect_that!(list("other", "data/"), err(pat!(Denial::Bucket(_))));
    }

    #[gtest]
    fn a_refused_list_names_the_allowed_prefixes() {
        expect_that!(
            list("lake", "").unwrap_err().to_string(),
            contains_substring("data/, sales/region=eu/")
        );
    }
}
