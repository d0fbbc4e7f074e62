//! The driver's HTTP side (`--http ADDR`, axum, the same process): the
//! status and each job's metrics as JSON, cancelling a job, and `/metrics`
//! for Prometheus.
//!
//! Access: on loopback, reading needs nothing; beyond loopback the driver
//! must have a shared secret, and every request must carry it as a bearer
//! token. Cancelling needs the token whenever the driver has a secret. A
//! driver with a TLS certificate serves HTTPS only, with that certificate.

mod prom;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::watch;

use crate::state::Shared;

/// Why the HTTP server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Beyond loopback without a secret, anyone could read or cancel.
    #[error(
        "--http {0} is beyond this machine, but the driver has no shared secret: give it --secret-file \
         (requests then need `Authorization: Bearer <secret>`), or listen on 127.0.0.1"
    )]
    NoSecret(SocketAddr),
    /// The address could not be listened on.
    #[error("cannot serve HTTP: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone)]
struct App {
    shared: Arc<Shared>,
    /// Reading needs the bearer token (the listener is beyond loopback).
    guarded: bool,
}

/// Serves HTTP on `listener` until `stop`.
pub fn start(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), HttpError> {
    let addr = listener.local_addr()?;
    let guarded = !addr.ip().is_loopback();
    if guarded && shared.config.secret.is_none() {
        return Err(HttpError::NoSecret(addr));
    }
    let tls = shared.config.tls.clone();
    let app_tls = tls.is_some();
    let app = App { shared, guarded };
    let router = Router::new()
        .route("/", get(page))
        .route("/api/status", get(status))
        .route("/api/jobs/{id}/metrics", get(job_metrics))
        .route("/api/jobs/{id}/cancel", post(cancel))
        .route("/metrics", get(metrics))
        .with_state(app);
    let shutdown = async move {
        let _ = stop.changed().await;
    };
    // With the driver's certificate, HTTPS only.
    let task = match tls {
        Some(tls) => {
            let listener = tls::TlsListener::new(listener, tls)?;
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
                    tracing::error!(error = %e, "the HTTPS server stopped");
                }
            })
        }
        None => tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
                tracing::error!(error = %e, "the HTTP server stopped");
            }
        }),
    };
    tracing::info!(%addr, https = app_tls, "HTTP status and metrics listening");
    Ok((addr, task))
}

/// Whether the request carries the driver's secret as a bearer token.
fn authorised(app: &App, headers: &HeaderMap) -> bool {
    let Some(secret) = &app.shared.config.secret else {
        return false;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| secret.matches(token.trim().as_bytes()))
}

/// Whether a read is allowed: anyone on loopback, else the token's holder.
fn may_read(app: &App, headers: &HeaderMap) -> bool {
    !app.guarded || authorised(app, headers)
}

fn refused() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "this needs the driver's shared secret: Authorization: Bearer <secret>\n",
    )
        .into_response()
}

/// The page: everything it needs is in it (no network fetch but the driver's own API).
async fn page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("page.html"),
    )
        .into_response()
}

async fn status(State(app): State<App>, headers: HeaderMap) -> Response {
    if !may_read(&app, &headers) {
        return refused();
    }
    axum::Json(app.shared.status()).into_response()
}

/// A job's `metrics.jsonl`, as a JSON array.
async fn job_metrics(State(app): State<App>, headers: HeaderMap, Path(id): Path<u64>) -> Response {
    if !may_read(&app, &headers) {
        return refused();
    }
    let dir = app.shared.lock().job_mut(id).map(|j| j.output_dir.clone());
    let Some(dir) = dir else {
        return (StatusCode::NOT_FOUND, format!("no job {id}\n")).into_response();
    };
    let Some(dir) = dir else {
        return axum::Json(Vec::<serde_json::Value>::new()).into_response();
    };
    let path = dir.join("metrics.jsonl");
    let read = tokio::task::spawn_blocking(move || std::fs::read_to_string(path)).await;
    let read = read.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    match read {
        Ok(text) => {
            // A line being written as this reads is incomplete: left for the next read.
            let lines: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
            axum::Json(lines).into_response()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            axum::Json(Vec::<serde_json::Value>::new()).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// Cancels a job: always needs the token when the driver has a secret.
async fn cancel(State(app): State<App>, headers: HeaderMap, Path(id): Path<u64>) -> Response {
    if (app.guarded || app.shared.config.secret.is_some()) && !authorised(&app, &headers) {
        return refused();
    }
    match crate::client_conn::cancel(&app.shared, id) {
        deepdist_wire::proto::ToClient::Cancelled { .. } => {
            (StatusCode::OK, format!("job {id} cancelled\n")).into_response()
        }
        deepdist_wire::proto::ToClient::Reject { reason } => {
            (StatusCode::CONFLICT, format!("{reason}\n")).into_response()
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Prometheus's formats: OpenMetrics when asked for (as Prometheus does),
/// else the classic text format.
async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    if !may_read(&app, &headers) {
        return refused();
    }
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    match prom::render(&app.shared) {
        Ok(text) if openmetrics => ([(header::CONTENT_TYPE, prom::OPENMETRICS)], text).into_response(),
        Ok(text) => ([(header::CONTENT_TYPE, prom::TEXT)], prom::classic(&text)).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
