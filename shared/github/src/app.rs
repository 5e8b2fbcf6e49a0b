//! The GitHub App: its settings, and octocrab clients per installation.
//!
//! octocrab signs the App JWT with jsonwebtoken (RS256, issued 60 s in the past, expiring
//! within 10 minutes) and exchanges it for an installation token, which the installation's
//! client caches until shortly before it expires; one client per installation is kept, so the
//! cache lives as long as the process. Rate limiting (403/429 with `Retry-After`, or an
//! exhausted `X-RateLimit-Remaining`) is waited out and retried by octocrab's retry layer;
//! 5xx answers are retried too. What still fails is an error the caller retries later: work
//! is never dropped.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use octocrab::Octocrab;
use octocrab::models::{AppId, InstallationId};
use octocrab::service::middleware::retry::{NoOpRateLimitMetrics, RetryConfig};
use serde_json::Value;

/// The public API unless `CONVERGE_GITHUB_API_URL` says otherwise (GitHub Enterprise, a fake).
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// Retries of one request on rate limiting or a server error.
const MAX_RETRIES: usize = 5;

/// Why the GitHub App cannot be used or a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GithubError {
    /// A setting is missing or unusable.
    #[error("GitHub App configuration: {0}")]
    Config(String),
    /// GitHub answered with an error status.
    #[error("GitHub answered {status}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// GitHub's message.
        message: String,
    },
    /// GitHub could not be reached (or the answer could not be read).
    #[error("GitHub unreachable: {0}")]
    Transport(String),
    /// The App's private key has not been put into its secret yet (or cannot be used): no
    /// call can be signed until it is.
    #[error("App key not set: {0}")]
    KeyNotSet(String),
}

/// The App's settings. The private key never appears in `Debug` output.
#[derive(Clone)]
pub struct GithubSettings {
    /// `CONVERGE_GITHUB_APP_ID`.
    pub app_id: u64,
    /// The App's private key, PEM (`CONVERGE_GITHUB_APP_PRIVATE_KEY_PATH` or
    /// `CONVERGE_GITHUB_APP_PRIVATE_KEY`); empty until read from Secrets Manager when only
    /// `private_key_secret_arn` is given.
    pub private_key_pem: String,
    /// `CONVERGE_GITHUB_APP_PRIVATE_KEY_SECRET_ARN`: the key is read from Secrets Manager.
    pub private_key_secret_arn: Option<String>,
    /// `CONVERGE_GITHUB_API_URL`.
    pub api_url: String,
    /// Installation used for intents that carry none (`CONVERGE_GITHUB_INSTALLATION_ID`).
    pub default_installation: Option<u64>,
    /// Profile check names → the names CI reports on GitHub (`CONVERGE_GITHUB_CHECK_MAP`,
    /// `lint=ci/lint,unit_tests=ci/test`; unmapped names are looked up as they are).
    pub check_map: BTreeMap<String, String>,
    /// Also publish a commit status beside the check run (`CONVERGE_GITHUB_PUBLISH_STATUS`).
    pub publish_status: bool,
}

impl std::fmt::Debug for GithubSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubSettings")
            .field("app_id", &self.app_id)
            .field("private_key_pem", &"<redacted>")
            .field("private_key_secret_arn", &self.private_key_secret_arn)
            .field("api_url", &self.api_url)
            .field("default_installation", &self.default_installation)
            .field("check_map", &self.check_map)
            .field("publish_status", &self.publish_status)
            .finish()
    }
}

impl GithubSettings {
    /// Reads the settings; `Ok(None)` when no App is configured (`CONVERGE_GITHUB_APP_ID`
    /// unset), an error naming the variable when one is unusable.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<GithubSettings>, GithubError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let Some(app_id) = get("CONVERGE_GITHUB_APP_ID") else {
            return Ok(None);
        };
        let app_id = app_id.parse::<u64>().map_err(|_| {
            GithubError::Config(format!(
                "CONVERGE_GITHUB_APP_ID must be a number, got '{app_id}'"
            ))
        })?;
        let private_key_secret_arn = get("CONVERGE_GITHUB_APP_PRIVATE_KEY_SECRET_ARN");
        let private_key_pem = match (
            get("CONVERGE_GITHUB_APP_PRIVATE_KEY_PATH"),
            lookup("CONVERGE_GITHUB_APP_PRIVATE_KEY"),
        ) {
            (Some(path), _) => std::fs::read_to_string(&path).map_err(|e| {
                GithubError::Config(format!(
                    "cannot read CONVERGE_GITHUB_APP_PRIVATE_KEY_PATH ({path}): {e}"
                ))
            })?,
            (None, Some(pem)) if !pem.trim().is_empty() => pem,
            _ if private_key_secret_arn.is_some() => String::new(),
            _ => {
                return Err(GithubError::Config(
                    "CONVERGE_GITHUB_APP_ID is set but no private key is: set CONVERGE_GITHUB_APP_PRIVATE_KEY_PATH, CONVERGE_GITHUB_APP_PRIVATE_KEY or CONVERGE_GITHUB_APP_PRIVATE_KEY_SECRET_ARN".to_owned(),
                ));
            }
        };
        let default_installation = get("CONVERGE_GITHUB_INSTALLATION_ID")
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    GithubError::Config(format!(
                        "CONVERGE_GITHUB_INSTALLATION_ID must be a number, got '{v}'"
                    ))
                })
            })
            .transpose()?;
        let check_map = parse_check_map(&get("CONVERGE_GITHUB_CHECK_MAP").unwrap_or_default())?;
        let publish_status = match get("CONVERGE_GITHUB_PUBLISH_STATUS").as_deref() {
            None | Some("0" | "false" | "no") => false,
            Some("1" | "true" | "yes") => true,
            Some(other) => {
                return Err(GithubError::Config(format!(
                    "CONVERGE_GITHUB_PUBLISH_STATUS must be 1 or 0, got '{other}'"
                )));
            }
        };
        Ok(Some(GithubSettings {
            app_id,
            private_key_pem,
            private_key_secret_arn,
            api_url: get("CONVERGE_GITHUB_API_URL").unwrap_or_else(|| DEFAULT_API_URL.to_owned()),
            default_installation,
            check_map,
            publish_status,
        }))
    }
}

/// `lint=ci/lint,unit_tests=ci/test` → {lint: ci/lint, unit_tests: ci/test}.
pub fn parse_check_map(text: &str) -> Result<BTreeMap<String, String>, GithubError> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| match entry.split_once('=') {
            Some((profile, github)) if !profile.trim().is_empty() && !github.trim().is_empty() => {
                Ok((profile.trim().to_owned(), github.trim().to_owned()))
            }
            _ => Err(GithubError::Config(format!(
                "CONVERGE_GITHUB_CHECK_MAP entries are name=github-name, got '{entry}'"
            ))),
        })
        .collect()
}

/// The App, and one client per installation.
pub struct GithubApp {
    /// The client that authenticates as the App, replaced when the private key rotates; or
    /// why there is none yet (the key's secret is empty or unreadable, or not a key).
    app: std::sync::RwLock<Result<Octocrab, String>>,
    /// Shared, not cloned: a clone of an `Octocrab` copies its token cache empty, and each
    /// would mint a token of its own (a call to GitHub before every call).
    installations: Mutex<HashMap<u64, Arc<Octocrab>>>,
    settings: GithubSettings,
}

impl std::fmt::Debug for GithubApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubApp")
            .field("settings", &self.settings)
            .finish()
    }
}

impl GithubApp {
    /// Builds the App client. Must run inside a Tokio runtime.
    pub fn new(settings: GithubSettings) -> Result<Arc<GithubApp>, GithubError> {
        let app = app_client(&settings, &settings.private_key_pem)?;
        Ok(Arc::new(GithubApp {
            app: std::sync::RwLock::new(Ok(app)),
            installations: Mutex::new(HashMap::new()),
            settings,
        }))
    }

    /// The App before its key can be used (`why`: the secret is empty, unreadable, or holds
    /// no RSA key): every call fails with [`GithubError::KeyNotSet`] until
    /// [`GithubApp::replace_key`] hands it a key. The process stays up meanwhile.
    pub fn awaiting_key(settings: GithubSettings, why: String) -> Arc<GithubApp> {
        Arc::new(GithubApp {
            app: std::sync::RwLock::new(Err(why)),
            installations: Mutex::new(HashMap::new()),
            settings,
        })
    }

    /// A new key could not be used (`why`): while the App still waits for its first key, that
    /// is now why it waits; a key in use stays in use.
    pub fn key_refused(&self, why: String) {
        let mut app = self
            .app
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if app.is_err() {
            *app = Err(why);
        }
    }

    /// Why the App cannot sign calls yet (`None`: its key is in use).
    pub fn key_problem(&self) -> Option<String> {
        self.app
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .err()
            .map(|why| GithubError::KeyNotSet(why.clone()).to_string())
    }

    /// Signs with `private_key_pem` from now on (a rotated key). The installation clients are
    /// dropped with their tokens, so the next call of each mints a token with the new key.
    /// A key that is not an RSA PEM key is refused and the current one kept.
    pub fn replace_key(&self, private_key_pem: &str) -> Result<(), GithubError> {
        let app = app_client(&self.settings, private_key_pem)?;
        *self
            .app
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Ok(app);
        self.installations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        Ok(())
    }

    fn app_client(&self) -> Result<Octocrab, GithubError> {
        self.app
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .map_err(GithubError::KeyNotSet)
    }

    /// The settings.
    pub fn settings(&self) -> &GithubSettings {
        &self.settings
    }

    /// The client of an installation (its token cache is kept with it).
    pub fn installation(&self, id: u64) -> Result<Arc<Octocrab>, GithubError> {
        let mut clients = self
            .installations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients.get(&id) {
            return Ok(client.clone());
        }
        let client = Arc::new(
            self.app_client()?
                .installation(InstallationId(id))
                .map_err(|e| GithubError::Config(e.to_string()))?,
        );
        clients.insert(id, client.clone());
        Ok(client)
    }

    /// Authenticates as the App with its JWT (`GET /app`) and answers the App's slug: the
    /// check of the App id and private key that needs no installation.
    pub async fn check_app(&self) -> Result<String, GithubError> {
        match call(&self.app_client()?, "GET", "/app", None).await? {
            (200, body) => Ok(body["slug"].as_str().unwrap_or_default().to_owned()),
            (status, body) => Err(GithubError::Api {
                status,
                message: message_of(&body),
            }),
        }
    }

    /// Exchanges the App JWT for a token of `installation` (what `converge doctor` checks).
    pub async fn check_credentials(&self, installation: u64) -> Result<(), GithubError> {
        self.installation(installation)?
            .installation_token()
            .await
            .map(|_| ())
            .map_err(api_error)
    }
}

/// The client that authenticates as the App with `private_key_pem`.
fn app_client(settings: &GithubSettings, private_key_pem: &str) -> Result<Octocrab, GithubError> {
    let key = octocrab::jsonwebtoken::EncodingKey::from_rsa_pem(private_key_pem.as_bytes())
        .map_err(|e| {
            GithubError::Config(format!("the App private key is not an RSA PEM key: {e}"))
        })?;
    Octocrab::builder()
        .base_uri(settings.api_url.as_str())
        .map_err(|e| GithubError::Config(format!("CONVERGE_GITHUB_API_URL: {e}")))?
        .add_retry_config(RetryConfig::HandleRateLimits {
            metrics: Arc::new(NoOpRateLimitMetrics),
            max_retries: MAX_RETRIES,
            min_wait_seconds: 1,
            // A 403 without rate-limit headers is a real refusal (missing permission).
            retry_on_forbidden: false,
        })
        .app(AppId(settings.app_id), key)
        .build()
        .map_err(|e| GithubError::Config(e.to_string()))
}

/// One REST call through an installation client: the status and the JSON body (`Null` when
/// empty). Error statuses are returned, not raised: callers map them to their port's errors.
pub async fn call(
    client: &Octocrab,
    method: &str,
    route: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), GithubError> {
    use tracing::Instrument;
    let span = tracing::info_span!("github.call", method, route, status = tracing::field::Empty);
    let answer = send(client, method, route, body)
        .instrument(span.clone())
        .await;
    if let Ok((status, _)) = &answer {
        span.record("status", status);
    }
    answer
}

async fn send(
    client: &Octocrab,
    method: &str,
    route: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), GithubError> {
    let response = match method {
        "GET" => client._get(route).await,
        "POST" => client._post(route, body).await,
        "PATCH" => client._patch(route, body).await,
        "DELETE" => client._delete(route, body).await,
        other => {
            return Err(GithubError::Transport(format!(
                "unsupported method {other}"
            )));
        }
    }
    .map_err(api_error)?;
    let status = response.status().as_u16();
    let text = client.body_to_string(response).await.map_err(api_error)?;
    let value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok((status, value))
}

fn api_error(error: octocrab::Error) -> GithubError {
    match error {
        octocrab::Error::GitHub { source, .. } => GithubError::Api {
            status: source.status_code.as_u16(),
            message: source.message,
        },
        other => GithubError::Transport(other.to_string()),
    }
}

/// GitHub's `message` of an error body.
pub fn message_of(body: &Value) -> String {
    body.get("message")
        .and_then(Value::as_str)
        .unwrap_or("no message")
        .to_owned()
}
