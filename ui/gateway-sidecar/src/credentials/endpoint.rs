//! The S3 endpoint views talk to: s3s parses and verifies each request with
//! the secret [`Auth`] derives from the key id, [`Access`] applies the
//! subset policy to the parsed operation, and [`Forward`] sends what is
//! allowed to the lake through `s3s-aws` (aws-sdk-s3, re-signed with the
//! lake's credentials). The operation the lake receives is rebuilt from the
//! parsed input that was checked, never the raw request, so the policy and
//! the lake cannot read one request two ways.
//!
//! Every request leaves one audit line (target `views_gateway::audit`) with
//! the view, operation, resource, decision and reason, and counts once in
//! [`Counters`].

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use hyper::body::Incoming;
use hyper::http::{Extensions, HeaderMap, Request, Response, Uri};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use jiff::Timestamp;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::{self, CopySource};
use s3s::path::S3Path;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{Body, HttpError, S3, S3Error, S3Request, S3Response, S3Result};
use tokio::net::TcpListener;
use views_types::Subset;

use super::error::CredentialsError;
use super::key::{Broker, KeyId, UNKNOWN_VERSION_WAIT};
use super::metrics::{Counters, Outcome};
use super::policy::{self, Access as Mode, Denial};
use super::views::ViewSubsets;

/// The lake the endpoint forwards to, and the credentials it re-signs with.
#[derive(Clone)]
pub struct Upstream {
    /// e.g. `http://10.233.0.1:9400`
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("region", &self.region)
            .finish()
    }
}

/// The views' S3 endpoint: a hyper service (HTTP/1.1, path-style requests).
#[derive(Clone)]
pub struct Endpoint {
    service: S3Service,
    counters: Arc<Counters>,
}

impl Endpoint {
    pub fn new(broker: Arc<Broker>, views: Arc<dyn ViewSubsets>, upstream: &Upstream) -> Self {
        let counters = broker.counters().clone();
        let mut builder = S3ServiceBuilder::new(Forward {
            proxy: s3s_aws::Proxy::from(s3_client(upstream)),
        });
        builder.set_auth(Auth {
            broker,
            views: views.clone(),
        });
        builder.set_access(Access { views });
        Self {
            service: builder.build(),
            counters,
        }
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Handle one request (audited and counted).
    pub async fn handle(&self, request: Request<Body>) -> Result<Response<Body>, HttpError> {
        let (method, path) = (request.method().clone(), request.uri().path().to_owned());
        AUDIT
            .scope(RefCell::new(Audit::default()), async {
                let result = self.service.call(request).await;
                let audit = AUDIT.with(|audit| audit.take());
                audit.finish(&self.counters, &method, &path, &result);
                result
            })
            .await
    }

    /// Serve HTTP/1.1 on `listener` until `shutdown` resolves. Connections
    /// in flight then finish on their own tasks.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), CredentialsError> {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "S3 endpoint: accept failed");
                        continue;
                    }
                },
                () = &mut shutdown => return Ok(()),
            };
            let endpoint = self.clone();
            tokio::spawn(async move {
                let connection = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), endpoint)
                    .await;
                if let Err(error) = connection {
                    tracing::debug!(%peer, %error, "S3 endpoint: connection ended");
                }
            });
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for Endpoint {
    type Response = Response<Body>;
    type Error = HttpError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let endpoint = self.clone();
        Box::pin(async move { endpoint.handle(request.map(Body::from)).await })
    }
}

/// An S3 client for `upstream` (path-style, checksums only where S3
/// requires them): the endpoint's own client for the lake, and a view's
/// client for the endpoint in tests.
pub fn s3_client(upstream: &Upstream) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{
        BehaviorVersion, Credentials, Region, RequestChecksumCalculation,
        ResponseChecksumValidation,
    };
    let credentials = Credentials::new(
        &upstream.access_key_id,
        &upstream.secret_access_key,
        None,
        None,
        "views-gateway-lake",
    );
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(&upstream.endpoint)
        .region(Region::new(upstream.region.clone()))
        .credentials_provider(credentials)
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    // The SDK's default client loads the system's CA roots whatever the
    // scheme (and its debug builds panic without any); an http lake gets a
    // client that never looks. For an https lake, main checked at start-up
    // that there are roots (crate::roots).
    let config = if crate::roots::is_https(&upstream.endpoint) {
        config
    } else {
        config.http_client(aws_smithy_http_client::Builder::new().build_http())
    };
    aws_sdk_s3::Client::from_conf(config.build())
}

// ---------------------------------------------------------------------------
// Authentication: the key id → its secret, or a refusal.

struct Auth {
    broker: Arc<Broker>,
    views: Arc<dyn ViewSubsets>,
}

impl Auth {
    /// The secret of a presented key: the key must be well formed, not
    /// expired, of an existing view's current activation, and derived from
    /// a master key version this replica holds (or receives within
    /// [`UNKNOWN_VERSION_WAIT`]).
    async fn resolve(&self, access_key: &str) -> Result<String, CredentialsError> {
        let key = KeyId::parse(access_key)?;
        audit(|a| a.view = Some(key.view.clone()));
        if key.expired_at(Timestamp::now()) {
            return Err(CredentialsError::Expired(key.expires_at));
        }
        if self.views.subsets(&key.view).is_none() {
            return Err(CredentialsError::ViewDeleted(key.view));
        }
        if !self.views.activation_current(&key.view, &key.nonce) {
            return Err(CredentialsError::ActivationEnded(key.view));
        }
        self.broker.secret_for(&key, UNKNOWN_VERSION_WAIT).await
    }
}

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.resolve(access_key).await {
            Ok(secret) => {
                audit(|a| a.key = KeyOutcome::Accepted);
                Ok(SecretKey::from(secret))
            }
            Err(error) => {
                let outcome = match &error {
                    CredentialsError::Expired(_) => Outcome::ExpiredKey,
                    CredentialsError::ViewDeleted(_) | CredentialsError::ActivationEnded(_) => {
                        Outcome::ViewDeleted
                    }
                    _ => Outcome::InvalidKey,
                };
                audit(|a| a.key = KeyOutcome::Refused(outcome, error.reason()));
                Err(error.into())
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Access: the operation allow-list and the subset policy.

/// The operations views may use, by what they touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpClass {
    Read,
    List,
    Bucket,
    Write,
}

fn classify(operation: &str) -> Option<OpClass> {
    Some(match operation {
        "GetObject" | "HeadObject" => OpClass::Read,
        "ListObjects" | "ListObjectsV2" => OpClass::List,
        "HeadBucket" | "GetBucketLocation" => OpClass::Bucket,
        "PutObject"
        | "DeleteObject"
        | "DeleteObjects"
        | "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload"
        | "AbortMultipartUpload"
        | "ListParts" => OpClass::Write,
        _ => return None,
    })
}

/// What the request-level check found, for the operation-level checks.
#[derive(Clone)]
struct Grant {
    subsets: Arc<[Subset]>,
}

struct Access {
    views: Arc<dyn ViewSubsets>,
}

impl Access {
    fn check_request(&self, cx: &S3AccessContext<'_>) -> Result<Grant, CredentialsError> {
        let operation = cx.s3_op().name();
        let Some(credentials) = cx.credentials() else {
            return Err(Denial::Anonymous.into());
        };
        if is_signature_v2(cx.headers(), cx.uri()) {
            return Err(Denial::SignatureV2.into());
        }
        let key = KeyId::parse(&credentials.access_key)?;
        let subsets: Arc<[Subset]> = self
            .views
            .subsets(&key.view)
            .ok_or(CredentialsError::ViewDeleted(key.view))?
            .into();
        let class = classify(operation).ok_or_else(|| Denial::Operation(operation.to_owned()))?;
        match (class, cx.s3_path()) {
            (OpClass::Read, S3Path::Object { bucket, key }) => {
                policy::authorize_object(&subsets, bucket, key, Mode::Read)?;
            }
            (OpClass::Write, S3Path::Object { bucket, key }) => {
                policy::authorize_object(&subsets, bucket, key, Mode::Write)?;
            }
            (OpClass::List | OpClass::Bucket, S3Path::Bucket { bucket }) => {
                policy::authorize_bucket(&subsets, bucket)?;
            }
            // DeleteObjects: each key is checked once the body is parsed.
            (OpClass::Write, S3Path::Bucket { bucket }) if operation == "DeleteObjects" => {
                policy::authorize_bucket(&subsets, bucket)?;
            }
            _ => return Err(Denial::Operation(operation.to_owned()).into()),
        }
        Ok(Grant { subsets })
    }
}

/// SigV2 (HMAC-SHA1, no expiry scope) is refused even with a valid key.
fn is_signature_v2(headers: &HeaderMap, uri: &Uri) -> bool {
    let header_v2 = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("AWS "));
    let query_v2 = uri.query().is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair.starts_with("AWSAccessKeyId=") || pair.starts_with("Signature="))
    });
    header_v2 || query_v2
}

fn resource(path: &S3Path) -> String {
    match path {
        S3Path::Root => "/".into(),
        S3Path::Bucket { bucket } => format!("{bucket}/"),
        S3Path::Object { bucket, key } => format!("{bucket}/{key}"),
    }
}

/// The operation-level decision: the request-level check must have run and
/// granted (fail closed otherwise), then `decide` looks at the parsed input.
fn decide(
    extensions: &Extensions,
    decide: impl FnOnce(&[Subset]) -> Result<(), Denial>,
) -> S3Result<()> {
    let result = match extensions.get::<Grant>() {
        Some(grant) => decide(&grant.subsets),
        None => Err(Denial::Operation("an unchecked request".into())),
    };
    match result {
        Ok(()) => {
            audit(|a| a.access = AccessOutcome::Allowed);
            Ok(())
        }
        Err(denial) => {
            audit(|a| a.access = AccessOutcome::Denied(denial.reason()));
            Err(CredentialsError::Denied(denial).into())
        }
    }
}

fn object<T>(req: &S3Request<T>, bucket: &str, key: &str, mode: Mode) -> S3Result<()> {
    decide(&req.extensions, |subsets| {
        policy::authorize_object(subsets, bucket, key, mode)
    })
}

fn copy<T>(req: &S3Request<T>, source: &CopySource, bucket: &str, key: &str) -> S3Result<()> {
    decide(&req.extensions, |subsets| {
        policy::authorize_object(subsets, bucket, key, Mode::Write)?;
        match source {
            CopySource::Bucket { bucket, key, .. } => {
                policy::authorize_object(subsets, bucket, key, Mode::Read)
                    .map_err(|_| Denial::CopySource(format!("{bucket}/{key}")))
            }
            // Access points and outposts are other resources, never a subset.
            _ => Err(Denial::CopySource("an access point or outpost".into())),
        }
    })
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let operation = cx.s3_op().name().to_owned();
        let target = resource(cx.s3_path());
        audit(|a| {
            a.operation = Some(operation);
            a.resource = Some(target);
        });
        match self.check_request(cx) {
            Ok(grant) => {
                audit(|a| a.access = AccessOutcome::Checked);
                cx.extensions_mut().insert(grant);
                Ok(())
            }
            Err(error) => {
                let reason = error.reason();
                audit(|a| match error {
                    CredentialsError::Denied(_) => a.access = AccessOutcome::Denied(reason),
                    _ => a.key = KeyOutcome::Refused(Outcome::ViewDeleted, reason),
                });
                Err(error.into())
            }
        }
    }

    async fn get_object(&self, req: &mut S3Request<dto::GetObjectInput>) -> S3Result<()> {
        object(req, &req.input.bucket, &req.input.key, Mode::Read)
    }

    async fn head_object(&self, req: &mut S3Request<dto::HeadObjectInput>) -> S3Result<()> {
        object(req, &req.input.bucket, &req.input.key, Mode::Read)
    }

    async fn list_objects(&self, req: &mut S3Request<dto::ListObjectsInput>) -> S3Result<()> {
        let prefix = req.input.prefix.as_deref().unwrap_or_default();
        audit(|a| a.resource = Some(format!("{}/{prefix}*", req.input.bucket)));
        decide(&req.extensions, |subsets| {
            policy::authorize_list(subsets, &req.input.bucket, prefix)
        })
    }

    async fn list_objects_v2(&self, req: &mut S3Request<dto::ListObjectsV2Input>) -> S3Result<()> {
        let prefix = req.input.prefix.as_deref().unwrap_or_default();
        audit(|a| a.resource = Some(format!("{}/{prefix}*", req.input.bucket)));
        decide(&req.extensions, |subsets| {
            policy::authorize_list(subsets, &req.input.bucket, prefix)
        })
    }

    async fn head_bucket(&self, req: &mut S3Request<dto::HeadBucketInput>) -> S3Result<()> {
        decide(&req.extensions, |subsets| {
            policy::authorize_bucket(subsets, &req.input.bucket)
        })
    }

    async fn get_bucket_location(
        &self,
        req: &mut S3Request<dto::GetBucketLocationInput>,
    ) -> S3Result<()> {
        decide(&req.extensions, |subsets| {
            policy::authorize_bucket(subsets, &req.input.bucket)
        })
    }

    async fn put_object(&self, req: &mut S3Request<dto::PutObjectInput>) -> S3Result<()> {
        object(req, &req.input.bucket, &req.input.key, Mode::Write)
    }

    async fn delete_object(&self, req: &mut S3Request<dto::DeleteObjectInput>) -> S3Result<()> {
        object(req, &req.input.bucket, &req.input.key, Mode::Write)
    }

    async fn delete_objects(&self, req: &mut S3Request<dto::DeleteObjectsInput>) -> S3Result<()> {
        decide(&req.extensions, |subsets| {
            req.input.delete.objects.iter().try_for_each(|object| {
                policy::authorize_object(subsets, &req.input.bucket, &object.key, Mode::Write)
            })
        })
    }

    async fn copy_object(&self, req: &mut S3Request<dto::CopyObjectInput>) -> S3Result<()> {
        copy(
            req,
            &req.input.copy_source,
            &req.input.bucket,
            &req.input.key,
        )
    }

    async fn upload_part_copy(
        &self,
        req: &mut S3Request<dto::UploadPartCopyInput>,
    ) -> S3Result<()> {
        copy(
            req,
            &req.input.copy_source,
            &req.input.bucket,
            &req.input.key,
        )
    }

    async fn create_multipart_upload(
        &self,
        req: &mut S3Request<dto::CreateMultipartUploadInput>,
    ) -> S3Result<()> {
        object(req, &req.input.bucket, &req.input.key, Mode::Write)
    }

    async fn upload_part(&self, req: &mut S3Request<dto::UploadPartInput>) -> S3Result<()> {
        object(req, &req.input.bucket, &req.input.key, Mode::Write)
    }

    async fn complete_multipart_upload(
        &self,
        req: &mut S3Request<dto::CompleteMultipartUploadInput>,
    ) -> S3Result<()> {
        object(req, &req.input.bucket, &req.input.key, Mode::Write)
    }

    async fn abort_multipart_upload(
        &self,
        req: &mut S3Request<dto::AbortMultipartUploadInput>,
    ) -> S3Result<()> {
        object(req, &req.input.bucket, &req.input.key, Mode::Write)
    }

    async fn list_parts(&self, req: &mut S3Request<dto::ListPartsInput>) -> S3Result<()> {
        object(req, &req.input.bucket, &req.input.key, Mode::Write)
    }
}

// ---------------------------------------------------------------------------
// Forwarding: only the allowed operations exist here; every other S3
// operation answers NotImplemented even if a check above were to let it by.

struct Forward {
    proxy: s3s_aws::Proxy,
}

/// Keep only listed keys and common prefixes inside the subsets (the lake
/// honours the prefix already; this keeps a misbehaving lake from widening
/// a listing).
fn in_listing(extensions: &Extensions, bucket: &str, key: &str, url_encoded: bool) -> bool {
    let key = if url_encoded {
        percent_decode(key)
    } else {
        key.to_owned()
    };
    extensions
        .get::<Grant>()
        .is_some_and(|grant| policy::in_subsets(&grant.subsets, bucket, &key, Mode::Read))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap() * 16 + hex(l).unwrap()) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_url_encoding(encoding: Option<&dto::EncodingType>) -> bool {
    encoding.is_some_and(|e| e.as_str() == dto::EncodingType::URL)
}

#[async_trait::async_trait]
impl S3 for Forward {
    async fn get_object(
        &self,
        req: S3Request<dto::GetObjectInput>,
    ) -> S3Result<S3Response<dto::GetObjectOutput>> {
        self.proxy.get_object(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<dto::HeadObjectInput>,
    ) -> S3Result<S3Response<dto::HeadObjectOutput>> {
        self.proxy.head_object(req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<dto::ListObjectsInput>,
    ) -> S3Result<S3Response<dto::ListObjectsOutput>> {
        let extensions = req.extensions.clone();
        let bucket = req.input.bucket.clone();
        let mut response = self.proxy.list_objects(req).await?;
        let output = &mut response.output;
        let encoded = is_url_encoding(output.encoding_type.as_ref());
        let keep = |key: Option<&String>| {
            key.is_some_and(|key| in_listing(&extensions, &bucket, key, encoded))
        };
        if let Some(contents) = &mut output.contents {
            contents.retain(|object| keep(object.key.as_ref()));
        }
        if let Some(prefixes) = &mut output.common_prefixes {
            prefixes.retain(|prefix| keep(prefix.prefix.as_ref()));
        }
        Ok(response)
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<dto::ListObjectsV2Input>,
    ) -> S3Result<S3Response<dto::ListObjectsV2Output>> {
        let extensions = req.extensions.clone();
        let bucket = req.input.bucket.clone();
        let mut response = self.proxy.list_objects_v2(req).await?;
        let output = &mut response.output;
        let encoded = is_url_encoding(output.encoding_type.as_ref());
        let keep = |key: Option<&String>| {
            key.is_some_and(|key| in_listing(&extensions, &bucket, key, encoded))
        };
        let mut count = 0;
        if let Some(contents) = &mut output.contents {
            contents.retain(|object| keep(object.key.as_ref()));
            count += contents.len();
        }
        if let Some(prefixes) = &mut output.common_prefixes {
            prefixes.retain(|prefix| keep(prefix.prefix.as_ref()));
            count += prefixes.len();
        }
        if output.key_count.is_some() {
            output.key_count = i32::try_from(count).ok();
        }
        Ok(response)
    }

    async fn head_bucket(
        &self,
        req: S3Request<dto::HeadBucketInput>,
    ) -> S3Result<S3Response<dto::HeadBucketOutput>> {
        self.proxy.head_bucket(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<dto::GetBucketLocationInput>,
    ) -> S3Result<S3Response<dto::GetBucketLocationOutput>> {
        self.proxy.get_bucket_location(req).await
    }

    async fn put_object(
        &self,
        req: S3Request<dto::PutObjectInput>,
    ) -> S3Result<S3Response<dto::PutObjectOutput>> {
        self.proxy.put_object(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<dto::DeleteObjectInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectOutput>> {
        self.proxy.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<dto::DeleteObjectsInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectsOutput>> {
        self.proxy.delete_objects(req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<dto::CopyObjectInput>,
    ) -> S3Result<S3Response<dto::CopyObjectOutput>> {
        self.proxy.copy_object(req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<dto::UploadPartCopyInput>,
    ) -> S3Result<S3Response<dto::UploadPartCopyOutput>> {
        self.proxy.upload_part_copy(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<dto::CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CreateMultipartUploadOutput>> {
        self.proxy.create_multipart_upload(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<dto::UploadPartInput>,
    ) -> S3Result<S3Response<dto::UploadPartOutput>> {
        self.proxy.upload_part(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<dto::CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CompleteMultipartUploadOutput>> {
        self.proxy.complete_multipart_upload(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<dto::AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::AbortMultipartUploadOutput>> {
        self.proxy.abort_multipart_upload(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<dto::ListPartsInput>,
    ) -> S3Result<S3Response<dto::ListPartsOutput>> {
        self.proxy.list_parts(req).await
    }
}

// ---------------------------------------------------------------------------
// The audit trail: what auth and access decided for this request, collected
// in a task-local and written once when the response is known.

tokio::task_local! {
    static AUDIT: RefCell<Audit>;
}

fn audit(update: impl FnOnce(&mut Audit)) {
    // Outside `Endpoint::handle` (no scope) there is nothing to record.
    let _ = AUDIT.try_with(|audit| update(&mut audit.borrow_mut()));
}

#[derive(Default)]
struct Audit {
    view: Option<String>,
    operation: Option<String>,
    resource: Option<String>,
    key: KeyOutcome,
    access: AccessOutcome,
}

#[derive(Default)]
enum KeyOutcome {
    /// No view key was presented, or s3s refused the request before asking.
    #[default]
    NotPresented,
    Accepted,
    Refused(Outcome, &'static str),
}

#[derive(Default)]
enum AccessOutcome {
    #[default]
    NotChecked,
    /// The request-level check passed; the operation-level one did not run.
    Checked,
    Allowed,
    Denied(&'static str),
}

impl Audit {
    fn finish(
        self,
        counters: &Counters,
        method: &hyper::Method,
        path: &str,
        result: &Result<Response<Body>, HttpError>,
    ) {
        let (status, code) = match result {
            Ok(response) => (response.status().as_u16(), error_code(response)),
            Err(_) => (500, None),
        };
        let failed = status >= 400;
        let (outcome, decision, reason): (Outcome, &str, &str) = match (&self.key, &self.access) {
            (KeyOutcome::Refused(outcome, reason), _) => (*outcome, "deny", reason),
            (_, AccessOutcome::Denied(reason)) => (Outcome::Denied, "deny", reason),
            (KeyOutcome::Accepted, AccessOutcome::NotChecked) if failed => match code.as_deref() {
                Some("SignatureDoesNotMatch") => {
                    (Outcome::BadSignature, "deny", "signature-mismatch")
                }
                _ => (Outcome::OtherRefused, "deny", "request-refused"),
            },
            (KeyOutcome::Accepted, AccessOutcome::Allowed | AccessOutcome::Checked) => {
                (Outcome::Allowed, "allow", "in-subset")
            }
            _ => (Outcome::OtherRefused, "deny", "no-view-key"),
        };
        counters.record(outcome);
        if outcome == Outcome::Allowed && status >= 500 {
            counters.record_upstream_error();
        }
        tracing::info!(
            target: "views_gateway::audit",
            view = self.view.as_deref().unwrap_or("-"),
            operation = self.operation.as_deref().unwrap_or("-"),
            resource = self.resource.as_deref().unwrap_or(path),
            %method,
            decision,
            reason,
            status,
            code = code.as_deref().unwrap_or("-"),
            "s3 request"
        );
    }
}

/// The `<Code>` of an S3 error response (error bodies are small and
/// already in memory; HEAD errors have none).
fn error_code(response: &Response<Body>) -> Option<String> {
    if response.status().as_u16() < 400 {
        return None;
    }
    let body = response.body().bytes()?;
    let text = std::str::from_utf8(&body).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let end = start + text[start..].find("</Code>")?;
    Some(text[start..end].to_owned())
}

impl From<Denial> for S3Error {
    fn from(denial: Denial) -> Self {
        CredentialsError::Denied(denial).into()
    }
}

#[cfg(test)]
mod tests {
    use googletest::prelude::*;

    use super::*;

    #[gtest]
    fn only_the_needed_operations_are_allowed() {
        expect_that!(classify("GetObject"), some(eq(OpClass::Read)));
        expect_that!(classify("ListObjectsV2"), some(eq(OpClass::List)));
        expect_that!(classify("CopyObject"), some(eq(OpClass::Write)));
        expect_that!(classify("ListBuckets"), none());
        expect_that!(classify("PutObjectAcl"), none());
        expect_that!(classify("PostObject"), none());
        expect_that!(classify("DeleteBucket"), none());
        expect_that!(classify("GetObjectAttributes"), none());
    }

    #[gtest]
    fn signature_v2_is_recognised_in_headers_and_query() {
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        let mut headers = HeaderMap::new();
        expect_that!(is_signature_v2(&headers, &uri("/lake/x")), eq(false));
        expect_that!(
            is_signature_v2(
                &headers,
                &uri("/lake/x?AWSAccessKeyId=a&Expires=1&Signature=s")
            ),
            eq(true)
        );
        expect_that!(
            is_signature_v2(&headers, &uri("/lake/x?X-Amz-Signature=s")),
            eq(false)
        );
        headers.insert("authorization", "AWS key:sig".parse().unwrap());
        expect_that!(is_signature_v2(&headers, &uri("/lake/x")), eq(true));
        headers.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=k/1/r/s3/aws4_request"
                .parse()
                .unwrap(),
        );
        expect_that!(is_signature_v2(&headers, &uri("/lake/x")), eq(false));
    }

    #[gtest]
    fn percent_decoding_for_url_encoded_listings() {
        expect_that!(
            percent_decode("sales/region%3Deu/a%20b+c"),
            eq("sales/region=eu/a b c")
        );
        expect_that!(percent_decode("50%"), eq("50%"));
    }
}
