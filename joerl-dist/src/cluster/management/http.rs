//! The management API over HTTP/1.1 JSON, on an address of its own
//! ([`HttpConfig`]):
//!
//! | route | answer |
//! |---|---|
//! | `GET /cluster/nodes` | `[NodeInfo]` |
//! | `GET /cluster/actors` | `ActorList` (every member's activations) |
//! | `GET /cluster/health` | `HealthInfo` |
//! | `POST /cluster/actors/{kind}/{id}/migrate` body `{"node": NAME}` | `{"ok": true}` |
//! | `POST /cluster/nodes/{name}/drain` | `{"ok": true}` |
//! | `POST /cluster/nodes/{name}/undrain` | `{"ok": true}` |
//! | `POST /cluster/leader/elect` | `{"ok": true}` |
//! | `GET /metrics` | Prometheus text, when [`HttpConfig::metrics`] is on |
//!
//! Mutating routes (`POST`) are refused with `403` unless
//! [`HttpConfig::allow_mutations`] is set (Akka Management's rule), and
//! with `401` unless the request carries the cookie-derived [`token`] in
//! the [`TOKEN_HEADER`] header. Errors are `{"error": TEXT}`: `400` for a
//! malformed body, `404` for an unknown route, `409` for a command the
//! leader refused (not a member, the last member, drained, unknown kind, a
//! limit), `503` when there is no leader or it cannot be reached. Bodies
//! are limited to [`MAX_BODY`] bytes, headers to 64 KiB, each read within
//! [`HttpConfig::header_timeout`] (a body only after the request was
//! authorized), a connection's whole life to [`CONNECTION_LIFETIME`], and
//! connections to [`HttpConfig::max_connections`] at once (more are closed
//! at accept and counted in [`HttpServer::refused`]). Answers other than
//! the routes' own (a wrong method: `405`) come from the HTTP layer and
//! are not JSON.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::Management;
use crate::cluster::metrics::{self, MetricsError};
use crate::cluster::placement::{CommandError, DirectiveError};

/// The header that carries the management token.
pub const TOKEN_HEADER: &str = "x-joerl-token";

/// What the token is derived for (HMAC-SHA256 keyed by the cookie).
pub const TOKEN_CONTEXT: &[u8] = b"joerl management token";

/// Most bytes of a request body.
pub const MAX_BODY: usize = 16 * 1024;

/// How long one connection is served at most (requests and answers
/// included), so a slow reader cannot hold a connection forever.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// The management token of nodes with this cookie: HMAC-SHA256 of
/// [`TOKEN_CONTEXT`] keyed by the cookie, in lowercase hex (what
/// [`DistributedSystem::derive_key`](crate::DistributedSystem::derive_key)
/// derives; the cookie itself never travels).
pub fn token(cookie: &str) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(cookie.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(TOKEN_CONTEXT);
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where and how the management API listens.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The address to listen on (port 0: any free one).
    pub addr: SocketAddr,
    /// Mutating routes are served (default: refused, read-only).
    pub allow_mutations: bool,
    /// `GET /metrics` serves the Prometheus text (default: off); installs
    /// the process's Prometheus recorder.
    pub metrics: bool,
    /// Most connections served at once (default 64).
    pub max_connections: usize,
    /// How long a client has to send a request's headers (default 10 s).
    pub header_timeout: Duration,
}

impl HttpConfig {
    /// Read-only, without metrics, on `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        HttpConfig {
            addr,
            allow_mutations: false,
            metrics: false,
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
        }
    }

    /// Serves the mutating routes (they still need the token).
    pub fn allow_mutations(mut self, on: bool) -> Self {
        self.allow_mutations = on;
        self
    }

    /// Serves `GET /metrics`.
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// Most connections at once.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }
}

/// Why the management listener did not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Metrics were asked for and the exporter could not be installed.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// The running management listener: stops when [`HttpServer::stop`] is
/// called or it is dropped.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    refused: Arc<AtomicU64>,
}

impl HttpServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections closed at accept because [`HttpConfig::max_connections`]
    /// were open.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Stops listening and closes its connections.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

struct AppState {
    mgmt: Management,
    config: HttpConfig,
    token: String,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

#[derive(Serialize)]
struct OkBody {
    ok: bool,
}

/// The body of `POST /cluster/actors/{kind}/{id}/migrate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigrateBody {
    /// The member to move the identity to.
    pub node: String,
}

fn error(status: StatusCode, text: impl Into<String>) -> Response {
    (status, Json(ErrorBody { error: text.into() })).into_response()
}

fn done() -> Response {
    (StatusCode::OK, Json(OkBody { ok: true })).into_response()
}

fn command_error(e: CommandError) -> Response {
    use DirectiveError as D;
    let status = match &e {
        CommandError::Directive(
            D::NotAMember(_)
            | D::LastMember(_)
            | D::Draining(_)
            | D::UnknownKind(_)
            | D::Limit { .. },
        ) => StatusCode::CONFLICT,
        CommandError::Directive(_) => StatusCode::SERVICE_UNAVAILABLE,
        CommandError::Send(_) => StatusCode::BAD_GATEWAY,
        CommandError::NotWithStore(_) => StatusCode::NOT_IMPLEMENTED,
    };
    error(status, e.to_string())
}

/// The refusal of a mutating request, unless mutations are allowed and it
/// carries the token.
fn refusal(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    if !state.config.allow_mutations {
        return Some(error(
            StatusCode::FORBIDDEN,
            "mutating routes are disabled on this node (HttpConfig::allow_mutations)",
        ));
    }
    let given = headers
        .get(TOKEN_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let want = state.token.as_bytes();
    // Constant time in the token's length.
    let same = given.len() == want.len()
        && given
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            format!("missing or wrong {TOKEN_HEADER} header (the cookie-derived token)"),
        ));
    }
    None
}

type Shared = State<Arc<AppState>>;

async fn nodes(State(s): Shared) -> Response {
    Json(s.mgmt.nodes()).into_response()
}

async fn actors(State(s): Shared) -> Response {
    Json(s.mgmt.actors().await).into_response()
}

async fn health(State(s): Shared) -> Response {
    Json(s.mgmt.health()).into_response()
}

async fn migrate(
    State(s): Shared,
    Path((kind, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    // Checked before the body is read: a client without the right to
    // mutate cannot hold the connection with a slow body.
    if let Some(r) = refusal(&s, &headers) {
        return r;
    }
    let bytes = match tokio::time::timeout(
        s.config.header_timeout,
        axum::body::to_bytes(body, MAX_BODY),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time",
            );
        }
    };
    let body: MigrateBody = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    match s.mgmt.migrate(&kind, &id, &body.node).await {
        Ok(()) => done(),
        Err(e) => command_error(e),
    }
}

async fn drain(s: Shared, name: Path<String>, headers: HeaderMap) -> Response {
    drain_or_undrain(s, name, headers, true).await
}

async fn undrain(s: Shared, name: Path<String>, headers: HeaderMap) -> Response {
    drain_or_undrain(s, name, headers, false).await
}

async fn drain_or_undrain(
    State(s): Shared,
    Path(name): Path<String>,
    headers: HeaderMap,
    drain: bool,
) -> Response {
    if let Some(r) = refusal(&s, &headers) {
        return r;
    }
    let done_or = if drain {
        s.mgmt.drain(&name).await
    } else {
        s.mgmt.undrain(&name).await
    };
    match done_or {
        Ok(()) => done(),
        Err(e) => command_error(e),
    }
}

async fn elect(State(s): Shared, headers: HeaderMap) -> Response {
    if let Some(r) = refusal(&s, &headers) {
        return r;
    }
    if s.mgmt.placements().leader().is_none() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            DirectiveError::NoLeader.to_string(),
        );
    }
    s.mgmt.force_election();
    done()
}

async fn metrics_text(State(s): Shared) -> Response {
    match &s.metrics {
        Some(h) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "metrics are not enabled on this listener (HttpConfig::metrics)",
        ),
    }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such route")
}

/// Starts the management API of `mgmt` on `config.addr`.
pub async fn serve(mgmt: Management, config: HttpConfig) -> Result<HttpServer, HttpError> {
    let metrics = if config.metrics {
        Some(metrics::prometheus()?)
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|source| HttpError::Bind {
            addr: config.addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| HttpError::Bind {
        addr: config.addr,
        source,
    })?;
    let token = hex(&mgmt.node().derive_key(TOKEN_CONTEXT));
    let state = Arc::new(AppState {
        mgmt,
        config: config.clone(),
        token,
        metrics,
    });
    let app = axum::Router::new()
        .route("/cluster/nodes", get(nodes))
        .route("/cluster/actors", get(actors))
        .route("/cluster/health", get(health))
        .route("/cluster/actors/{kind}/{id}/migrate", post(migrate))
        .route("/cluster/nodes/{name}/drain", post(drain))
        .route("/cluster/nodes/{name}/undrain", post(undrain))
        .route("/cluster/leader/elect", post(elect))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state);
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let refused = Arc::new(AtomicU64::new(0));
    let counted = refused.clone();
    let task = tokio::spawn(async move {
        let permits = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
        let mut conns = tokio::task::JoinSet::new();
        loop {
            while conns.try_join_next().is_some() {}
            let accepted = tokio::select! {
                _ = &mut stopped => break,
                a = listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "management: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                counted.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, "management: too many connections; closed");
                continue;
            };
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            let header_timeout = config.header_timeout;
            conns.spawn(async move {
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .max_buf_size(64 * 1024)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                // A client that reads its answer slowly, or keeps the
                // connection, lets it go after a while.
                match tokio::time::timeout(CONNECTION_LIFETIME, served).await {
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "management: connection ended")
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "management: connection closed after its lifetime")
                    }
                    Ok(Ok(())) => {}
                }
                drop(permit);
            });
        }
        conns.shutdown().await;
    });
    Ok(HttpServer {
        addr,
        stop: Some(stop),
        task: Some(task),
        refused,
    })
}

/// A reply from a management listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The body (JSON, or Prometheus text).
    pub body: String,
}

/// Why a request to a management listener failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The listener could not be reached.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Its address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The exchange failed (the connection closed, a malformed answer).
    #[error("the request failed: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built (a bad path or token).
    #[error("the request could not be built: {0}")]
    Request(#[from] axum::http::Error),
    /// No answer within the time given.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// An answer bigger than [`MAX_REPLY`].
    #[error("the answer is larger than {MAX_REPLY} bytes")]
    TooLarge,
    /// The answer's body could not be read.
    #[error("the answer's body could not be read: {0}")]
    Body(String),
}

/// Most bytes of an answer [`request`] reads.
pub const MAX_REPLY: usize = 64 * 1024 * 1024;

/// One HTTP/1.1 request to the management listener at `addr` (for
/// `cluster_admin` and tests): `method` and `path`, the token if given,
/// a JSON body if given; waits up to `timeout` for the whole answer.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
    timeout: Duration,
) -> Result<Reply, ClientError> {
    tokio::time::timeout(timeout, exchange(addr, method, path, token, body))
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
}

async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> Result<Reply, ClientError> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| ClientError::Connect { addr, source })?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if let Some(t) = token {
        req = req.header(TOKEN_HEADER, t);
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(b)))?,
        None => req.body(http_body_util::Full::new(bytes::Bytes::new()))?,
    };
    let answer = sender.send_request(req).await?;
    let status = answer.status().as_u16();
    let limited = http_body_util::Limited::new(answer.into_body(), MAX_REPLY);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ClientError::TooLarge
            } else {
                ClientError::Body(e.to_string())
            }
        })?
        .to_bytes();
    driver.abort();
    Ok(Reply {
        status,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}
