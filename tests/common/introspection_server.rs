//! An RFC 7662 introspection endpoint on 127.0.0.1:0 for tests: answers per token (default
//! `{"active": false}`), counts calls and the most in flight at once, records how the client
//! authenticated, and misbehaves on demand (slow, an HTTP error, a non-JSON answer). It also
//! serves RFC 8414 metadata naming `/introspect`, for discovery.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

#[derive(Clone, Debug, PartialEq)]
pub enum Behaviour {
    Answer,
    Status(u16),
    Html,
    /// JSON, but not an object.
    NotObject,
    /// The answer padded past mcp-authz's 64 KiB cap (still a valid, active answer).
    Huge,
}

/// One request as the endpoint saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub form: HashMap<String, String>,
}

#[derive(Default)]
pub struct IntroState {
    pub answers: Mutex<HashMap<String, Value>>,
    pub delay: Mutex<Duration>,
    pub behaviour: Mutex<Option<Behaviour>>,
    pub seen: Mutex<Vec<Seen>>,
    pub calls: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    /// The `issuer` its metadata names.
    pub issuer: Mutex<String>,
}

pub struct IntrospectionServer {
    pub addr: SocketAddr,
    pub url: String,
    pub state: Arc<IntroState>,
    task: tokio::task::JoinHandle<()>,
}

impl IntrospectionServer {
    pub async fn start() -> IntrospectionServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let url = format!("http://127.0.0.1:{}", addr.port());
        let state = Arc::new(IntroState::default());
        *state.issuer.lock().unwrap() = url.clone();
        let app = Router::new()
            .route("/introspect", post(introspect))
            .route("/.well-known/oauth-authorization-server", get(metadata))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        IntrospectionServer {
            addr,
            url,
            state,
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("{}/introspect", self.url)
    }

    pub fn answer(&self, token: &str, v: Value) {
        self.state
            .answers
            .lock()
            .unwrap()
            .insert(token.to_owned(), v);
    }

    pub fn set_delay(&self, d: Duration) {
        *self.state.delay.lock().unwrap() = d;
    }

    pub fn set_behaviour(&self, b: Behaviour) {
        *self.state.behaviour.lock().unwrap() = Some(b);
    }

    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Stop answering at all (connection refused).
    pub fn stop(&self) {
        self.task.abort();
    }
}

async fn metadata(State(s): State<Arc<IntroState>>) -> Response {
    let issuer = s.issuer.lock().unwrap().clone();
    let doc = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks"),
        "introspection_endpoint": format!("{issuer}/introspect")});
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.to_string(),
    )
        .into_response()
}

async fn introspect(
    State(s): State<Arc<IntroState>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    s.calls.fetch_add(1, Ordering::SeqCst);
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let text = |h| {
        headers
            .get(h)
            .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    s.seen.lock().unwrap().push(Seen {
        authorization: text(header::AUTHORIZATION),
        content_type: text(header::CONTENT_TYPE),
        form: form.clone(),
    });
    let delay = *s.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    s.in_flight.fetch_sub(1, Ordering::SeqCst);
    let behaviour = s
        .behaviour
        .lock()
        .unwrap()
        .clone()
        .unwrap_or(Behaviour::Answer);
    let answer = form
        .get("token")
        .and_then(|t| s.answers.lock().unwrap().get(t).cloned())
        .unwrap_or_else(|| json!({"active": false}));
    let json = [(header::CONTENT_TYPE, "application/json")];
    match behaviour {
        Behaviour::Answer => (json, answer.to_string()).into_response(),
        Behaviour::Status(code) => (
            StatusCode::from_u16(code).unwrap(),
            json,
            answer.to_string(),
        )
            .into_response(),
        Behaviour::Html => (
            [(header::CONTENT_TYPE, "text/html")],
            "<html>maintenance</html>",
        )
            .into_response(),
        Behaviour::NotObject => (json, "[true]").into_response(),
        Behaviour::Huge => {
            let mut big = answer;
            big["padding"] = Value::String("x".repeat(70 * 1024));
            (json, big.to_string()).into_response()
        }
    }
}
