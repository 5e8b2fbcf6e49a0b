//! The HTTPS API as the operator commands use it: one request at a time, the key in
//! `x-api-key`, answers as JSON, and every failure turned into one line a person can act on.

use std::time::Duration;

use serde_json::Value;

/// How an operator command failed; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The API answered with its error envelope.
    #[error("{code}: {message} (HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The envelope's code (`not_found`, `forbidden`, …).
        code: String,
        /// The envelope's message.
        message: String,
    },
    /// The API could not be reached, or did not answer like the API.
    #[error("{0}")]
    Network(String),
    /// The command ran and what it checked failed (a blocked validation, a failing doctor
    /// check): exit 3.
    #[error("{0}")]
    CheckFailed(String),
    /// Anything else (a local store operation, a file).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl CliError {
    /// The process exit code: 3 for a failed check, 1 otherwise (2 is clap's, for usage).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::CheckFailed(_) => 3,
            _ => 1,
        }
    }
}

/// Where the API is and who is calling.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    key: Option<String>,
    transport: Transport,
}

/// How requests travel: over the network, or straight into the API's router in this process
/// (`--local`).
#[derive(Clone)]
enum Transport {
    Http(reqwest::Client),
    InProcess(axum::Router),
}

/// A request before it is sent, whatever the transport.
struct Call {
    method: &'static str,
    url: String,
    body: Option<Value>,
}

impl ApiClient {
    /// A client for the API at `base` (`https://…` or `http://…`, no trailing `/v1`).
    pub fn new(base: &str, key: Option<String>) -> Result<ApiClient, CliError> {
        let base = base.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(CliError::Network(format!(
                "--api-url must start with https:// or http://, got '{base}'"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("converge-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Network(format!("cannot set up HTTPS: {e}")))?;
        Ok(ApiClient {
            base,
            key: key.filter(|k| !k.trim().is_empty()),
            transport: Transport::Http(http),
        })
    }

    /// A client that hands requests to `router` in this process.
    pub fn in_process(router: axum::Router) -> ApiClient {
        ApiClient {
            base: "local".to_owned(),
            key: None,
            transport: Transport::InProcess(router),
        }
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `{base}/v1{path}` with `query` (pairs whose value is `None` are left out).
    fn url(&self, path: &str, query: &[(&str, Option<String>)]) -> String {
        let query: Vec<String> = query
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
            .collect();
        let url = format!("{}/v1{path}", self.base);
        if query.is_empty() {
            url
        } else {
            format!("{url}?{}", query.join("&"))
        }
    }

    /// `GET /v1{path}` with `query` (pairs whose value is `None` are left out).
    pub async fn get(
        &self,
        path: &str,
        query: &[(&str, Option<String>)],
    ) -> Result<Value, CliError> {
        let url = self.url(path, query);
        self.send(Call {
            method: "GET",
            url,
            body: None,
        })
        .await
    }

    /// `GET /v1{path}` whose answer is a file: written to `out` as it arrives (the whole
    /// answer is never held). Returns the bytes written.
    pub async fn download(
        &self,
        path: &str,
        query: &[(&str, Option<String>)],
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<u64, CliError> {
        use futures_util::StreamExt;
        let url = self.url(path, query);
        let write = |out: &mut (dyn std::io::Write + Send), bytes: &[u8]| {
            out.write_all(bytes)
                .map_err(|e| CliError::Other(anyhow::anyhow!("writing the download: {e}")))
        };
        let mut written = 0u64;
        match &self.transport {
            Transport::Http(http) => {
                let mut request = http.get(&url);
                if let Some(key) = &self.key {
                    request = request.header("x-api-key", key);
                }
                let mut response = request.send().await.map_err(|e| self.network_error(&e))?;
                let status = response.status().as_u16();
                if !(200..300).contains(&status) {
                    let text = response.text().await.map_err(|e| self.network_error(&e))?;
                    return Err(self.answer(status, &text).err().unwrap_or_else(|| {
                        CliError::Network(format!("{} answered HTTP {status}", self.base))
                    }));
                }
                while let Some(chunk) =
                    response.chunk().await.map_err(|e| self.network_error(&e))?
                {
                    write(out, &chunk)?;
                    written += chunk.len() as u64;
                }
            }
            Transport::InProcess(router) => {
                use tower::ServiceExt;
                let request = axum::http::Request::builder()
                    .method("GET")
                    .uri(url.trim_start_matches("local"))
                    .body(axum::body::Body::empty())
                    .map_err(|e| CliError::Other(anyhow::anyhow!("bad request: {e}")))?;
                let response = router
                    .clone()
                    .oneshot(request)
                    .await
                    .map_err(|e| CliError::Other(anyhow::anyhow!("{e}")))?;
                let status = response.status().as_u16();
                let mut stream = response.into_body().into_data_stream();
                if !(200..300).contains(&status) {
                    let mut text = Vec::new();
                    while let Some(chunk) = stream.next().await {
                        text.extend_from_slice(
                            &chunk.map_err(|e| CliError::Other(anyhow::anyhow!("{e}")))?,
                        );
                    }
                    return Err(self
                        .answer(status, &String::from_utf8_lossy(&text))
                        .err()
                        .unwrap_or_else(|| CliError::Other(anyhow::anyhow!("HTTP {status}"))));
                }
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| {
                        CliError::Other(anyhow::anyhow!("the download stopped: {e}"))
                    })?;
                    write(out, &chunk)?;
                    written += chunk.len() as u64;
                }
            }
        }
        out.flush()
            .map_err(|e| CliError::Other(anyhow::anyhow!("writing the download: {e}")))?;
        Ok(written)
    }

    /// `POST /v1{path}` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.send(Call {
            method: "POST",
            url: format!("{}/v1{path}", self.base),
            body: Some(body.clone()),
        })
        .await
    }

    /// `GET {path}` outside `/v1` (health).
    pub async fn get_raw(&self, path: &str) -> Result<Value, CliError> {
        self.send(Call {
            method: "GET",
            url: format!("{}{path}", self.base),
            body: None,
        })
        .await
    }

    async fn send(&self, call: Call) -> Result<Value, CliError> {
        let (status, text) = match &self.transport {
            Transport::Http(http) => {
                let mut request = match call.method {
                    "POST" => http.post(&call.url),
                    _ => http.get(&call.url),
                };
                if let Some(body) = &call.body {
                    request = request.json(body);
                }
                if let Some(key) = &self.key {
                    request = request.header("x-api-key", key);
                }
                let response = request.send().await.map_err(|e| self.network_error(&e))?;
                let status = response.status().as_u16();
                let text = response.text().await.map_err(|e| self.network_error(&e))?;
                (status, text)
            }
            Transport::InProcess(router) => in_process(router, call).await?,
        };
        self.answer(status, &text)
    }

    /// An answer read: its JSON body when the status is a success, else the API's error.
    fn answer(&self, status: u16, text: &str) -> Result<Value, CliError> {
        let body: Value = serde_json::from_str(text).map_err(|_| {
            CliError::Network(format!(
                "{} answered HTTP {status} with something that is not the Converge API (is --api-url right?)",
                self.base
            ))
        })?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let code = body["error"]["code"].as_str().unwrap_or("error").to_owned();
        let mut message = body["error"]["message"]
            .as_str()
            .unwrap_or("no message")
            .to_owned();
        if status == 401 {
            message.push_str(" (set --api-key or CONVERGE_API_KEY)");
        }
        Err(CliError::Api {
            status,
            code,
            message,
        })
    }

    /// One line with the likely cause: the URL, the certificate, or the timeout.
    fn network_error(&self, e: &reqwest::Error) -> CliError {
        let chain = {
            let mut parts = vec![e.to_string()];
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                parts.push(inner.to_string());
                source = inner.source();
            }
            parts.join(": ")
        };
        let hint = if chain.contains("certificate")
            || chain.contains("tls")
            || chain.contains("TLS")
        {
            "the server's TLS certificate was not accepted (is the URL's host the certificate's?)"
        } else if e.is_timeout() {
            "no answer in time (is the API up and reachable from here?)"
        } else if e.is_connect() {
            "cannot connect (check --api-url / CONVERGE_API_URL, and that the API is running)"
        } else {
            "the request failed"
        };
        CliError::Network(format!("{}: {hint} [{chain}]", self.base))
    }
}

/// Hands `call` to the router in this process and reads the whole answer.
async fn in_process(router: &axum::Router, call: Call) -> Result<(u16, String), CliError> {
    use tower::ServiceExt;
    let path = call.url.trim_start_matches("local").to_owned();
    let body = call
        .body
        .map(|b| axum::body::Body::from(b.to_string()))
        .unwrap_or_else(axum::body::Body::empty);
    let request = axum::http::Request::builder()
        .method(call.method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body)
        .map_err(|e| CliError::Other(anyhow::anyhow!("bad request: {e}")))?;
    let response = router
        .clone()
        .oneshot(request)
        .await
        .map_err(|e| CliError::Other(anyhow::anyhow!("{e}")))?;
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024)
        .await
        .map_err(|e| CliError::Other(anyhow::anyhow!("reading the answer: {e}")))?;
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

pub use converge_http::encode_component as encode;
