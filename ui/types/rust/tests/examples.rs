//! The examples in the exported schemas (`ui/types/schemas/*.schema.json`) hold for both the
//! schemas and the generated types:
//!
//! - every `examples` entry, of each document and of each of its `$defs`, is valid under the
//!   schema, deserializes into the generated type, and serializes back to the same JSON
//!   (once the schema's defaults are filled in);
//! - every `x-invalid-examples` entry is rejected by the schema, and by deserialization
//!   wherever the schema's complaint is one the generated types check (everything but
//!   numeric ranges and item or property counts).
//!
//! Only the exported JSON is read, so this needs no node.

use std::fs;
use std::path::PathBuf;

use googletest::prelude::*;
use jsonschema::{Draft, Validator, meta};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use views_types::{ApiError, Route, Subset, View, ViewRequest};

const DRAFT: &str = "https://json-schema.org/draft/2020-12/schema";
const ID_PREFIX: &str = "urn:views-gateway:schemas:";

/// JSON Schema keywords whose violations the generated types do not detect.
const UNCHECKED_BY_TYPES: [&str; 10] = [
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
];

/// The generated types by name: deserializes `value` as the type named `name` and serializes
/// it back (`None` when there is no such type).
macro_rules! generated_types {
    ($($name:ident),* $(,)?) => {
        fn round_trip(name: &str, value: &Value) -> Option<std::result::Result<Value, String>> {
            match name {
                $(stringify!($name) => Some(round_trip_as::<views_types::$name>(value)),)*
                _ => None,
            }
        }
    };
}

generated_types!(
    ApiError,
    ApiErrorCode,
    Access,
    BucketName,
    DeadlineExtension,
    DeadlineSeconds,
    Grant,
    GroupName,
    IdleTimeoutSeconds,
    InvalidView,
    KeyPrefix,
    LakeListing,
    LakeObject,
    LakeRoots,
    Me,
    Owner,
    PreviewColumn,
    ResourceRequests,
    Route,
    Shares,
    Subset,
    Table,
    TableFormat,
    TableName,
    TablePath,
    TablePreview,
    View,
    ViewEndpoint,
    ViewHostname,
    ViewList,
    ViewName,
    ViewPhase,
    ViewRequest,
    ViewStatus,
);

fn round_trip_as<T: DeserializeOwned + Serialize>(
    value: &Value,
) -> std::result::Result<Value, String> {
    let typed: T = serde_json::from_value(value.clone()).map_err(|error| error.to_string())?;
    serde_json::to_value(&typed).map_err(|error| error.to_string())
}

/// One exported document.
struct Document {
    name: String,
    schema: Value,
}

/// A schema with examples: a document, or one of the `$defs` in it.
struct Subject<'a> {
    /// "View", or "View#/$defs/ViewStatus"
    label: String,
    /// The name of the generated type.
    type_name: &'a str,
    schema: &'a Value,
    validator: Validator,
}

fn documents() -> Vec<Document> {
    let dir = manifest_dir().join("../schemas");
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.to_string_lossy().ends_with(".schema.json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = fs::read_to_string(&path).expect("a readable schema");
            Document {
                name: file.trim_end_matches(".schema.json").to_string(),
                schema: serde_json::from_str(&text)
                    .unwrap_or_else(|error| panic!("{file} is not JSON: {error}")),
            }
        })
        .collect()
}

impl Document {
    fn defs(&self) -> Map<String, Value> {
        match self.schema.get("$defs") {
            Some(Value::Object(defs)) => defs.clone(),
            _ => Map::new(),
        }
    }

    fn invalid_examples(&self) -> Vec<Value> {
        list(&self.schema, "x-invalid-examples")
    }

    /// The document itself, then each of its `$defs`.
    fn subjects(&self) -> Vec<Subject<'_>> {
        let mut subjects = vec![Subject {
            label: self.name.clone(),
            type_name: &self.name,
            schema: &self.schema,
            validator: validator(&self.schema),
        }];
        if let Some(Value::Object(defs)) = self.schema.get("$defs") {
            for (def, schema) in defs {
                // The definition as the root, with the document's `$defs` for its references.
                let root = json!({
                    "$schema": DRAFT,
                    "$id": self.schema["$id"],
                    "$defs": self.defs(),
                    "$ref": format!("#/$defs/{def}"),
                });
                subjects.push(Subject {
                    label: format!("{}#/$defs/{def}", self.name),
                    type_name: def,
                    schema,
                    validator: validator(&root),
                });
            }
        }
        subjects
    }

    /// `value` with the defaults the schema declares filled in where properties are absent.
    fn with_defaults(&self, schema: &Value, value: &Value) -> Value {
        let defs = self.defs();
        let mut value = value.clone();
        fill_defaults(schema, &defs, &mut value);
        value
    }
}

fn validator(schema: &Value) -> Validator {
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|error| panic!("not a usable schema: {error}"))
}

fn list(schema: &Value, key: &str) -> Vec<Value> {
    match schema.get(key) {
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    }
}

/// Follows a local `$ref` (`#/$defs/<name>`), once per level.
fn resolve<'a>(schema: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.trim_start_matches("#/$defs/");
            resolve(
                defs.get(name)
                    .unwrap_or_else(|| panic!("unresolved {reference}")),
                defs,
            )
        }
        None => schema,
    }
}

fn fill_defaults(schema: &Value, defs: &Map<String, Value>, value: &mut Value) {
    let resolved = resolve(schema, defs);
    match value {
        Value::Object(object) => {
            let properties = resolved.get("properties").and_then(Value::as_object);
            for (name, property) in properties.into_iter().flatten() {
                match object.get_mut(name) {
                    Some(present) => fill_defaults(property, defs, present),
                    None => {
                        let default = property
                            .get("default")
                            .or_else(|| resolve(property, defs).get("default"));
                        if let Some(default) = default {
                            object.insert(name.clone(), default.clone());
                        }
                    }
                }
            }
            if let Some(additional @ Value::Object(_)) = resolved.get("additionalProperties") {
                for (name, present) in object.iter_mut() {
                    if !properties.is_some_and(|properties| properties.contains_key(name)) {
                        fill_defaults(additional, defs, present);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = resolved.get("items") {
                for present in items {
                    fill_defaults(item, defs, present);
                }
            }
        }
        _ => {}
    }
}

/// The keywords of the schema's complaints about `value`.
fn complaints(validator: &Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|error| error.kind().keyword().to_string())
        .collect()
}

#[gtest]
fn there_are_documents_for_the_shared_types() {
    let documents = documents();
    let names: Vec<&str> = documents.iter().map(|d| d.name.as_str()).collect();
    for name in ["ApiError", "Route", "Subset", "View", "ViewRequest"] {
        expect_that!(names, contains(eq(&name)));
    }
}

#[gtest]
fn every_document_is_a_valid_draft_2020_12_schema_with_examples() {
    for document in documents() {
        let name = &document.name;
        let schema = &document.schema;
        expect_that!(schema["$schema"], eq(DRAFT), "{name}");
        expect_that!(schema["$id"], eq(id(name).as_str()), "{name}");
        expect_that!(schema["title"], eq(name.as_str()), "{name}");
        expect_that!(meta::is_valid(schema), eq(true), "{name}");
        expect_that!(list(schema, "examples"), not(is_empty()), "{name}");
        expect_that!(document.invalid_examples(), not(is_empty()), "{name}");
    }
}

#[gtest]
fn every_document_and_definition_has_a_generated_type() {
    for document in documents() {
        for subject in document.subjects() {
            let label = &subject.label;
            let generated = round_trip(subject.type_name, &Value::Null);
            expect_that!(generated, some(anything()), "{label}");
        }
    }
}

#[gtest]
fn every_example_is_valid_under_its_schema() {
    for document in documents() {
        for subject in document.subjects() {
            for example in list(subject.schema, "examples") {
                let label = &subject.label;
                let found = complaints(&subject.validator, &example);
                expect_that!(found, is_empty(), "{label}: {example}");
            }
        }
    }
}

#[gtest]
fn every_example_round_trips_through_the_generated_type() {
    for document in documents() {
        for subject in document.subjects() {
            for example in list(subject.schema, "examples") {
                let label = &subject.label;
                let expected = document.with_defaults(subject.schema, &example);
                let actual = round_trip(subject.type_name, &example);
                expect_that!(actual, some(ok(eq(&expected))), "{label}: {example}");
            }
        }
    }
}

#[gtest]
fn every_invalid_example_is_rejected_by_the_schema() {
    for document in documents() {
        let subject = &document.subjects()[0];
        for example in document.invalid_examples() {
            let name = &document.name;
            let found = complaints(&subject.validator, &example);
            expect_that!(found, not(is_empty()), "{name}: {example}");
        }
    }
}

#[gtest]
fn every_invalid_example_the_types_can_detect_fails_to_deserialize() {
    for document in documents() {
        let subject = &document.subjects()[0];
        for example in document.invalid_examples() {
            let found = complaints(&subject.validator, &example);
            if found
                .iter()
                .all(|k| UNCHECKED_BY_TYPES.contains(&k.as_str()))
            {
                continue;
            }
            let context = format!("{} ({found:?}): {example}", document.name);
            let actual = round_trip(&document.name, &example);
            expect_that!(actual, some(err(anything())), "{context}");
        }
    }
}

#[gtest]
fn each_root_type_carries_its_document() {
    expect_that!(id_in(ApiError::JSON_SCHEMA), eq(&id("ApiError")));
    expect_that!(id_in(Route::JSON_SCHEMA), eq(&id("Route")));
    expect_that!(id_in(Subset::JSON_SCHEMA), eq(&id("Subset")));
    expect_that!(id_in(View::JSON_SCHEMA), eq(&id("View")));
    expect_that!(id_in(ViewRequest::JSON_SCHEMA), eq(&id("ViewRequest")));
}

fn id(name: &str) -> String {
    format!("{ID_PREFIX}{name}")
}

fn id_in(document: &str) -> String {
    let document: Value = serde_json::from_str(document).expect("a JSON document");
    document["$id"].as_str().unwrap_or_default().to_string()
}

/// This package's directory, read at run time (see `test_support::repo_root`
/// for why not `env!`).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .expect("cargo test sets CARGO_MANIFEST_DIR")
        .into()
}
