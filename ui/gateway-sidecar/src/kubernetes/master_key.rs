//! The credentials master key, kept in a Kubernetes Secret so every replica
//! derives the same view keys and nothing per view is stored. The first
//! replica to start creates it (random, 32 bytes); replicas racing to create
//! it collide on AlreadyExists and read the winner's.

use std::collections::BTreeMap;
use std::io::Read;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;

use super::write::{WriteError, map};
use crate::view::{MANAGED_BY, MANAGED_BY_LABEL};

/// The key in the Secret's data.
const KEY: &str = "master-key";
const LEN: usize = 32;

/// Read the master key from Secret `name`, creating it if absent.
pub async fn load_or_create(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<u8>, WriteError> {
    let secrets: Api<Secret> = Api::namespaced(client, namespace);
    if let Some(secret) = secrets.get_opt(name).await.map_err(|e| map(e, name))? {
        return key_of(&secret, name);
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_string(),
                MANAGED_BY.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            KEY.to_string(),
            ByteString(random_key()?),
        )])),
        immutable: Some(true),
        ..Secret::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(created) => {
            tracing::info!(secret = name, "created the credentials master key");
            key_of(&created, name)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing = secrets.get(name).await.map_err(|e| map(e, name))?;
            key_of(&existing, name)
        }
        Err(error) => Err(map(error, name)),
    }
}

fn key_of(secret: &Secret, name: &str) -> Result<Vec<u8>, WriteError> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(KEY))
        .map(|k| k.0.clone())
        .ok_or_else(|| WriteError::Refused {
            code: 422,
            message: format!("Secret {name} has no `{KEY}` key"),
        })
}

fn random_key() -> Result<Vec<u8>, WriteError> {
    let mut key = vec![0; LEN];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|e| WriteError::Refused {
            code: 500,
            message: format!("reading /dev/urandom: {e}"),
        })?;
    Ok(key)
}
