//! The layer, its builder and its settings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{HeaderName, Method, StatusCode};
use idem_core::{Error, IdempotencyStore, InputField, MIN_LEASE_TTL, Result, Ttl};
use tower_layer::Layer;

use crate::service::IdempotencyService;

/// Default header the key is read from: `Idempotency-Key`.
pub const DEFAULT_HEADER_NAME: &str = "idempotency-key";
/// Default lease TTL: 30 seconds.
pub const DEFAULT_LEASE_TTL: Duration = idem_core::DEFAULT_LEASE_TTL;
/// Default retention of a stored response: 24 hours.
pub const DEFAULT_RETENTION: Duration = idem_core::DEFAULT_RETENTION;
/// Default longest time the lease of one request is renewed: 5 minutes.
pub const DEFAULT_MAX_RUN_TIME: Duration = idem_core::DEFAULT_MAX_RUN_TIME;
/// Default limit on a buffered request body: 1 MiB.
pub const DEFAULT_MAX_REQUEST_BODY: usize = 1024 * 1024;

/// Response headers that are not stored by default, so a replay never repeats them: the hop-by-hop headers
/// (`Connection`, `Keep-Alive`, `Transfer-Encoding`, `TE`, `Trailer`, `Upgrade`, and every `Proxy-*` header),
/// `Date` (the server sets a fresh one), and `Set-Cookie` (a stored record should not hold session
/// credentials, so a replay sets no cookie).
pub const DEFAULT_EXCLUDED_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-*",
    "date",
    "set-cookie",
];

/// The rule for which handler responses are stored and replayed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoragePolicy {
    /// Store 2xx, 3xx and 4xx responses except 408, 409, 425 and 429. Those, every 5xx, handler errors and
    /// panics release the key, so a retry runs the handler again.
    #[default]
    Default,
    /// Store every response, 5xx included, so a retry replays a failure instead of running again. Handler
    /// errors and panics still release the key, because they produce no response to store.
    StoreEverything,
}

impl StoragePolicy {
    /// Returns whether a response with `status` is stored under this policy.
    pub fn stores(self, status: StatusCode) -> bool {
        match self {
            StoragePolicy::StoreEverything => true,
            StoragePolicy::Default => {
                let transient = matches!(status.as_u16(), 408 | 409 | 425 | 429);
                (200..500).contains(&status.as_u16()) && !transient
            }
        }
    }
}

/// How one request is handled, as a [`IdempotencyLayerBuilder::route`] classifier decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyMode {
    /// The request must carry a key, and one without a key gets 400.
    Required,
    /// A request with a key is made idempotent; one without a key passes through untouched.
    Optional,
    /// The request passes through untouched, whatever headers it carries.
    Skip,
}

type PrincipalFn = dyn Fn(&Parts) -> Option<String> + Send + Sync;
type RouteFn = dyn Fn(&Parts) -> Option<KeyMode> + Send + Sync;

/// Settings shared by every clone of a layer and its services.
pub(crate) struct Config {
    pub(crate) store: Arc<dyn IdempotencyStore>,
    pub(crate) header_name: HeaderName,
    pub(crate) methods: Vec<Method>,
    pub(crate) require_key: bool,
    pub(crate) route: Option<Arc<RouteFn>>,
    pub(crate) principal: Option<Arc<PrincipalFn>>,
    pub(crate) canonical_json: bool,
    pub(crate) include_headers: Vec<HeaderName>,
    pub(crate) excluded_headers: Vec<String>,
    pub(crate) lease_ttl: Ttl,
    pub(crate) retention: Ttl,
    pub(crate) max_run_time: Duration,
    pub(crate) max_request_body: usize,
    pub(crate) wait_for_result: Option<Duration>,
    pub(crate) policy: StoragePolicy,
}

impl Config {
    /// Decides how a request is handled: the route classifier first, then the method list.
    pub(crate) fn key_mode(&self, parts: &Parts) -> KeyMode {
        if let Some(mode) = self.route.as_ref().and_then(|route| route(parts)) {
            return mode;
        }
        if !self.methods.contains(&parts.method) {
            KeyMode::Skip
        } else if self.require_key {
            KeyMode::Required
        } else {
            KeyMode::Optional
        }
    }

    /// Returns whether a response header is stored and replayed.
    pub(crate) fn keeps_header(&self, name: &HeaderName) -> bool {
        let name = name.as_str();
        !self
            .excluded_headers
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == pattern,
            })
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("store", &self.store.backend_name())
            .field("header_name", &self.header_name)
            .field("methods", &self.methods)
            .field("require_key", &self.require_key)
            .field("route", &self.route.is_some())
            .field("principal", &self.principal.is_some())
            .field("canonical_json", &self.canonical_json)
            .field("include_headers", &self.include_headers)
            .field("excluded_headers", &self.excluded_headers)
            .field("lease_ttl", &self.lease_ttl)
            .field("retention", &self.retention)
            .field("max_run_time", &self.max_run_time)
            .field("max_request_body", &self.max_request_body)
            .field("wait_for_result", &self.wait_for_result)
            .field("policy", &self.policy)
            .finish()
    }
}

/// A tower [`Layer`] that makes the wrapped service idempotent per `Idempotency-Key`. See the
/// [crate docs](crate) for the behavior. Cheap to clone; clones share the store and the settings.
#[derive(Clone, Debug)]
pub struct IdempotencyLayer {
    config: Arc<Config>,
}

impl IdempotencyLayer {
    /// Starts a builder on `store` with the defaults written on each setter.
    pub fn builder(store: Arc<dyn IdempotencyStore>) -> IdempotencyLayerBuilder {
        IdempotencyLayerBuilder {
            config: Config {
                store,
                header_name: HeaderName::from_static(DEFAULT_HEADER_NAME),
                methods: vec![Method::POST, Method::PATCH],
                require_key: true,
                route: None,
                principal: None,
                canonical_json: false,
                include_headers: Vec::new(),
                excluded_headers: DEFAULT_EXCLUDED_HEADERS
                    .iter()
                    .map(|name| (*name).to_owned())
                    .collect(),
                lease_ttl: Ttl::new(DEFAULT_LEASE_TTL).expect("the default lease TTL is valid"),
                retention: Ttl::new(DEFAULT_RETENTION).expect("the default retention is valid"),
                max_run_time: DEFAULT_MAX_RUN_TIME,
                max_request_body: DEFAULT_MAX_REQUEST_BODY,
                wait_for_result: None,
                policy: StoragePolicy::Default,
            },
            lease_ttl: DEFAULT_LEASE_TTL,
            retention: DEFAULT_RETENTION,
        }
    }

    /// Builds a layer on `store` with the default settings.
    pub fn new(store: Arc<dyn IdempotencyStore>) -> Self {
        Self::builder(store)
            .build()
            .expect("the default settings are valid")
    }

    /// Returns a copy of this layer whose covered requests must carry a key (`true`) or may omit it and
    /// then pass through (`false`). Use it to give one route of a router other rules than the rest.
    pub fn with_require_key(&self, require_key: bool) -> Self {
        let mut config = self.config.clone_settings();
        config.require_key = require_key;
        Self {
            config: Arc::new(config),
        }
    }

    /// Returns the store this layer uses.
    pub fn store(&self) -> &Arc<dyn IdempotencyStore> {
        &self.config.store
    }
}

impl Config {
    fn clone_settings(&self) -> Config {
        Config {
            store: Arc::clone(&self.store),
            header_name: self.header_name.clone(),
            methods: self.methods.clone(),
            require_key: self.require_key,
            route: self.route.clone(),
            principal: self.principal.clone(),
            canonical_json: self.canonical_json,
            include_headers: self.include_headers.clone(),
            excluded_headers: self.excluded_headers.clone(),
            lease_ttl: self.lease_ttl,
            retention: self.retention,
            max_run_time: self.max_run_time,
            max_request_body: self.max_request_body,
            wait_for_result: self.wait_for_result,
            policy: self.policy,
        }
    }
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = IdempotencyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService::new(inner, Arc::clone(&self.config))
    }
}

/// Builder for [`IdempotencyLayer`]; each setter names its default.
#[must_use]
pub struct IdempotencyLayerBuilder {
    config: Config,
    lease_ttl: Duration,
    retention: Duration,
}

impl fmt::Debug for IdempotencyLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyLayerBuilder")
            .field("config", &self.config)
            .field("lease_ttl", &self.lease_ttl)
            .field("retention", &self.retention)
            .finish()
    }
}

impl IdempotencyLayerBuilder {
    /// Sets the request header the key is read from. Default `Idempotency-Key`. A webhook receiver can
    /// point it at the provider's delivery id, such as `X-GitHub-Delivery`.
    pub fn header_name(mut self, name: HeaderName) -> Self {
        self.config.header_name = name;
        self
    }

    /// Sets the methods the layer covers; requests with other methods pass through untouched. Default POST
    /// and PATCH.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.config.methods = methods.into_iter().collect();
        self
    }

    /// Sets whether a covered request without a key is rejected with 400 (`true`) or passes through
    /// untouched (`false`). Default `true`.
    pub fn require_key(mut self, require_key: bool) -> Self {
        self.config.require_key = require_key;
        self
    }

    /// Sets a classifier that decides per request, for example by path, whether a key is required,
    /// optional, or ignored. When it returns `None`, the method list and [`Self::require_key`] decide.
    /// Default: none.
    pub fn route(mut self, classify: impl Fn(&Parts) -> Option<KeyMode> + Send + Sync + 'static) -> Self {
        self.config.route = Some(Arc::new(classify));
        self
    }

    /// Sets the principal extractor: it returns the caller's identity (account, tenant, API key id) from
    /// the request head, for example from an authentication header or a request extension that an
    /// authentication layer set. Keys are scoped by it, so two principals never share a record.
    ///
    /// When the extractor returns `None` or an empty string, the response is 401 and the handler does not
    /// run. Without an
    /// extractor (the default), every key lives in one shared, empty scope.
    pub fn principal(mut self, extract: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static) -> Self {
        self.config.principal = Some(Arc::new(extract));
        self
    }

    /// Sets whether a JSON body is fingerprinted in canonical form, so that object key order and
    /// insignificant whitespace do not count as another payload. A body that does not parse as JSON is
    /// fingerprinted by its raw bytes. Default `false`: the raw bytes always.
    pub fn canonical_json(mut self, canonical: bool) -> Self {
        self.config.canonical_json = canonical;
        self
    }

    /// Sets request headers that are part of the fingerprint besides method, path, query and body, such as
    /// `Content-Type`. Default: none.
    pub fn include_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.config.include_headers = names.into_iter().collect();
        self
    }

    /// Replaces the list of response headers that are not stored. Names are lowercase; a trailing `*`
    /// matches a prefix. Default [`DEFAULT_EXCLUDED_HEADERS`].
    pub fn exclude_headers<I, N>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<String>,
    {
        self.config.excluded_headers = names
            .into_iter()
            .map(|name| name.into().to_ascii_lowercase())
            .collect();
        self
    }

    /// Sets the lease TTL: how long a claim protects a request whose server stopped renewing it (a crash).
    /// Default 30 s, at least 100 ms. The lease is renewed every third of it while the handler runs.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Sets how long a stored response is replayed. Default 24 h.
    pub fn retention(mut self, ttl: Duration) -> Self {
        self.retention = ttl;
        self
    }

    /// Sets the longest time the lease of one request is renewed. Default 5 min. After it the lease lapses
    /// at its deadline and a retry may run the handler again.
    pub fn max_run_time(mut self, limit: Duration) -> Self {
        self.config.max_run_time = limit;
        self
    }

    /// Sets the largest request body that is buffered, in bytes. A larger body gets 413, the
    /// handler does not run and nothing is stored. Default 1 MiB; zero is rejected at build.
    pub fn max_request_body(mut self, bytes: usize) -> Self {
        self.config.max_request_body = bytes;
        self
    }

    /// Waits up to `limit` for the result of a request with the same key that is still running, and
    /// replays it, instead of responding 409 at once. Default: no wait.
    pub fn wait_for_result(mut self, limit: Duration) -> Self {
        self.config.wait_for_result = Some(limit);
        self
    }

    /// Sets which responses are stored. Default [`StoragePolicy::Default`].
    pub fn policy(mut self, policy: StoragePolicy) -> Self {
        self.config.policy = policy;
        self
    }

    /// Validates the settings and builds the layer.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the lease TTL is below 100 ms, a TTL is zero or longer than
    /// [`Ttl::MAX`], the method list is empty, or the maximum run time or wait limit is zero.
    pub fn build(mut self) -> Result<IdempotencyLayer> {
        if self.lease_ttl < MIN_LEASE_TTL {
            return Err(Error::invalid(
                InputField::Setting,
                format!(
                    "lease_ttl of {:?} is below the minimum of {MIN_LEASE_TTL:?}; pass several times the store's worst latency, such as 30 s",
                    self.lease_ttl
                ),
            ));
        }
        if self.config.max_request_body == 0 {
            return Err(Error::invalid(
                InputField::Setting,
                "max_request_body is zero, so every request with a body would get 413; pass the largest body to accept in bytes, such as 1048576 (1 MiB)",
            ));
        }
        if self.config.methods.is_empty() && self.config.route.is_none() {
            return Err(Error::invalid(
                InputField::Setting,
                "methods is empty and no route classifier is set, so the layer covers no request; pass methods such as POST",
            ));
        }
        if self.config.max_run_time.is_zero() {
            return Err(Error::invalid(
                InputField::Setting,
                "max_run_time is zero; pass the longest time one request may take",
            ));
        }
        if self.config.wait_for_result.is_some_and(|limit| limit.is_zero()) {
            return Err(Error::invalid(
                InputField::Setting,
                "wait_for_result limit is zero; pass how long to wait for another request's result, or do not call wait_for_result",
            ));
        }
        self.config.lease_ttl = Ttl::new(self.lease_ttl)?;
        self.config.retention = Ttl::new(self.retention)?;
        Ok(IdempotencyLayer {
            config: Arc::new(self.config),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_stores() {
        let policy = StoragePolicy::Default;
        for status in [200, 201, 204, 301, 400, 404, 422] {
            assert!(policy.stores(StatusCode::from_u16(status).unwrap()), "{status}");
        }
        for status in [408, 409, 425, 429, 500, 502, 503] {
            assert!(!policy.stores(StatusCode::from_u16(status).unwrap()), "{status}");
        }
        assert!(StoragePolicy::StoreEverything.stores(StatusCode::INTERNAL_SERVER_ERROR));
    }

    #[test]
    fn default_exclusions_match() {
        let layer = IdempotencyLayer::new(Arc::new(idem_memory::MemoryStore::new()));
        let config = &layer.config;
        for name in [
            "connection",
            "proxy-authenticate",
            "date",
            "set-cookie",
            "transfer-encoding",
        ] {
            assert!(!config.keeps_header(&HeaderName::from_static(name)), "{name}");
        }
        for name in ["content-type", "location", "etag", "x-request-id"] {
            assert!(config.keeps_header(&HeaderName::from_static(name)), "{name}");
        }
    }

    #[test]
    fn build_rejects_bad_settings() {
        let store: Arc<dyn IdempotencyStore> = Arc::new(idem_memory::MemoryStore::new());
        let short = IdempotencyLayer::builder(Arc::clone(&store)).lease_ttl(Duration::from_millis(10));
        assert!(short.build().is_err());
        let no_methods = IdempotencyLayer::builder(Arc::clone(&store)).methods([]);
        assert!(no_methods.build().is_err());
        let zero_wait = IdempotencyLayer::builder(Arc::clone(&store)).wait_for_result(Duration::ZERO);
        assert!(zero_wait.build().is_err());
        let zero_retention = IdempotencyLayer::builder(store).retention(Duration::ZERO);
        assert!(zero_retention.build().is_err());
    }
}
