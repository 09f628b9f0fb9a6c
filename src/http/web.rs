//! The browser client, served by the server itself: the files of `web_dir` (built from `web/`),
//! with the conference page and the other client routes answered by its `index.html`.
//! In development mode only, a token endpoint for the client's sign-in page.

use axum::extract::{FromRequest, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use super::envelope::{Success, ok};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::ApiJson;
use super::views::{DevModeData, DevTokenData, DevUser};
use crate::config::DevSignIn;
use crate::error::ErrorCode;
use crate::ids::{Identity, Role};
use crate::messaging::ErrorKind;
use crate::state::AppState;

/// Serves a file of the built client, or its `index.html` for client-side routes
/// (`/conference/{id}`, `/doctor`, …).
pub async fn client(State(state): State<AppState>, request: Request) -> Response {
    let dir = state.config.web_dir.clone();
    let index = dir.join("index.html");
    if !index.exists() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "The browser client is not built: run scripts/run.sh (or `npm ci && npm run build` in web/).\n",
        )
            .into_response();
    }
    let service = ServeDir::new(&dir).fallback(ServeFile::new(&index));
    match service.oneshot(request).await {
        Ok(mut response) => {
            // The pages hold tokens and join codes in their URL: never cache or leak them.
            let headers = response.headers_mut();
            headers.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            if headers
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/html"))
            {
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            response.into_response()
        }
        Err(e) => match e {},
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct DevTokenBody {
    pub role: Role,
    pub id: i64,
    #[serde(default)]
    pub name: Option<String>,
}

/// Whether this request may get a development token (`auth.dev_sign_in`): `local` admits
/// clients on the server's own machine only ([`super::guard::is_local`]).
fn dev_sign_in_allowed(state: &AppState, request: &Parts) -> bool {
    match state.config.auth.dev_sign_in {
        DevSignIn::Off => false,
        DevSignIn::Network => true,
        DevSignIn::Local => super::guard::is_local(state, request),
    }
}

fn not_found() -> ApiError {
    ApiError::new(ErrorKind::NotFound, ErrorCode::NotFound, "no such endpoint")
}

/// Whether development sign-in is available: 200 `{developmentMode: true, signInHere}` in
/// development mode (`signInHere`: whether this client may get a token), 404 otherwise (so
/// the sign-in page can ask without an error in the console).
#[utoipa::path(get, path = "/api/dev/token", tag = "development",
    responses((status = 200, description = "development mode", body = Success<DevModeData>),
              (status = 404, description = "not in development mode", body = ErrorBody)))]
pub async fn dev_mode(
    State(state): State<AppState>,
    request: Request,
) -> ApiResult<Success<DevModeData>> {
    if !state.verifier.development_mode || state.config.auth.dev_sign_in == DevSignIn::Off {
        return Err(not_found());
    }
    let (parts, _) = request.into_parts();
    let here = dev_sign_in_allowed(&state, &parts);
    Ok(ok(DevModeData {
        development_mode: true,
        sign_in_here: here,
    }))
}

/// Development mode only (no configured JWT secret): a token for any role and id, for the
/// client's sign-in page — to clients on the server's machine only, unless
/// `auth.dev_sign_in = "network"`. With a real secret configured (or `auth.dev_sign_in =
/// "off"`) this endpoint does not exist (404).
#[utoipa::path(post, path = "/api/dev/token", tag = "development",
    request_body = DevTokenBody,
    responses((status = 200, description = "a token", body = Success<DevTokenData>),
              (status = 400, description = "invalid body or id", body = ErrorBody),
              (status = 403, description = "not from this machine (`dev_sign_in_local_only`)", body = ErrorBody),
              (status = 404, description = "not in development mode", body = ErrorBody)))]
pub async fn dev_token(
    State(state): State<AppState>,
    request: Request,
) -> ApiResult<Success<DevTokenData>> {
    if !state.verifier.development_mode || state.config.auth.dev_sign_in == DevSignIn::Off {
        return Err(not_found());
    }
    let (parts, body) = request.into_parts();
    if !dev_sign_in_allowed(&state, &parts) {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            ErrorCode::DevSignInLocalOnly,
            "development sign-in answers clients on the server's own machine only \
             (auth.dev_sign_in = \"local\"); configure auth.jwt_secret for real sign-in",
        ));
    }
    let ApiJson(body) =
        ApiJson::<DevTokenBody>::from_request(Request::from_parts(parts, body), &state).await?;
    if body.id <= 0 {
        return Err(ApiError::new(
            ErrorKind::BadRequest,
            ErrorCode::InvalidId,
            "id must be a positive number",
        ));
    }
    let who = Identity::new(body.role, body.id);
    let token = state
        .verifier
        .mint(
            who,
            body.name.as_deref(),
            std::time::Duration::from_secs(12 * 3600),
        )
        .map_err(|e| ApiError(crate::messaging::DomainError::internal(e)))?;
    Ok(ok(DevTokenData {
        token,
        user: DevUser {
            user_id: who.id.0,
            user_type: who.role,
            role: who.role,
        },
    }))
}
