//! Operations endpoints: liveness, readiness, metrics, and the request metrics middleware.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::metrics::{HttpLabels, PoolLabels, RouteLabels};
use crate::state::AppState;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive")))]
pub async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// The process can serve: its database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "ready"), (status = 503, description = "database unreachable")))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let ping = tokio::time::timeout(std::time::Duration::from_secs(2), state.store.ping()).await;
    match ping {
        Ok(Ok(())) => axum::Json(json!({ "status": "ready", "database": "ok" })).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database error");
            not_ready()
        }
        Err(_) => {
            tracing::warn!("readiness: database did not answer in 2 s");
            not_ready()
        }
    }
}

fn not_ready() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({ "status": "not_ready", "database": "unreachable" })),
    )
        .into_response()
}

/// Prometheus exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "metrics text")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    // Counted at scrape time: exact, whatever order connects and disconnects ran in.
    state
        .metrics
        .socketio_connections
        .set(state.io.local_sockets() as i64);
    for (pool, size, idle) in state.store.pool_stats() {
        let idle = idle as i64;
        let size = i64::from(size);
        state
            .metrics
            .db_pool_connections
            .get_or_create(&PoolLabels {
                pool,
                state: "idle",
            })
            .set(idle);
        state
            .metrics
            .db_pool_connections
            .get_or_create(&PoolLabels {
                pool,
                state: "in_use",
            })
            .set((size - idle).max(0));
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Counts and times requests by route template (never the raw path: it may hold ids or codes),
/// and logs one line per request without query strings or bodies.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method: method.clone(),
            route: route.clone(),
            status,
        })
        .inc();
    state
        .metrics
        .http_duration
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(elapsed.as_secs_f64());
    let ms = elapsed.as_millis() as u64;
    if status >= 400 {
        tracing::info!(%method, %route, status, ms, "http");
    } else {
        tracing::debug!(%method, %route, status, ms, "http");
    }
    response
}
