//! Operations endpoints: liveness, readiness, metrics, and the request metrics middleware.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::envelope::json_response;
use super::error::ErrorBody;
use super::views::{DatabaseStatus, Health, HealthStatus, Readiness, ReadyStatus};
use crate::metrics::{HttpLabels, PoolLabels, RouteLabels};
use crate::state::AppState;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "alive", body = Health)))]
pub async fn healthz() -> Response {
    json_response(
        StatusCode::OK,
        &Health {
            status: HealthStatus::Ok,
        },
    )
}

/// The process can serve: its database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "ready", body = Readiness),
              (status = 503, description = "database unreachable", body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let ping = tokio::time::timeout(std::time::Duration::from_secs(2), state.store.ping()).await;
    match ping {
        Ok(Ok(())) => json_response(
            StatusCode::OK,
            &Readiness {
                status: ReadyStatus::Ready,
                database: DatabaseStatus::Ok,
            },
        ),
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

/// Where a health check on this machine finds `/readyz` of a server listening on `addr`
/// (`http.addr`): an unspecified address (`0.0.0.0`, `::`) is reached on loopback.
pub fn local_ready_url(addr: std::net::SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        }
        ip => ip,
    };
    format!(
        "http://{}/readyz",
        std::net::SocketAddr::new(ip, addr.port())
    )
}

/// The `relais ready` health check: `Ok` when `url` (`http://`) answers 200 within `timeout`.
pub async fn probe_ready(url: &str, timeout: std::time::Duration) -> anyhow::Result<()> {
    use anyhow::Context;
    let status = tokio::time::timeout(timeout, get_status(url))
        .await
        .map_err(|_| anyhow::anyhow!("{url} did not answer within {timeout:?}"))?
        .with_context(|| format!("asking {url}"))?;
    anyhow::ensure!(status.is_success(), "{url} answered {status}");
    Ok(())
}

/// One plain HTTP/1.1 GET (hyper's client connection, no proxy): the response's status.
async fn get_status(url: &str) -> anyhow::Result<StatusCode> {
    use anyhow::Context;
    let uri: axum::http::Uri = url.parse()?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "only http:// URLs can be asked"
    );
    let authority = uri.authority().context("no host in the URL")?.clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let stream = tokio::net::TcpStream::connect((host, authority.port_u16().unwrap_or(80))).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let request = axum::http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(header::HOST, authority.as_str())
        .body(axum::body::Body::empty())?;
    let status = sender.send_request(request).await?.status();
    connection.abort();
    Ok(status)
}

fn not_ready() -> Response {
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &Readiness {
            status: ReadyStatus::NotReady,
            database: DatabaseStatus::Unreachable,
        },
    )
}

/// Prometheus exposition: to clients on this machine, and to others that present
/// `http.metrics_token` as a bearer token.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "metrics text",
                 content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String),
              (status = 401, description = "not local, and no or a wrong `http.metrics_token`", body = ErrorBody)))]
pub async fn metrics(State(state): State<AppState>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    let token_ok = state
        .config
        .http
        .metrics_token
        .as_deref()
        .is_some_and(|want| {
            let given = parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.strip_prefix("Bearer "))
                .unwrap_or("");
            crate::auth::constant_time_eq(given.as_bytes(), want.as_bytes())
        });
    if !token_ok && !super::guard::is_local(&state, &parts) {
        return super::error::ApiError::new(
            crate::messaging::ErrorKind::Unauthorized,
            crate::error::ErrorCode::Unauthorized,
            "/metrics answers this machine, or a client with http.metrics_token",
        )
        .into_response();
    }
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
    let method = crate::metrics::method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method,
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
        // Clients choose to fail: at most a few such lines a minute, with the count left out.
        let kind = if status >= 500 {
            "http_5xx"
        } else {
            "http_4xx"
        };
        if let Some(suppressed) = state.log_budget.admit(kind) {
            tracing::info!(%method, %route, status, ms, suppressed, "http");
        }
    } else {
        tracing::debug!(%method, %route, status, ms, "http");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::local_ready_url;

    #[test]
    fn the_health_check_reaches_an_unspecified_listener_on_loopback() {
        assert_eq!(
            local_ready_url("0.0.0.0:3000".parse().unwrap()),
            "http://127.0.0.1:3000/readyz"
        );
        assert_eq!(
            local_ready_url("[::]:3000".parse().unwrap()),
            "http://[::1]:3000/readyz"
        );
        assert_eq!(
            local_ready_url("10.0.0.5:8080".parse().unwrap()),
            "http://10.0.0.5:8080/readyz"
        );
    }
}
