//! The service the layer wraps around a handler: the request flow from key to stored response.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{CONTENT_LENGTH, HeaderValue};
use http::request::Parts;
use http::{HeaderName, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use idem_core::{
    BeginOutcome, BoxError, Error, Fingerprint, IdempotencyKey, Lease, LeaseGuard, keep_lease_renewed,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tower_service::Service;

use crate::body::ResponseBody;
use crate::envelope::{self, StoredResponse};
use crate::fingerprint::request_fingerprint;
use crate::key::parse_key_value;
use crate::layer::{Config, KeyMode};
use crate::problem::{problem, problem_retry_after};

/// Header that marks a replayed response.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

const COMPLETE_ATTEMPTS: u32 = 3;
const FIRST_POLL: Duration = Duration::from_millis(20);
const MAX_POLL: Duration = Duration::from_secs(1);
/// `Retry-After` sent with the 503 response when the store fails.
const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The future returned by [`IdempotencyService`].
pub type ResponseFuture<E> = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, E>> + Send>>;

/// The service produced by [`crate::IdempotencyLayer`] around an inner service.
///
/// The inner service receives the request with its body buffered and rebuilt through `From<Bytes>`, which
/// axum's `Body` and `http_body_util::Full<Bytes>` implement. A handler can read the [`Lease`] it runs
/// under (with its fencing token) from the request extensions.
#[derive(Clone, Debug)]
pub struct IdempotencyService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> IdempotencyService<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for IdempotencyService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body + From<Bytes> + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The clone that was polled ready serves this request; the fresh clone waits for the next poll_ready.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let config = Arc::clone(&self.config);
        Box::pin(handle(config, inner, request))
    }
}

/// A covered request, checked and buffered, before the handler runs.
struct Prepared {
    parts: Parts,
    body: Bytes,
    key: IdempotencyKey,
    fingerprint: Fingerprint,
}

async fn handle<S, ReqBody, ResBody>(
    config: Arc<Config>,
    inner: S,
    request: Request<ReqBody>,
) -> Result<Response<ResponseBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Body + From<Bytes> + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let (parts, body) = request.into_parts();
    let mode = config.key_mode(&parts);
    let has_key = parts.headers.contains_key(&config.header_name);
    if mode == KeyMode::Skip || (mode == KeyMode::Optional && !has_key) {
        return pass_through(inner, Request::from_parts(parts, body)).await;
    }

    let prepared = match prepare(&config, parts, body).await {
        Ok(prepared) => prepared,
        Err(answer) => return Ok(answer),
    };

    let lease = match acquire(&config, &prepared.key, &prepared.fingerprint).await {
        Ok(lease) => lease,
        Err(answer) => return Ok(answer),
    };
    run_handler(&config, inner, prepared, lease).await
}

async fn pass_through<S, ReqBody, ResBody>(
    mut inner: S,
    request: Request<ReqBody>,
) -> Result<Response<ResponseBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let response = inner.call(request).await?;
    Ok(response.map(ResponseBody::new))
}

/// Reads the key and the principal, buffers the body and derives the fingerprint, or returns the problem
/// response to send instead.
async fn prepare<ReqBody>(
    config: &Config,
    parts: Parts,
    body: ReqBody,
) -> Result<Prepared, Response<ResponseBody>>
where
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
{
    let header = config.header_name.as_str();
    let mut values = parts.headers.get_all(&config.header_name).iter();
    let Some(value) = values.next() else {
        return Err(problem(
            StatusCode::BAD_REQUEST,
            &format!(
                "this request requires an {header} header; send a unique key, such as a UUID, with each new request and the same key with each retry"
            ),
        ));
    };
    if values.next().is_some() {
        return Err(problem(
            StatusCode::BAD_REQUEST,
            &format!("the request has more than one {header} header; send exactly one"),
        ));
    }
    let key_string = parse_key_value(value.as_bytes()).map_err(|malformed| {
        problem(
            StatusCode::BAD_REQUEST,
            &format!("invalid {header} header: {}", malformed.0),
        )
    })?;

    let scope = match &config.principal {
        None => String::new(),
        // An empty principal counts as missing, because every such request would share one scope.
        Some(extract) => extract(&parts).filter(|principal| !principal.is_empty()).ok_or_else(|| {
            problem(
                StatusCode::UNAUTHORIZED,
                "the request carries no principal to scope its idempotency key by; authenticate and retry",
            )
        })?,
    };
    let key = IdempotencyKey::new(scope, key_string).map_err(|error| {
        let detail = match error {
            Error::InvalidInput {
                field: idem_core::InputField::Scope,
                reason,
            } => {
                format!("the principal of this request is not a valid key scope: {reason}")
            }
            Error::InvalidInput { reason, .. } => format!("invalid {header} header: {reason}"),
            other => format!("invalid {header} header: {other}"),
        };
        problem(StatusCode::BAD_REQUEST, &detail)
    })?;

    let body = read_body(config, &parts, body).await?;
    let fingerprint = request_fingerprint(&parts, &body, config.canonical_json, &config.include_headers);
    Ok(Prepared {
        parts,
        body,
        key,
        fingerprint,
    })
}

async fn read_body<ReqBody>(
    config: &Config,
    parts: &Parts,
    body: ReqBody,
) -> Result<Bytes, Response<ResponseBody>>
where
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
{
    let limit = config.max_request_body;
    let too_large = || {
        problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is larger than the limit of {limit} bytes; send a smaller body"),
        )
    };

    // A declared length over the limit is rejected before any byte of the body is read.
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }

    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(too_large()),
        Err(error) => {
            tracing::debug!(%error, "reading the request body failed");
            Err(problem(
                StatusCode::BAD_REQUEST,
                &format!("the request body could not be read ({error}); send the request again"),
            ))
        }
    }
}

/// Begins on the key until the request may run (returns the lease) or gets a response without running.
async fn acquire(
    config: &Config,
    key: &IdempotencyKey,
    fingerprint: &Fingerprint,
) -> Result<Lease, Response<ResponseBody>> {
    let header = config.header_name.as_str();
    let started = Instant::now();
    let mut poll = FIRST_POLL;

    loop {
        let outcome = config.store.begin(key, fingerprint, config.lease_ttl).await;
        match outcome {
            Ok(BeginOutcome::Acquired(lease)) => {
                if lease.attempt() > 1 {
                    tracing::warn!(key = %key.label(), attempt = lease.attempt(), "took over a lapsed claim; an earlier request stopped without finishing");
                }
                return Ok(lease);
            }
            Ok(BeginOutcome::Completed(record)) => return Err(replay(key, &record.response)),
            Ok(BeginOutcome::FingerprintMismatch) => {
                tracing::debug!(key = %key.label(), "fingerprint mismatch");
                return Err(problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &format!(
                        "this {header} was already used with a different request (method, path, query, body or fingerprinted headers); use a new key for a new request"
                    ),
                ));
            }
            Ok(BeginOutcome::InProgress { retry_after, .. }) => {
                let waited = started.elapsed();
                let keep_waiting = config.wait_for_result.is_some_and(|limit| waited < limit);
                if !keep_waiting {
                    tracing::debug!(key = %key.label(), ?retry_after, "in progress elsewhere");
                    return Err(problem_retry_after(
                        StatusCode::CONFLICT,
                        &format!(
                            "a request with this {header} is still being processed; retry after the time in Retry-After"
                        ),
                        retry_after,
                    ));
                }
                let limit = config.wait_for_result.unwrap_or_default();
                // Polls back off up to a second and never sleep past the wait limit.
                tokio::time::sleep(poll.min(limit - waited)).await;
                poll = (poll * 2).min(MAX_POLL);
            }
            Ok(other) => {
                tracing::error!(key = %key.label(), outcome = ?other, "the store returned a begin outcome this version does not know");
                return Err(problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the idempotency store returned an unknown answer; the request was not processed",
                ));
            }
            Err(error) => return Err(store_error_answer(key, &error)),
        }
    }
}

fn store_error_answer(key: &IdempotencyKey, error: &Error) -> Response<ResponseBody> {
    match error {
        Error::CorruptRecord { .. } => {
            tracing::error!(key = %key.label(), %error, "corrupt idempotency record");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the stored record for this idempotency key cannot be read; the request was not processed",
            )
        }
        Error::InvalidInput { .. } => {
            tracing::error!(key = %key.label(), %error, "the store rejected the layer's input");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the idempotency store rejected this request's settings; the request was not processed",
            )
        }
        _ => {
            tracing::warn!(key = %key.label(), %error, "idempotency store unavailable; responding 503");
            problem_retry_after(
                StatusCode::SERVICE_UNAVAILABLE,
                "the idempotency store is unavailable, so the request was not processed; retry later",
                UNAVAILABLE_RETRY_AFTER,
            )
        }
    }
}

/// Builds the replay of a stored response, or a 500 problem when the record does not decode.
fn replay(key: &IdempotencyKey, stored: &[u8]) -> Response<ResponseBody> {
    match envelope::decode(stored) {
        Ok(decoded) => {
            tracing::debug!(key = %key.label(), status = decoded.status.as_u16(), "replaying stored response");
            let mut response = Response::new(ResponseBody::full(Bytes::from(decoded.body)));
            *response.status_mut() = decoded.status;
            *response.headers_mut() = decoded.headers;
            response.headers_mut().insert(
                HeaderName::from_static(REPLAYED_HEADER),
                HeaderValue::from_static("true"),
            );
            response
        }
        Err(reason) => {
            tracing::error!(key = %key.label(), %reason, "stored response does not decode; responding 500 instead of replaying it");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the stored response for this idempotency key cannot be read; an operator must delete the record before the key can be used",
            )
        }
    }
}

/// The outcome of running the handler.
enum Finished<E> {
    Panicked,
    Failed(E),
    Response(Response<ResponseBody>),
}

async fn run_handler<S, ReqBody, ResBody>(
    config: &Config,
    mut inner: S,
    prepared: Prepared,
    lease: Lease,
) -> Result<Response<ResponseBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: From<Bytes>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let key = prepared.key;
    let mut guard = LeaseGuard::new(Arc::clone(&config.store), lease.clone());
    // The handler has no lost-lease signal to read, so the receiver is dropped at once.
    let (lost_sender, _) = watch::channel(false);

    let mut request = Request::from_parts(prepared.parts, ReqBody::from(prepared.body));
    request.extensions_mut().insert(lease.clone());

    let finished = {
        let work = async {
            let called = std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(request)));
            let Ok(future) = called else {
                return Finished::Panicked;
            };
            let response = match AssertUnwindSafe(future).catch_unwind().await {
                Err(_) => return Finished::Panicked,
                Ok(Err(error)) => return Finished::Failed(error),
                Ok(Ok(response)) => response,
            };
            Finished::Response(finish_response(config, &key, &lease, &mut guard, response).await)
        };
        let renewal = keep_lease_renewed(
            config.store.as_ref(),
            &lease,
            config.lease_ttl,
            config.max_run_time,
            &lost_sender,
        );
        tokio::pin!(work, renewal);
        tokio::select! {
            biased;
            finished = &mut work => finished,
            never = &mut renewal => match never {},
        }
    };

    match finished {
        Finished::Response(response) => Ok(response),
        Finished::Failed(error) => {
            guard.release("the handler returned an error").await;
            Err(error)
        }
        Finished::Panicked => {
            tracing::error!(key = %key.label(), "the handler panicked; responding 500 and releasing the key");
            guard.release("the handler panicked").await;
            Ok(problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the server failed while processing this request; it was not recorded, so a retry with the same key runs it again",
            ))
        }
    }
}

/// Stores the handler's response when the policy and the size allow, and returns what the client gets.
async fn finish_response<ResBody>(
    config: &Config,
    key: &IdempotencyKey,
    lease: &Lease,
    guard: &mut LeaseGuard,
    response: Response<ResBody>,
) -> Response<ResponseBody>
where
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let status = response.status();
    if !config.policy.stores(status) {
        guard
            .release("the storage policy does not store this status")
            .await;
        return response.map(ResponseBody::new);
    }
    if status.is_success() {
        // A 2xx means the side effects happened, so from here a dropped request leaves the claim to lapse
        // instead of releasing it.
        guard.keep_claim_on_drop();
    }

    let limit = config.store.max_response_bytes();
    let (head, body) = response.into_parts();
    let mut body = body.map_err(Into::into).boxed_unsync();
    let mut frames = VecDeque::new();
    let mut buffered = Vec::new();
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    buffered.extend_from_slice(data);
                } else {
                    // NOTE: trailers are not stored; a response with trailers is passed through unstored.
                    frames.push_back(frame);
                    return pass_unstored(key, guard, head, frames, body, "the response has trailers").await;
                }
                frames.push_back(frame);
                if buffered.len() > limit {
                    return pass_unstored(
                        key,
                        guard,
                        head,
                        frames,
                        body,
                        "the response body exceeds the store's limit",
                    )
                    .await;
                }
            }
            Some(Err(error)) => {
                tracing::error!(key = %key.label(), %error, "reading the handler's response body failed");
                if !status.is_success() {
                    guard.release("the response body failed").await;
                }
                return problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the server failed while sending the response; it was not recorded",
                );
            }
        }
    }

    let headers = head
        .headers
        .iter()
        .filter(|(name, _)| config.keeps_header(name))
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    let stored = StoredResponse {
        status: status.as_u16(),
        headers,
        body: buffered,
    };
    let encoded = stored.encode();
    let body = Bytes::from(stored.body);
    let rebuilt = Response::from_parts(head, ResponseBody::full(body.clone()));

    if encoded.len() > limit {
        tracing::warn!(key = %key.label(), bytes = encoded.len(), limit, "response not stored: larger than the store's limit; the key is released");
        guard
            .release("the response is larger than the store's limit")
            .await;
        return rebuilt;
    }

    match complete(config, lease, &encoded).await {
        Ok(()) => {
            guard.disarm();
            tracing::debug!(key = %key.label(), status = status.as_u16(), bytes = encoded.len(), "stored response");
        }
        Err(error) if status.is_success() => {
            guard.disarm();
            tracing::error!(key = %key.label(), %error, "storing a 2xx response failed; returning it anyway, and the claim stays until its lease lapses");
        }
        Err(error) => {
            tracing::warn!(key = %key.label(), %error, "storing the response failed; releasing the key");
            guard.release("storing the response failed").await;
        }
    }
    rebuilt
}

async fn pass_unstored(
    key: &IdempotencyKey,
    guard: &mut LeaseGuard,
    head: http::response::Parts,
    frames: VecDeque<Frame<Bytes>>,
    rest: http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>,
    reason: &str,
) -> Response<ResponseBody> {
    tracing::warn!(key = %key.label(), reason, "response passed through unstored; the key is released");
    guard.release(reason).await;
    Response::from_parts(head, ResponseBody::prefixed(frames, rest))
}

/// Completes the lease, repeating the call on retryable failures; repeating a successful complete is
/// harmless because the store accepts the same lease and response again.
async fn complete(config: &Config, lease: &Lease, response: &[u8]) -> idem_core::Result<()> {
    let mut attempt = 1;
    loop {
        match config.store.complete(lease, response, config.retention).await {
            Err(error) if error.is_retryable() && attempt < COMPLETE_ATTEMPTS => {
                tracing::debug!(key = %lease.key().label(), %error, attempt, "complete failed, retrying");
                tokio::time::sleep(Duration::from_millis(50) * 4u32.pow(attempt - 1)).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}
