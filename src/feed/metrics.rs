//! What a feed run as a service shows to its watchers: `--metrics 127.0.0.1:9187` serves the
//! feed's figures as Prometheus text (`/metrics`, encoded by `prometheus-client`) and its health
//! (`/healthz`: 200 while connected and delivering, 503 otherwise) from a small listener on the
//! process's runtime (hyper's HTTP/1 server). The feed records its figures here whether or not
//! they are served: a record is an atomic add.
//!
//! Lag in bytes is the server's WAL position (from its last keepalive or message) minus the
//! slot's confirmed position; lag in seconds is how old the newest delivered transaction was
//! when delivered, and zero once the feed has caught up with the server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::pgoutput::Lsn;
use crate::error::{Class, UsageError};
use crate::runtime::runtime;

/// The feed is healthy while its session has brought something (a change, a keepalive)
/// within this long: the server sends a keepalive at least every `wal_sender_timeout` / 2.
const QUIET_AT_MOST: Duration = Duration::from_secs(90);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    class: String,
}

struct Figures {
    registry: Registry,
    changes: Counter,
    transactions: Counter,
    batches: Counter,
    reconnects: Counter,
    errors: Family<ErrorLabels, Counter>,
    lag_bytes: Gauge,
    lag_seconds: Gauge<f64, AtomicU64>,
    confirmed: Gauge,
    connected: Gauge,
    /// When the session last brought something (milliseconds since the Unix epoch).
    heard: AtomicI64,
}

fn figures() -> &'static Figures {
    static FIGURES: OnceLock<Figures> = OnceLock::new();
    FIGURES.get_or_init(|| {
        let mut f = Figures {
            registry: Registry::with_prefix("export_events"),
            changes: Counter::default(),
            transactions: Counter::default(),
            batches: Counter::default(),
            reconnects: Counter::default(),
            errors: Family::default(),
            lag_bytes: Gauge::default(),
            lag_seconds: Gauge::default(),
            confirmed: Gauge::default(),
            connected: Gauge::default(),
            heard: AtomicI64::new(0),
        };
        let r = &mut f.registry;
        r.register("changes", "Changes delivered", f.changes.clone());
        r.register(
            "transactions",
            "Transactions delivered",
            f.transactions.clone(),
        );
        r.register("batches", "Batches delivered", f.batches.clone());
        r.register(
            "reconnects",
            "Sessions started again after the server ended one",
            f.reconnects.clone(),
        );
        r.register("errors", "Failures, by class", f.errors.clone());
        r.register(
            "replication_lag_bytes",
            "Server WAL position minus the slot's confirmed position",
            f.lag_bytes.clone(),
        );
        r.register(
            "replication_lag_seconds",
            "Age of the newest delivered transaction when delivered; 0 when caught up",
            f.lag_seconds.clone(),
        );
        r.register(
            "confirmed_lsn",
            "The slot's confirmed position, as a number",
            f.confirmed.clone(),
        );
        r.register(
            "connected",
            "1 while a replication session is open",
            f.connected.clone(),
        );
        f
    })
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A batch was delivered and confirmed: `changes` in `transactions`, up to `confirmed`; the
/// newest transaction committed at `committed` (microseconds since the Unix epoch).
pub fn delivered(changes: u64, transactions: u64, confirmed: Lsn, committed: Option<i64>) {
    let f = figures();
    f.changes.inc_by(changes);
    f.transactions.inc_by(transactions);
    f.batches.inc();
    if let Some(micros) = committed {
        let age = chrono::Utc::now().timestamp_micros() - micros;
        f.lag_seconds.set(age.max(0) as f64 / 1e6);
    }
    confirmed_at(confirmed);
}

/// The slot is confirmed up to `lsn`.
pub fn confirmed_at(lsn: Lsn) {
    figures().confirmed.set(lsn.0 as i64);
}

/// The session brought something (a message, a keepalive).
pub fn alive() {
    figures().heard.store(now_millis(), Ordering::Relaxed);
}

/// The server's WAL is at `server`, the slot confirmed at `confirmed`, and nothing read is
/// waiting for delivery when `caught_up`.
pub fn position(server: Lsn, confirmed: Lsn, caught_up: bool) {
    let f = figures();
    f.lag_bytes.set(server.0.saturating_sub(confirmed.0) as i64);
    if caught_up {
        f.lag_seconds.set(0.0);
    }
}

/// A replication session opened (`true`) or ended.
pub fn connected(open: bool) {
    let f = figures();
    f.connected.set(i64::from(open));
    if open {
        f.heard.store(now_millis(), Ordering::Relaxed);
    }
}

/// The server ended a session; a new one is on its way.
pub fn reconnecting() {
    figures().reconnects.inc();
}

/// A failure of `class` (retried or not).
pub fn failed(class: Option<Class>) {
    let class = class.map_or_else(|| "other".to_owned(), |c| format!("{c:?}"));
    figures().errors.get_or_create(&ErrorLabels { class }).inc();
}

fn healthy() -> bool {
    let f = figures();
    f.connected.get() == 1
        && now_millis() - f.heard.load(Ordering::Relaxed) <= QUIET_AT_MOST.as_millis() as i64
}

/// Serves `/metrics` and `/healthz` on `addr` for as long as the process runs. The address is
/// taken now: one in use (or not this machine's) is refused before the feed starts.
pub fn serve(addr: SocketAddr) -> Result<()> {
    let listener = runtime()
        .block_on(tokio::net::TcpListener::bind(addr))
        .map_err(|e| {
            UsageError(format!(
                "--metrics {addr}: cannot listen there ({e}): give a free address of this \
                 machine, such as 127.0.0.1:9187"
            ))
        })?;
    runtime().spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                // A client that sends nonsense or goes away ends its own connection only.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(tcp),
                        hyper::service::service_fn(answer),
                    )
                    .await;
            });
        }
    });
    Ok(())
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = |status: StatusCode, body: &str| (status, "text/plain; charset=utf-8", body.into());
    let (status, kind, body): (StatusCode, &str, String) = match request.uri().path() {
        "/metrics" => {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, &figures().registry) {
                Ok(()) => (
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    body,
                ),
                Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n"),
            }
        }
        "/healthz" if healthy() => text(StatusCode::OK, "ok\n"),
        "/healthz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to the server, or nothing heard from it lately\n",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics or /healthz\n",
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(kind) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    Ok(response)
}
