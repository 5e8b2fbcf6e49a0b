//! A Lambda Runtime API for one function process: a function's real binary (built on
//! `lambda_runtime`) is started with `AWS_LAMBDA_RUNTIME_API` pointing here, takes the events a
//! test invokes it with from `/runtime/invocation/next`, and posts its answers back, as it
//! would on AWS or under `sam local invoke`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

const API: &str = "/2018-06-01/runtime";

/// What the function answered: its response, or the error it posted.
type Answer = Result<Value, Value>;
/// An invocation: the event, and where its answer goes.
type Invocation = (Value, oneshot::Sender<Answer>);

/// The runtime API, and a way to invoke the function that polls it.
pub struct LambdaRuntime {
    address: SocketAddr,
    events: mpsc::Sender<Invocation>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Shared {
    events: Arc<tokio::sync::Mutex<mpsc::Receiver<Invocation>>>,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Answer>>>>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
}

impl LambdaRuntime {
    /// Serves the runtime API on a free loopback port.
    pub async fn start() -> LambdaRuntime {
        let (sender, receiver) = mpsc::channel(1);
        let shared = Shared {
            events: Arc::new(tokio::sync::Mutex::new(receiver)),
            waiting: Arc::default(),
            next_id: Arc::default(),
        };
        let app = Router::new()
            .route(&format!("{API}/invocation/next"), get(next))
            .route(&format!("{API}/invocation/{{id}}/response"), post(response))
            .route(&format!("{API}/invocation/{{id}}/error"), post(error))
            .route(&format!("{API}/init/error"), post(init_error))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        LambdaRuntime {
            address,
            events: sender,
            server,
        }
    }

    /// The environment a function process needs to find this runtime API, as Lambda sets it.
    pub fn environment(&self, function_name: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_LAMBDA_RUNTIME_API", self.address.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", function_name.to_owned()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".to_owned()),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{function_name}"),
            ),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "test-stream".to_owned()),
        ]
    }

    /// Hands `event` to the function and waits up to `patience` for its answer: `Ok` with the
    /// response, `Err` with the error the function posted (or a note that none came).
    pub async fn invoke(&self, event: Value, patience: Duration) -> Answer {
        let (answer, answered) = oneshot::channel();
        self.events
            .send((event, answer))
            .await
            .map_err(|_| Value::from("the runtime API stopped"))?;
        match tokio::time::timeout(patience, answered).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(Value::from("the invocation was dropped")),
            Err(_) => Err(Value::from(format!("no answer within {patience:?}"))),
        }
    }
}

impl Drop for LambdaRuntime {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn next(State(shared): State<Shared>) -> Response {
    let Some((event, answer)) = shared.events.lock().await.recv().await else {
        return StatusCode::GONE.into_response();
    };
    let id = format!(
        "request-{}",
        shared
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    shared.waiting.lock().unwrap().insert(id.clone(), answer);
    let mut headers = HeaderMap::new();
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 30_000;
    headers.insert(
        "lambda-runtime-aws-request-id",
        HeaderValue::from_str(&id).unwrap(),
    );
    headers.insert(
        "lambda-runtime-deadline-ms",
        HeaderValue::from(deadline as u64),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        HeaderValue::from_static("arn:aws:lambda:us-east-1:000000000000:function:test"),
    );
    headers.insert(
        "lambda-runtime-trace-id",
        HeaderValue::from_static("Root=1-00000000-000000000000000000000000"),
    );
    (headers, axum::Json(event)).into_response()
}

fn settle(shared: &Shared, id: &str, answer: Answer) -> StatusCode {
    match shared.waiting.lock().unwrap().remove(id) {
        Some(waiter) => {
            let _ = waiter.send(answer);
            StatusCode::ACCEPTED
        }
        None => StatusCode::NOT_FOUND,
    }
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| Value::from(body))
}

async fn response(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    body: String,
) -> StatusCode {
    settle(&shared, &id, Ok(json_of(&body)))
}

async fn error(State(shared): State<Shared>, Path(id): Path<String>, body: String) -> StatusCode {
    settle(&shared, &id, Err(json_of(&body)))
}

/// A function that could not start says why here before it exits; the test sees its
/// invocations go unanswered and this on its error output.
async fn init_error(body: String) -> StatusCode {
    eprintln!("the function could not start: {body}");
    StatusCode::ACCEPTED
}
