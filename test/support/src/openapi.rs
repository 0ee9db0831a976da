//! The views API's OpenAPI document as tests hold answers to it.

use anyhow::ensure;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Whether `status` and `body`, the answer to `method` on the documented
/// path `template`, are as the API's OpenAPI document says: a status it
/// lists for that operation, and a body valid by that response's schema.
pub fn as_documented(
    document: &Value,
    method: &Method,
    template: &str,
    status: StatusCode,
    body: &str,
) -> anyhow::Result<()> {
    let operation = &document["paths"][template][method.as_str().to_lowercase()];
    ensure!(
        operation.is_object(),
        "{method} {template} is not documented"
    );
    let response = &operation["responses"][status.as_str()];
    ensure!(
        response.is_object(),
        "{method} {template} answered {status}, which its document does not list: {body}"
    );
    let Some(schema) = response.pointer("/content/application~1json/schema") else {
        ensure!(
            body.is_empty(),
            "{method} {template} {status}: a body where none is documented: {body}"
        );
        return Ok(());
    };
    // The response's schema in a root that holds the components its
    // references point into.
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "allOf": [schema],
        "components": document["components"],
    });
    let validator = jsonschema::validator_for(&root)?;
    let value: Value = serde_json::from_str(body)
        .map_err(|e| anyhow::anyhow!("{method} {template} {status}: not JSON ({e}): {body}"))?;
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| e.to_string())
        .collect();
    ensure!(
        errors.is_empty(),
        "{method} {template} {status}: not as documented: {errors:?} in {body}"
    );
    Ok(())
}
