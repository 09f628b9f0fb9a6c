//! A thin REST client: authenticated requests against `/api/messaging`, answers as
//! (status, JSON).

use reqwest::{Method, StatusCode};
use serde_json::Value;

#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiClientError {
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{status}: {body}")]
    Status { status: StatusCode, body: Value },
}

impl ApiClient {
    /// `base` is the server origin (`http://127.0.0.1:3000`).
    pub fn new(http: reqwest::Client, base: &str, token: &str) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        }
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path` (relative to the origin, e.g. `/api/messaging/conversations`).
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends and reads the JSON answer whatever its status.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), ApiClientError> {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, json))
    }

    /// Like [`call`](Self::call) but a non-2xx status is an error.
    pub async fn call_ok(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiClientError> {
        let (status, body) = self.call(method, path, body).await?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(ApiClientError::Status { status, body })
        }
    }

    pub async fn create_conversation(
        &self,
        kind: &str,
        participants: &[(&str, i64)],
    ) -> Result<i64, ApiClientError> {
        let parts: Vec<Value> = participants
            .iter()
            .map(|(role, id)| serde_json::json!({ "role": role, "id": id }))
            .collect();
        let body = serde_json::json!({ "type": kind, "participants": parts });
        let v = self
            .call_ok(Method::POST, "/api/messaging/conversations", Some(&body))
            .await?;
        Ok(v["data"]["conversation"]["id"].as_i64().unwrap_or_default())
    }

    pub async fn send_text(&self, conversation: i64, text: &str) -> Result<Value, ApiClientError> {
        let body = serde_json::json!({ "contenu": text, "type_message": "texte" });
        let v = self
            .call_ok(
                Method::POST,
                &format!("/api/messaging/conversations/{conversation}/messages"),
                Some(&body),
            )
            .await?;
        Ok(v["data"]["message"].clone())
    }
}
