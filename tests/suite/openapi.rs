//! The OpenAPI document against the router and against real answers.
//!
//! - every endpoint the router registers ([`relais::http::api_endpoints`],
//!   [`relais::http::root_endpoints`]: the lists `router` is built from), with every method
//!   it answers (probed on the running server: a method it does not route answers 405), is an
//!   operation of the document, and every operation of the document is routed;
//! - every operation documents its success body and its error bodies (`ErrorBody` under
//!   `/api`), and authenticated ones their 401;
//! - real answers of representative routes match their documented schema: the keys of each
//!   object are among the schema's properties and include its required ones, recursively,
//!   with the documented JSON types.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Backend, Options, spawn_app, spawn_app_with};
use relais::ids::Role;

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// Error answers documented without a JSON body: the file server's 416 (empty body).
const BODYLESS: &[&str] = &["416"];

async fn document(base: &str, http: &reqwest::Client) -> Value {
    http.get(format!("{base}/api-docs/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The endpoints the router is built from, as full path templates.
fn routed_paths() -> Vec<String> {
    let api = relais::http::api_endpoints(0)
        .into_iter()
        .map(|(path, _)| format!("{}{path}", relais::http::API_PREFIX));
    let root = relais::http::root_endpoints()
        .into_iter()
        .map(|(path, _)| path.to_string());
    api.chain(root).collect()
}

fn concrete(template: &str) -> String {
    template.replace("{id}", "1").replace("{guest}", "1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_routed_operation_is_documented_with_its_bodies_and_back() {
    let app = spawn_app(Backend::Sqlite).await;
    let doc = document(&app.base, &app.http).await;
    let paths = doc["paths"].as_object().expect("paths");

    // Router → document (and the document's paths → router, for the methods).
    let mut routed = BTreeSet::new();
    for template in routed_paths() {
        assert!(
            !template.contains('{')
                || template.matches('{').count()
                    == template.matches("{id}").count() + template.matches("{guest}").count(),
            "{template}: teach `concrete` its parameters"
        );
        for method in METHODS {
            let status = app
                .http
                .request(
                    method.clone(),
                    format!("{}{}", app.base, concrete(&template)),
                )
                .send()
                .await
                .unwrap()
                .status();
            if status != StatusCode::METHOD_NOT_ALLOWED {
                routed.insert((method.as_str().to_lowercase(), template.clone()));
            }
        }
    }
    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        for (method, _) in item.as_object().unwrap() {
            if METHODS
                .iter()
                .any(|m| m.as_str().eq_ignore_ascii_case(method))
            {
                documented.insert((method.clone(), path.clone()));
            }
        }
    }
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routed but not in the OpenAPI document: {undocumented:?}; \
         documented but not routed: {unrouted:?}"
    );
    assert!(
        routed.len() >= 26,
        "the probe found {} operations",
        routed.len()
    );

    // Every operation: a success body, error bodies, a 401 when authenticated.
    for (method, path) in &documented {
        let op = &paths[path][method];
        let responses = op["responses"].as_object().unwrap();
        let what = format!("{} {path}", method.to_uppercase());
        let successes: Vec<_> = responses.keys().filter(|s| s.starts_with('2')).collect();
        assert!(!successes.is_empty(), "{what}: no success response");
        for (status, response) in responses {
            if BODYLESS.contains(&status.as_str()) {
                continue;
            }
            let content = response["content"]
                .as_object()
                .unwrap_or_else(|| panic!("{what}: {status} documents no body"));
            assert!(!content.is_empty(), "{what}: {status} documents no body");
            for (media, body) in content {
                assert!(
                    body["schema"].is_object(),
                    "{what}: {status} {media} has no schema"
                );
            }
            if (status.starts_with('4') || status.starts_with('5')) && path.starts_with("/api/") {
                assert_eq!(
                    content["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                    "{what}: {status} is not an ErrorBody"
                );
            }
        }
        if op["security"].is_array() {
            assert!(responses.contains_key("401"), "{what}: no 401 documented");
        }
    }

    // Every reference resolves.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    for r in refs {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {r}"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{r} is not in the document"
        );
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// Checks a value against a JSON schema of the document (the subset utoipa writes: `$ref`,
/// `allOf`, `oneOf`/`anyOf`, `type` (one or several), `enum`, `properties`, `required`,
/// `items`). Objects with `properties` are closed: an undocumented key fails.
struct Schemas<'a>(&'a Value);

impl<'a> Schemas<'a> {
    fn resolve(&self, mut s: &'a Value) -> &'a Value {
        while let Some(r) = s["$ref"].as_str() {
            let name = r.strip_prefix("#/components/schemas/").unwrap();
            s = &self.0["components"]["schemas"][name];
            assert!(s.is_object(), "{r} does not resolve");
        }
        s
    }

    /// The properties and required keys of an object schema, across `allOf`.
    fn object_shape(
        &self,
        s: &'a Value,
        props: &mut BTreeMap<&'a str, &'a Value>,
        required: &mut BTreeSet<&'a str>,
    ) -> bool {
        let s = self.resolve(s);
        let mut closed = false;
        if let Some(p) = s["properties"].as_object() {
            closed = true;
            props.extend(p.iter().map(|(k, v)| (k.as_str(), v)));
        }
        if let Some(r) = s["required"].as_array() {
            required.extend(r.iter().filter_map(Value::as_str));
        }
        if let Some(all) = s["allOf"].as_array() {
            for part in all {
                closed |= self.object_shape(part, props, required);
            }
        }
        closed
    }

    fn check(&self, schema: &'a Value, v: &Value, at: &str) -> Result<(), String> {
        let s = self.resolve(schema);
        for key in ["oneOf", "anyOf"] {
            if let Some(alts) = s[key].as_array() {
                let errors: Vec<String> = alts
                    .iter()
                    .filter_map(|alt| self.check(alt, v, at).err())
                    .collect();
                if errors.len() == alts.len() {
                    return Err(format!("{at}: no alternative fits {v}: {errors:?}"));
                }
            }
        }
        if let Some(values) = s["enum"].as_array()
            && !values.contains(v)
        {
            return Err(format!("{at}: {v} is not one of {values:?}"));
        }
        let types: Vec<&str> = match &s["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !types.is_empty() {
            let fits = types.iter().any(|t| match *t {
                "null" => v.is_null(),
                "string" => v.is_string(),
                "boolean" => v.is_boolean(),
                "integer" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                "array" => v.is_array(),
                "object" => v.is_object(),
                _ => false,
            });
            if !fits {
                return Err(format!("{at}: {v} is not of type {types:?}"));
            }
        }
        if let (Some(items), Some(values)) = (s.get("items"), v.as_array()) {
            for (i, item) in values.iter().enumerate() {
                self.check(items, item, &format!("{at}[{i}]"))?;
            }
        }
        let mut props = BTreeMap::new();
        let mut required = BTreeSet::new();
        let closed = self.object_shape(s, &mut props, &mut required);
        if let Some(object) = v.as_object()
            && (closed || !required.is_empty())
        {
            let keys: BTreeSet<&str> = object.keys().map(String::as_str).collect();
            let missing: Vec<_> = required.difference(&keys).collect();
            if !missing.is_empty() {
                return Err(format!("{at}: required {missing:?} missing from {v}"));
            }
            let extra: Vec<_> = keys.iter().filter(|k| !props.contains_key(*k)).collect();
            if closed && !extra.is_empty() {
                let known: Vec<_> = props.keys().collect();
                return Err(format!("{at}: {extra:?} not in the schema ({known:?})"));
            }
            for (k, value) in object {
                if let Some(p) = props.get(k.as_str()) {
                    self.check(p, value, &format!("{at}.{k}"))?;
                }
            }
        }
        Ok(())
    }
}

/// Calls the server and checks the answer against the document.
struct Checker<'a> {
    base: &'a str,
    http: &'a reqwest::Client,
    doc: &'a Value,
    seen: BTreeSet<(String, String)>,
}

impl Checker<'_> {
    /// `template` is the documented path, `path` the one called (with ids and query).
    async fn call(
        &mut self,
        token: Option<&str>,
        method: Method,
        template: &str,
        path: &str,
        body: Option<Value>,
        want: StatusCode,
    ) -> Value {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        self.check(method, template, want, resp).await
    }

    async fn check(
        &mut self,
        method: Method,
        template: &str,
        want: StatusCode,
        resp: reqwest::Response,
    ) -> Value {
        let status = resp.status();
        let v: Value = resp.json().await.unwrap();
        let what = format!("{method} {template}");
        assert_eq!(status, want, "{what}: {v}");
        let m = method.as_str().to_lowercase();
        let schema = &self.doc["paths"][template][&m]["responses"][status.as_str()]["content"]["application/json"]
            ["schema"];
        assert!(schema.is_object(), "{what}: no schema for {status}");
        if let Err(e) = Schemas(self.doc).check(schema, &v, "$") {
            panic!("{what} {status}: the answer does not match the document: {e}\n{v}");
        }
        self.seen.insert((m, template.to_string()));
        v
    }
}

const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52, 0, 0, 0,
    1, 0, 0, 0, 1, 8, 6, 0, 0, 0, 0x1f, 0x15, 0xc4, 0x89, 0, 0, 0, 0x0a, 0x49, 0x44, 0x41, 0x54,
    0x78, 0x9c, 0x63, 0, 1, 0, 0, 5, 0, 1, 0x0d, 0x0a, 0x2d, 0xb4, 0, 0, 0, 0, 0x49, 0x45, 0x4e,
    0x44, 0xae, 0x42, 0x60, 0x82,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_match_the_documented_schemas() {
    let app = spawn_app_with(
        Options::new(Backend::Sqlite).configure(|c| c.auth.admins = vec!["medecin:1".into()]),
    )
    .await;
    let doc = document(&app.base, &app.http).await;
    let doctor = app.token(Role::Medecin, 1);
    let patient = app.token(Role::Patient, 2);
    let d = Some(doctor.as_str());
    let p = Some(patient.as_str());
    let mut c = Checker {
        base: &app.base,
        http: &app.http,
        doc: &doc,
        seen: BTreeSet::new(),
    };
    const CONVS: &str = "/api/messaging/conversations";
    const CONV: &str = "/api/messaging/conversations/{id}";
    const MSGS: &str = "/api/messaging/conversations/{id}/messages";
    const SESSIONS: &str = "/api/messaging/webrtc/sessions";
    const SESSION: &str = "/api/messaging/webrtc/sessions/{id}";

    // Messaging.
    let create = json!({"type": "private", "participants": [{"role": "patient", "id": 2}]});
    let v = c
        .call(
            d,
            Method::POST,
            CONVS,
            CONVS,
            Some(create.clone()),
            StatusCode::CREATED,
        )
        .await;
    let conv = v["data"]["conversation"]["id"].as_i64().unwrap();
    c.call(d, Method::POST, CONVS, CONVS, Some(create), StatusCode::OK)
        .await;
    c.call(d, Method::GET, CONVS, CONVS, None, StatusCode::OK)
        .await;
    let conv_path = format!("{CONVS}/{conv}");
    c.call(d, Method::GET, CONV, &conv_path, None, StatusCode::OK)
        .await;
    let msgs = format!("{conv_path}/messages");
    let send = json!({"contenu": "bonjour", "type_message": "texte", "client_message_id": "m-1",
                      "metadata": {"k": [1, 2]}});
    let v = c
        .call(
            p,
            Method::POST,
            MSGS,
            &msgs,
            Some(send.clone()),
            StatusCode::CREATED,
        )
        .await;
    let message = v["data"]["message"]["id"].as_i64().unwrap();
    c.call(p, Method::POST, MSGS, &msgs, Some(send), StatusCode::OK)
        .await;
    let part = reqwest::multipart::Part::bytes(PNG.to_vec())
        .file_name("scan.png")
        .mime_str("image/png")
        .unwrap();
    let resp = app
        .http
        .post(format!("{}{conv_path}/attachments", app.base))
        .bearer_auth(&doctor)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    let v = c
        .check(
            Method::POST,
            "/api/messaging/conversations/{id}/attachments",
            StatusCode::CREATED,
            resp,
        )
        .await;
    let attachment = v["data"]["attachment"]["id"].as_str().unwrap().to_string();
    let send = json!({"contenu": "", "type_message": "image", "attachmentId": attachment});
    c.call(
        d,
        Method::POST,
        MSGS,
        &msgs,
        Some(send),
        StatusCode::CREATED,
    )
    .await;
    let v = c
        .call(
            d,
            Method::GET,
            MSGS,
            &format!("{msgs}?limit=10"),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["data"]["messages"].as_array().unwrap().len(), 2, "{v}");
    c.call(
        d,
        Method::GET,
        MSGS,
        &format!("{msgs}?before=1"),
        None,
        StatusCode::OK,
    )
    .await; // an empty page: null ids
    c.call(
        d,
        Method::POST,
        "/api/messaging/conversations/{id}/read",
        &format!("{conv_path}/read"),
        Some(json!({"messageId": message})),
        StatusCode::OK,
    )
    .await;
    let v = c
        .call(d, Method::GET, CONVS, CONVS, None, StatusCode::OK)
        .await;
    assert!(
        v["data"]["conversations"][0]["last_message"].is_object(),
        "{v}"
    );

    // Consultations.
    let body = json!({"conversation_id": conv, "session_type": "audio_video",
                      "initiator": {"userType": "medecin", "userId": 1}});
    let v = c
        .call(
            d,
            Method::POST,
            SESSIONS,
            SESSIONS,
            Some(body.clone()),
            StatusCode::CREATED,
        )
        .await;
    assert!(v["data"]["conferenceLink"].is_object(), "{v}");
    let session = v["data"]["session"]["id"].as_i64().unwrap();
    let code = v["data"]["conferenceLink"]["joinCode"]
        .as_str()
        .unwrap()
        .to_string();
    let v = c
        .call(
            d,
            Method::POST,
            SESSIONS,
            &format!("{SESSIONS}?generate_conference_link=false"),
            Some(body),
            StatusCode::CREATED,
        )
        .await;
    assert!(v["data"].get("conferenceLink").is_none(), "{v}");
    let session_path = format!("{SESSIONS}/{session}");
    c.call(p, Method::GET, SESSION, &session_path, None, StatusCode::OK)
        .await;
    c.call(
        d,
        Method::GET,
        "/api/messaging/webrtc/sessions/{id}/stats",
        &format!("{session_path}/stats"),
        None,
        StatusCode::OK,
    )
    .await;
    const VALIDATE: &str = "/api/messaging/webrtc/validate-code";
    let v = c
        .call(
            p,
            Method::POST,
            VALIDATE,
            VALIDATE,
            Some(json!({"code": code})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["data"]["isValid"], true, "{v}");
    let v = c
        .call(
            p,
            Method::POST,
            VALIDATE,
            VALIDATE,
            Some(json!({"code": "000000", "sessionId": session})),
            StatusCode::OK,
        )
        .await;
    assert_eq!(v["data"]["isValid"], false, "{v}");
    const ICE: &str = "/api/messaging/webrtc/ice-servers";
    c.call(p, Method::GET, ICE, ICE, None, StatusCode::OK).await;
    c.call(
        d,
        Method::GET,
        "/api/messaging/webrtc/sessions/{id}/recordings",
        &format!("{session_path}/recordings"),
        None,
        StatusCode::OK,
    )
    .await;
    // Nobody connected: the recording cannot start (an error body).
    c.call(
        d,
        Method::POST,
        "/api/messaging/webrtc/sessions/{id}/recording",
        &format!("{session_path}/recording"),
        Some(json!({"consent": true})),
        StatusCode::CONFLICT,
    )
    .await;
    c.call(
        d,
        Method::POST,
        "/api/messaging/webrtc/sessions/{id}/end",
        &format!("{session_path}/end"),
        None,
        StatusCode::OK,
    )
    .await;
    c.call(p, Method::GET, SESSION, &session_path, None, StatusCode::OK)
        .await;

    // Operations and errors.
    c.call(
        d,
        Method::GET,
        "/api/messaging/nodes",
        "/api/messaging/nodes",
        None,
        StatusCode::OK,
    )
    .await;
    c.call(
        p,
        Method::GET,
        "/api/messaging/nodes",
        "/api/messaging/nodes",
        None,
        StatusCode::FORBIDDEN,
    )
    .await;
    // The audit trail: records (actors, targets, nullable fields), errors.
    let audit = c
        .call(
            d,
            Method::GET,
            "/api/messaging/audit",
            "/api/messaging/audit?limit=2",
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        audit["data"]["records"].as_array().map(Vec::len),
        Some(2),
        "{audit}"
    );
    c.call(
        d,
        Method::GET,
        "/api/messaging/audit",
        "/api/messaging/audit?actor_role=system",
        None,
        StatusCode::OK,
    )
    .await;
    c.call(
        p,
        Method::GET,
        "/api/messaging/audit",
        "/api/messaging/audit",
        None,
        StatusCode::FORBIDDEN,
    )
    .await;
    c.call(
        d,
        Method::GET,
        "/api/messaging/audit",
        "/api/messaging/audit?limit=9999",
        None,
        StatusCode::BAD_REQUEST,
    )
    .await;
    c.call(
        None,
        Method::GET,
        "/healthz",
        "/healthz",
        None,
        StatusCode::OK,
    )
    .await;
    c.call(
        None,
        Method::GET,
        "/readyz",
        "/readyz",
        None,
        StatusCode::OK,
    )
    .await;
    c.call(
        None,
        Method::GET,
        CONVS,
        CONVS,
        None,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    c.call(
        d,
        Method::GET,
        CONV,
        &format!("{CONVS}/999999"),
        None,
        StatusCode::NOT_FOUND,
    )
    .await;
    c.call(
        d,
        Method::POST,
        CONVS,
        CONVS,
        Some(json!({"type": "private"})),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(c.seen.len() >= 18, "{:?}", c.seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_sign_in_answers_match_the_documented_schemas() {
    let app =
        spawn_app_with(Options::new(Backend::Sqlite).configure(|c| c.auth.jwt_secret = None)).await;
    let doc = document(&app.base, &app.http).await;
    let mut c = Checker {
        base: &app.base,
        http: &app.http,
        doc: &doc,
        seen: BTreeSet::new(),
    };
    const DEV: &str = "/api/dev/token";
    c.call(None, Method::GET, DEV, DEV, None, StatusCode::OK)
        .await;
    c.call(
        None,
        Method::POST,
        DEV,
        DEV,
        Some(json!({"role": "patient", "id": 5, "name": "Ana"})),
        StatusCode::OK,
    )
    .await;
    c.call(
        None,
        Method::POST,
        DEV,
        DEV,
        Some(json!({"role": "patient", "id": 0})),
        StatusCode::BAD_REQUEST,
    )
    .await;
}

/// The schema check is not vacuous: undocumented, missing, mistyped keys and values outside an
/// enum fail it, through `$ref`, `allOf` and nullable fields.
#[test]
fn the_schema_check_refuses_what_the_document_does_not_say() {
    use utoipa::OpenApi;
    let doc = serde_json::to_value(relais::http::ApiDoc::openapi()).unwrap();
    let s = Schemas(&doc);
    let schema = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
    let ok = |name: &str, v: Value| {
        s.check(&schema(name), &v, "$")
            .unwrap_or_else(|e| panic!("{name} should accept {v}: {e}"));
    };
    let refused = |name: &str, v: Value| {
        assert!(
            s.check(&schema(name), &v, "$").is_err(),
            "{name} should refuse {v}"
        );
    };
    ok("Readiness", json!({"status": "ready", "database": "ok"}));
    refused(
        "Readiness",
        json!({"status": "ready", "database": "ok", "x": 1}),
    );
    refused("Readiness", json!({"status": "ready"}));
    refused("Readiness", json!({"status": "nope", "database": "ok"}));
    ok(
        "Pagination",
        json!({"has_more": false, "oldest_id": null, "newest_id": null}),
    );
    refused("Pagination", json!({"has_more": false, "newest_id": null}));
    refused(
        "Pagination",
        json!({"has_more": false, "oldest_id": "1", "newest_id": 2}),
    );
    let session = json!({
        "id": 1, "conversation_id": 2, "session_type": "audio_video", "statut": "initiating",
        "waiting_room": true,
        "created_by": {"userId": 79, "userType": "medecin"},
        "created_at": "2026-01-01T00:00:00.000Z", "started_at": null, "ended_at": null,
        "end_reason": null, "code_expires_at": "2026-01-01T00:00:00.000Z", "node_id": null,
        "moved_from": null, "moved_at": null, "participants": [],
    });
    ok("SessionDetailView", session.clone());
    let mut without_id = session.clone();
    without_id.as_object_mut().unwrap().remove("id");
    refused("SessionDetailView", without_id);
    let mut bad_person = session.clone();
    bad_person["created_by"]["role"] = json!("medecin");
    refused("SessionDetailView", bad_person);
    let mut bad_participant = session;
    bad_participant["participants"] = json!([{"userId": 1}]);
    refused("SessionDetailView", bad_participant);
    ok(
        "Success_ReadMarkerData",
        json!({"success": true, "data": {"conversationId": 1, "messageId": 2}}),
    );
    refused(
        "Success_ReadMarkerData",
        json!({"success": true, "data": {"conversation_id": 1, "messageId": 2}}),
    );
    refused(
        "WebrtcSuccess_IceServersData",
        json!({"status": "error", "data": {"iceServers": [], "ttl": 0, "expiresAt": null}}),
    );
    ok(
        "WebrtcSuccess_IceServersData",
        json!({"status": "success", "data": {"iceServers": [], "ttl": 0, "expiresAt": null}}),
    );
}
