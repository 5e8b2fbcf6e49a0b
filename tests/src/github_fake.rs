//! A GitHub fake: an HTTP server implementing the REST subset Converge uses, backed by real git
//! repositories on this machine, so merges, conflicts and diffs are git's own.
//!
//! Covered: App installation tokens (the App JWT is verified with the App's public key),
//! pulls, git refs (get, create, update — fast-forward only unless forced, protected branches
//! refused — delete), merges, compare, check runs, commit statuses. Every call is recorded
//! ([`GithubFake::calls`]); failures are injected on request ([`GithubFake::fail_next`]:
//! 500, or 403/429 with `Retry-After`) and answers can be slowed ([`GithubFake::set_delay`]).
//! [`GithubFake::send_webhook`] delivers signed webhooks like GitHub does.
//!
//! Repositories are ordinary git repositories whose HEAD is detached, so no branch is checked
//! out and every branch can move; tests build history in them with [`crate::git`].

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde::Deserialize;
use serde_json::{Value, json};

/// One request the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// HTTP method.
    pub method: String,
    /// Path (without the query).
    pub path: String,
    /// Status answered.
    pub status: u16,
}

/// A successful move of a branch through the refs API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    /// `owner/name`.
    pub repo: String,
    /// `heads/<branch>`.
    pub reference: String,
    /// Where it pointed.
    pub from: String,
    /// Where it points now.
    pub to: String,
}

/// A check run as the fake keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRun {
    /// Id.
    pub id: u64,
    /// `owner/name`.
    pub repo: String,
    /// Name.
    pub name: String,
    /// Commit.
    pub head_sha: String,
    /// `queued`, `in_progress`, `completed`.
    pub status: String,
    /// `success`, `failure`, … once completed.
    pub conclusion: Option<String>,
    /// The creator's id for it.
    pub external_id: Option<String>,
    /// `{title, summary}`.
    pub output: Value,
    /// How many times it was updated after creation.
    pub updates: u32,
    /// Every `status`/`conclusion` it had, in order (`in_progress`, `completed/success`, …).
    pub history: Vec<String>,
}

fn state_of(status: &str, conclusion: Option<&str>) -> String {
    match conclusion {
        Some(c) if status == "completed" => format!("completed/{c}"),
        _ => status.to_owned(),
    }
}

struct Failure {
    path_contains: String,
    status: u16,
    retry_after: Option<u64>,
    remaining: usize,
}

#[derive(Default)]
struct Inner {
    repos: BTreeMap<String, PathBuf>,
    pulls: BTreeMap<(String, u64), (String, String)>,
    calls: Vec<Call>,
    failures: Vec<Failure>,
    delay: Option<Duration>,
    tokens: HashSet<String>,
    protected: HashSet<(String, String)>,
    ref_updates: Vec<RefUpdate>,
    check_runs: Vec<CheckRun>,
    statuses: Vec<(String, String, String, String)>,
    /// (repo, user) → permission; a user not listed has none.
    permissions: BTreeMap<(String, String), String>,
    /// (repo, comment id, content).
    reactions: Vec<(String, u64, String)>,
    /// (repo, issue number, body).
    comments: Vec<(String, u64, String)>,
    /// Check suites, one per (repo, commit), numbered when first listed.
    suites: BTreeMap<(String, String), u64>,
    /// (repo, commit) of every check suite re-requested.
    rerequested: Vec<(String, String)>,
    next_id: u64,
}

struct Shared {
    inner: Mutex<Inner>,
    app_id: u64,
    /// The App's public key; tests rotate it.
    public_key_pem: Mutex<Vec<u8>>,
    root: tempfile::TempDir,
}

/// A running fake; stops when dropped.
pub struct GithubFake {
    shared: Arc<Shared>,
    url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for GithubFake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// An RSA key pair for a test App: (private PEM, public PEM), made with `openssl`.
pub fn app_key_pair() -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("app.pem");
    let public = dir.path().join("app.pub.pem");
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("openssl: {e}"));
        assert!(status.success(), "openssl {args:?} failed");
    };
    let private_path = private.display().to_string();
    let public_path = public.display().to_string();
    run(&["genrsa", "-out", &private_path, "2048"]);
    run(&["rsa", "-in", &private_path, "-pubout", "-out", &public_path]);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    (read(&private), read(&public))
}

impl GithubFake {
    /// Trusts only `public_key_pem` for the App's JWTs from now on: the App's key was rotated
    /// on GitHub, and tokens signed with the old key are refused.
    pub fn rotate_app_key(&self, public_key_pem: &str) {
        *self
            .shared
            .public_key_pem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            public_key_pem.as_bytes().to_vec();
    }

    /// Starts the fake for the App `app_id` whose public key is `public_key_pem`.
    pub async fn start(app_id: u64, public_key_pem: &str) -> GithubFake {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            app_id,
            public_key_pem: Mutex::new(public_key_pem.as_bytes().to_vec()),
            root: tempfile::tempdir().unwrap(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = router(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        GithubFake {
            shared,
            url,
            server,
        }
    }

    /// The API base URL (what `CONVERGE_GITHUB_API_URL` points at).
    pub fn url(&self) -> &str {
        &self.url
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.shared)
    }

    /// Creates the repository `owner/name` (empty, branch `main` unborn) and returns its path.
    pub fn create_repo(&self, full_name: &str) -> PathBuf {
        let path = self.shared.root.path().join(full_name.replace('/', "__"));
        std::fs::create_dir_all(&path).unwrap();
        crate::git::git(&path, &["init", "-q", "-b", "main"]);
        self.inner()
            .repos
            .insert(full_name.to_owned(), path.clone());
        path
    }

    /// The path of repository `owner/name` (created by [`GithubFake::create_repo`]).
    pub fn repo_path(&self, full_name: &str) -> PathBuf {
        self.inner()
            .repos
            .get(full_name)
            .cloned()
            .unwrap_or_else(|| panic!("no repository {full_name}"))
    }

    /// Opens pull request `number` from `head` into `base` (branches of the repository).
    pub fn open_pull(&self, repo: &str, number: u64, head: &str, base: &str) {
        self.inner().pulls.insert(
            (repo.to_owned(), number),
            (head.to_owned(), base.to_owned()),
        );
    }

    /// Refuses ref updates of `branch` (branch protection).
    pub fn protect(&self, repo: &str, branch: &str) {
        self.inner()
            .protected
            .insert((repo.to_owned(), branch.to_owned()));
    }

    /// Gives `user` a permission on `repo` (`admin`, `write`, `read`, …).
    pub fn set_permission(&self, repo: &str, user: &str, permission: &str) {
        self.inner()
            .permissions
            .insert((repo.to_owned(), user.to_owned()), permission.to_owned());
    }

    /// Reactions posted on comments: (repo, comment id, content).
    pub fn reactions(&self) -> Vec<(String, u64, String)> {
        self.inner().reactions.clone()
    }

    /// Check suites re-requested: (repo, commit).
    pub fn rerequested(&self) -> Vec<(String, String)> {
        self.inner().rerequested.clone()
    }

    /// Comments posted on issues and pull requests: (repo, number, body).
    pub fn comments(&self) -> Vec<(String, u64, String)> {
        self.inner().comments.clone()
    }

    /// Records a completed CI check run on `sha`.
    pub fn complete_check(&self, repo: &str, sha: &str, name: &str, conclusion: &str) {
        let mut inner = self.inner();
        inner.next_id += 1;
        let id = inner.next_id;
        inner.check_runs.push(CheckRun {
            id,
            repo: repo.to_owned(),
            name: name.to_owned(),
            head_sha: sha.to_owned(),
            status: "completed".to_owned(),
            conclusion: Some(conclusion.to_owned()),
            external_id: None,
            output: json!({}),
            updates: 0,
            history: vec![state_of("completed", Some(conclusion))],
        });
    }

    /// The next `times` requests whose path contains `path_contains` answer `status` (with
    /// `Retry-After` when given) instead of being served.
    pub fn fail_next(
        &self,
        path_contains: &str,
        status: u16,
        retry_after: Option<u64>,
        times: usize,
    ) {
        self.inner().failures.push(Failure {
            path_contains: path_contains.to_owned(),
            status,
            retry_after,
            remaining: times,
        });
    }

    /// Delays every answer by `delay` (or not, with `None`).
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.inner().delay = delay;
    }

    /// Every call answered so far.
    pub fn calls(&self) -> Vec<Call> {
        self.inner().calls.clone()
    }

    /// Every branch moved through the refs API (merges land this way).
    pub fn ref_updates(&self) -> Vec<RefUpdate> {
        self.inner().ref_updates.clone()
    }

    /// Check runs, in creation order.
    pub fn check_runs(&self) -> Vec<CheckRun> {
        self.inner().check_runs.clone()
    }

    /// Commit statuses posted: (repo, sha, context, state).
    pub fn statuses(&self) -> Vec<(String, String, String, String)> {
        self.inner().statuses.clone()
    }

    /// Delivers `payload` as `event` to `url`, signed with `secret` like GitHub does; returns
    /// the status and body of the answer.
    pub async fn send_webhook(
        &self,
        url: &str,
        secret: &str,
        event: &str,
        delivery: &str,
        payload: &Value,
    ) -> (u16, Value) {
        use hmac::{KeyInit, Mac};
        let body = serde_json::to_vec(payload).unwrap_or_default();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&body);
        let signature: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let response = reqwest::Client::new()
            .post(url)
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", format!("sha256={signature}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, Inner> {
    shared
        .inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn router(shared: Arc<Shared>) -> Router {
    // Every repository route takes an installation token (the App's routes take its JWT).
    let repos = Router::new()
        .route("/repos/{owner}/{repo}/pulls", get(list_pulls))
        .route("/repos/{owner}/{repo}/pulls/{number}", get(get_pull))
        .route("/repos/{owner}/{repo}/git/ref/{*reference}", get(get_ref))
        .route("/repos/{owner}/{repo}/git/refs", post(create_ref))
        .route(
            "/repos/{owner}/{repo}/git/refs/{*reference}",
            patch(update_ref).delete(delete_ref),
        )
        .route("/repos/{owner}/{repo}/merges", post(merge))
        .route("/repos/{owner}/{repo}/contents/{*path}", get(get_contents))
        .route(
            "/repos/{owner}/{repo}/collaborators/{user}/permission",
            get(get_permission),
        )
        .route(
            "/repos/{owner}/{repo}/issues/comments/{id}/reactions",
            post(create_reaction),
        )
        .route(
            "/repos/{owner}/{repo}/issues/{number}/comments",
            post(create_comment),
        )
        .route("/repos/{owner}/{repo}/compare/{basehead}", get(compare))
        .route(
            "/repos/{owner}/{repo}/commits/{reference}/check-runs",
            get(list_check_runs),
        )
        .route("/repos/{owner}/{repo}/check-runs", post(create_check_run))
        .route(
            "/repos/{owner}/{repo}/commits/{reference}/check-suites",
            get(list_check_suites),
        )
        .route(
            "/repos/{owner}/{repo}/check-suites/{id}/rerequest",
            post(rerequest_check_suite),
        )
        .route(
            "/repos/{owner}/{repo}/check-runs/{id}",
            patch(update_check_run),
        )
        .route(
            "/repos/{owner}/{repo}/commits/{reference}/status",
            get(combined_status),
        )
        .route("/repos/{owner}/{repo}/statuses/{sha}", post(create_status))
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            installation_token_required,
        ));
    Router::new()
        .route("/app", get(current_app))
        .route("/app/installations/{id}/access_tokens", post(access_token))
        .merge(repos)
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            record_and_inject,
        ))
        .with_state(shared)
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({"message": text}))).into_response()
}

/// Records the call, and answers an injected failure or waits the configured delay first.
async fn record_and_inject(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let (failure, delay) = {
        let mut inner = lock(&shared);
        let failure = inner
            .failures
            .iter_mut()
            .find(|f| f.remaining > 0 && path.contains(&f.path_contains))
            .map(|f| {
                f.remaining -= 1;
                (f.status, f.retry_after)
            });
        (failure, inner.delay)
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let response = match failure {
        Some((status, retry_after)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = message(status, "injected failure");
            if let Some(seconds) = retry_after
                && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
            {
                response.headers_mut().insert("retry-after", value);
            }
            response
        }
        None => next.run(request).await,
    };
    lock(&shared).calls.push(Call {
        method,
        path,
        status: response.status().as_u16(),
    });
    response
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("token "))
        .map(str::to_owned)
}

/// A refusal to answer with GitHub's error shape.
struct Refusal(StatusCode, &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        message(self.0, self.1)
    }
}

/// Answers 401 to a repository call without an installation token the fake issued.
async fn installation_token_required(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    match bearer(request.headers()) {
        Some(token) if lock(&shared).tokens.contains(&token) => next.run(request).await,
        _ => Refusal(StatusCode::UNAUTHORIZED, "Bad credentials").into_response(),
    }
}

fn repo_path(shared: &Shared, owner: &str, repo: &str) -> Result<PathBuf, Refusal> {
    lock(shared)
        .repos
        .get(&format!("{owner}/{repo}"))
        .cloned()
        .ok_or(Refusal(StatusCode::NOT_FOUND, "Not Found"))
}

async fn git(path: &Path, args: &[&str]) -> (i32, String) {
    let output = tokio::process::Command::new("git")
        .arg("-C")
        .arg(path)
        .args(args)
        .env("GIT_AUTHOR_NAME", "GitHub")
        .env("GIT_AUTHOR_EMAIL", "noreply@github.invalid")
        .env("GIT_COMMITTER_NAME", "GitHub")
        .env("GIT_COMMITTER_EMAIL", "noreply@github.invalid")
        .output()
        .await
        .unwrap_or_else(|e| panic!("git: {e}"));
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    )
}

async fn resolve(path: &Path, reference: &str) -> Option<String> {
    if reference.starts_with('-') {
        return None;
    }
    let (code, out) = git(
        path,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{reference}^{{commit}}"),
        ],
    )
    .await;
    (code == 0).then_some(out)
}

async fn is_ancestor(path: &Path, ancestor: &str, of: &str) -> bool {
    git(path, &["merge-base", "--is-ancestor", ancestor, of])
        .await
        .0
        == 0
}

#[derive(Deserialize)]
struct Claims {
    iss: serde_json::Value,
    iat: i64,
    exp: i64,
}

/// Checks the App's JWT the way GitHub does: signed with the App's key, issued by its id, and
/// living at most ten minutes (plus clock drift). `None` when it is accepted, else the refusal.
fn app_jwt_refusal(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    use octocrab::jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
    let Some(jwt) = bearer(headers) else {
        return Some(message(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        ));
    };
    let public_key = shared
        .public_key_pem
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let Ok(key) = DecodingKey::from_rsa_pem(&public_key) else {
        return Some(message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "fake: bad public key",
        ));
    };
    let mut validation = Validation::new(Algorithm::RS256);
    // iss is the App id as a number, which the library checks only as a string: checked below.
    validation.set_required_spec_claims(&["exp"]);
    let claims = match decode::<Claims>(&jwt, &key, &validation) {
        Ok(data) => data.claims,
        Err(e) => {
            return Some(message(
                StatusCode::UNAUTHORIZED,
                &format!("JWT refused: {e}"),
            ));
        }
    };
    let issuer = claims
        .iss
        .as_u64()
        .or_else(|| claims.iss.as_str().and_then(|s| s.parse().ok()));
    if issuer != Some(shared.app_id) || claims.exp - claims.iat > 660 {
        return Some(message(
            StatusCode::UNAUTHORIZED,
            "JWT issuer or lifetime refused",
        ));
    }
    None
}

/// `GET /app`: the authenticated App.
async fn current_app(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(refused) = app_jwt_refusal(&shared, &headers) {
        return refused;
    }
    Json(json!({"id": shared.app_id, "slug": "converge-fake", "name": "Converge (fake)"}))
        .into_response()
}

async fn access_token(
    State(shared): State<Arc<Shared>>,
    UrlPath(installation): UrlPath<u64>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = app_jwt_refusal(&shared, &headers) {
        return refused;
    }
    let token = format!("ghs_fake_{installation}_{}", lock(&shared).tokens.len());
    lock(&shared).tokens.insert(token.clone());
    let expires_at = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    (
        StatusCode::CREATED,
        Json(json!({"token": token, "expires_at": expires_at, "repository_selection": "all",
                "permissions": {"checks": "write", "statuses": "write", "contents": "write",
                                "pull_requests": "read", "merge_queues": "read", "metadata": "read"}})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct PullsQuery {
    base: Option<String>,
    per_page: Option<usize>,
    page: Option<usize>,
}

/// The open pull requests (all are open here), by number, optionally into `base`; paged as
/// GitHub pages them (30 a page unless asked, at most 100).
async fn list_pulls(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    Query(query): Query<PullsQuery>,
) -> Response {
    let path = match repo_path(&shared, &owner, &repo) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let full = format!("{owner}/{repo}");
    let per_page = query.per_page.unwrap_or(30).clamp(1, 100);
    let page = query.page.unwrap_or(1).max(1);
    let pulls: Vec<(u64, String, String)> = lock(&shared)
        .pulls
        .iter()
        .filter(|((r, _), (_, base))| *r == full && query.base.as_ref().is_none_or(|b| b == base))
        .map(|((_, number), (head, base))| (*number, head.clone(), base.clone()))
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let mut listed = Vec::with_capacity(pulls.len());
    for (number, head, base) in pulls {
        let head_sha = resolve(&path, &format!("refs/heads/{head}"))
            .await
            .unwrap_or_default();
        listed.push(json!({
            "number": number, "state": "open",
            "head": {"ref": head, "sha": head_sha, "repo": {"full_name": full}},
            "base": {"ref": base, "repo": {"full_name": full}}
        }));
    }
    Json(listed).into_response()
}

async fn get_pull(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, number)): UrlPath<(String, String, u64)>,
) -> Response {
    let path = match repo_path(&shared, &owner, &repo) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let full = format!("{owner}/{repo}");
    let Some((head, base)) = lock(&shared).pulls.get(&(full.clone(), number)).cloned() else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    let head_sha = resolve(&path, &format!("refs/heads/{head}"))
        .await
        .unwrap_or_default();
    let base_sha = resolve(&path, &format!("refs/heads/{base}"))
        .await
        .unwrap_or_default();
    Json(json!({
        "number": number, "state": "open", "merged": false,
        "head": {"ref": head, "sha": head_sha, "repo": {"full_name": full}},
        "base": {"ref": base, "sha": base_sha, "repo": {"full_name": full}}
    }))
    .into_response()
}

async fn get_ref(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, reference)): UrlPath<(String, String, String)>,
) -> Response {
    let path = match repo_path(&shared, &owner, &repo) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    match resolve(&path, &format!("refs/{reference}")).await {
        Some(sha) => Json(
            json!({"ref": format!("refs/{reference}"), "object": {"sha": sha, "type": "commit"}}),
        )
        .into_response(),
        None => message(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn get_permission(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, user)): UrlPath<(String, String, String)>,
) -> Response {
    let full = format!("{owner}/{repo}");
    let permission = lock(&shared)
        .permissions
        .get(&(full, user.clone()))
        .cloned()
        .unwrap_or_else(|| "none".to_owned());
    Json(json!({"permission": permission, "user": {"login": user}})).into_response()
}

async fn create_reaction(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, id)): UrlPath<(String, String, u64)>,
    Json(body): Json<Value>,
) -> Response {
    let content = body["content"].as_str().unwrap_or_default().to_owned();
    lock(&shared)
        .reactions
        .push((format!("{owner}/{repo}"), id, content.clone()));
    (StatusCode::CREATED, Json(json!({"content": content}))).into_response()
}

async fn create_comment(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, number)): UrlPath<(String, String, u64)>,
    Json(body): Json<Value>,
) -> Response {
    let text = body["body"].as_str().unwrap_or_default().to_owned();
    lock(&shared)
        .comments
        .push((format!("{owner}/{repo}"), number, text.clone()));
    (StatusCode::CREATED, Json(json!({"body": text}))).into_response()
}

#[derive(Deserialize)]
struct ContentsQuery {
    #[serde(rename = "ref")]
    reference: String,
}

/// A file's contents at a commit, base64 in lines of 60 like GitHub's.
async fn get_contents(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, file)): UrlPath<(String, String, String)>,
    Query(query): Query<ContentsQuery>,
) -> Response {
    use base64::Engine;
    let path = match repo_path(&shared, &owner, &repo) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let output = tokio::process::Command::new("git")
        .arg("-C")
        .arg(&path)
        .args(["cat-file", "blob", &format!("{}:{file}", query.reference)])
        .output()
        .await
        .unwrap_or_else(|e| panic!("git: {e}"));
    if !output.status.success() {
        return message(StatusCode::NOT_FOUND, "Not Found");
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(&output.stdout);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(60)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    Json(json!({"type": "file", "path": file, "encoding": "base64", "content": lines.join("\n")}))
        .into_response()
}

#[derive(Deserialize)]
struct NewRef {
    #[serde(rename = "ref")]
    reference: String,
    sha: String,
}

async fn create_ref(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    Json(body): Json<NewRef>,
) -> Response {
    let path = match repo_path(&shared, &owner, &repo) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if !body.reference.starts_with("refs/") || resolve(&path, &body.sha).await.is_none() {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Reference or object invalid",
        );
    }
    // Create only: the zero old value makes git refuse an existing ref.
    let (code, _) = git(
        &path,
        &["update-ref", &body.reference, &body.sha, &"0".repeat(40)],
    )
    .await;
    if code != 0 {
        return message(StatusCode::UNPROCESSABLE_ENTITY, "Reference already exists");
    }
    (
        StatusCode::CREATED,
        Json(json!({"ref": body.reference, "object": {"sha": body.sha, "type": "commit"}})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct RefMove {
    sha: String,
    #[serde(default)]
    force: bool,
}

async fn update_ref(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, reference)): UrlPath<(String, String, String)>,
    Json(body): Json<RefMove>,
) -> Response {
    let path = match repo_path(&shared, &owner, &repo) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let full = format!("{owner}/{repo}");
    let branch = reference
        .strip_prefix("heads/")
        .unwrap_or(&reference)
        .to_owned();
    if lock(&shared).protected.contains(&(full.clone(), branch)) {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("Protected branch update failed for refs/{reference}."),
        );
    }
    let Some(current) = resolve(&path, &format!("refs/{reference}")).await else {
        return message(StatusCode::UNPROCESSABLE_ENTITY, "Reference does not exist");
    };
    if resolve(&path, &body.sha).await.is_none() {
        return message(StatusCode::UNPROCESSABLE_ENTITY, "Object does not exist");
    }
    if !body.force && !is_ancestor(&path, &current, &body.sha).await {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Update is not a fast forward",
        );
    }
    let (code, _) = git(
        &path,
        &[
            "update-ref",
            &format!("refs/{reference}"),
            &body.sha,
            &current,
        ],
    )
    .await;
    if code != 0 {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Update is not a fast forward",
        );
    }
    lock(&shared).ref_updates.push(RefUpdate {
        repo: full,
        reference: reference.clone(),
        from: current,
        to: body.sha.clone(),
    });
    Json(json!({"ref": format!("refs/{reference}"), "object": {"sha": body.sha, "type": "commit"}}))
        .into_response()
}

async fn delete_ref(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, reference)): UrlPath<(String, String, String)>,
) -> Response {
    let path = match repo_path(&shared, &owner, &repo) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let (code, _) = git(&path, &["update-ref", "-d", &format!("refs/{reference}")]).await;
    if code != 0 {
        return message(StatusCode::UNPROCESSABLE_ENTITY, "Reference does not exist");
    }
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct MergeRequest {
    base: String,
    head: String,
    #[serde(default)]
    commit_message: Option<String>,
}

async fn merge(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    Json(body): Json<MergeRequest>,
) -> Response {
    let path = match repo_path(&shared, &owner, &repo) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let base_ref = format!("refs/heads/{}", body.base);
    let (Some(base), Some(head)) = (
        resolve(&path, &base_ref).await,
        resolve(&path, &body.head).await,
    ) else {
        return message(StatusCode::NOT_FOUND, "Base or head does not exist");
    };
    if is_ancestor(&path, &head, &base).await {
        return StatusCode::NO_CONTENT.into_response();
    }
    let (code, out) = git(
        &path,
        &["merge-tree", "--write-tree", "--no-messages", &base, &head],
    )
    .await;
    if code != 0 {
        return message(StatusCode::CONFLICT, "Merge conflict");
    }
    let tree = out.lines().next().unwrap_or_default().to_owned();
    let text = body
        .commit_message
        .unwrap_or_else(|| format!("Merge {head} into {}", body.base));
    let (code, commit) = git(
        &path,
        &["commit-tree", &tree, "-p", &base, "-p", &head, "-m", &text],
    )
    .await;
    if code != 0 {
        return message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "fake: commit-tree failed",
        );
    }
    let (code, _) = git(&path, &["update-ref", &base_ref, &commit, &base]).await;
    if code != 0 {
        return message(StatusCode::CONFLICT, "Base moved during the merge");
    }
    (
        StatusCode::CREATED,
        Json(
            json!({"sha": commit, "commit": {"tree": {"sha": tree}, "message": text},
                    "parents": [{"sha": base}, {"sha": head}]}),
        ),
    )
        .into_response()
}

async fn compare(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, basehead)): UrlPath<(String, String, String)>,
) -> Response {
    let path = match repo_path(&shared, &owner, &repo) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let Some((base, head)) = basehead.split_once("...") else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    let (Some(base), Some(head)) = (resolve(&path, base).await, resolve(&path, head).await) else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    let (_, merge_base) = git(&path, &["merge-base", &base, &head]).await;
    let count = |range: String| {
        let path = path.clone();
        async move {
            git(&path, &["rev-list", "--count", &range])
                .await
                .1
                .parse::<u64>()
                .unwrap_or(0)
        }
    };
    let ahead_by = count(format!("{merge_base}..{head}")).await;
    let behind_by = count(format!("{merge_base}..{base}")).await;
    let status = match (ahead_by, behind_by) {
        (0, 0) => "identical",
        (_, 0) => "ahead",
        (0, _) => "behind",
        _ => "diverged",
    };
    let (_, diff) = git(
        &path,
        &["diff", "--name-status", "--no-renames", &merge_base, &head],
    )
    .await;
    let files: Vec<Value> = diff
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(change, file)| {
            let status = match change {
                "A" => "added",
                "D" => "removed",
                _ => "modified",
            };
            json!({"filename": file, "status": status})
        })
        .collect();
    Json(
        json!({"status": status, "ahead_by": ahead_by, "behind_by": behind_by,
                "merge_base_commit": {"sha": merge_base}, "files": files}),
    )
    .into_response()
}

#[derive(Deserialize)]
struct CheckRunQuery {
    check_name: Option<String>,
}

fn check_run_json(run: &CheckRun) -> Value {
    json!({"id": run.id, "name": run.name, "head_sha": run.head_sha, "status": run.status,
           "conclusion": run.conclusion, "external_id": run.external_id, "output": run.output})
}

async fn list_check_runs(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, reference)): UrlPath<(String, String, String)>,
    Query(query): Query<CheckRunQuery>,
) -> Response {
    let path = match repo_path(&shared, &owner, &repo) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let sha = resolve(&path, &reference).await.unwrap_or(reference);
    let full = format!("{owner}/{repo}");
    let runs: Vec<Value> = lock(&shared)
        .check_runs
        .iter()
        .filter(|r| r.repo == full && r.head_sha == sha)
        .filter(|r| query.check_name.as_ref().is_none_or(|n| *n == r.name))
        .map(check_run_json)
        .collect();
    Json(json!({"total_count": runs.len(), "check_runs": runs})).into_response()
}

/// The commit's check runs as one suite: completed when every latest run per name is, failed
/// when one of those failed.
async fn list_check_suites(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, reference)): UrlPath<(String, String, String)>,
) -> Response {
    let path = match repo_path(&shared, &owner, &repo) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let sha = resolve(&path, &reference).await.unwrap_or(reference);
    let full = format!("{owner}/{repo}");
    let mut inner = lock(&shared);
    let mut latest: BTreeMap<String, &CheckRun> = BTreeMap::new();
    for run in inner
        .check_runs
        .iter()
        .filter(|r| r.repo == full && r.head_sha == sha)
    {
        if latest.get(&run.name).is_none_or(|seen| seen.id < run.id) {
            latest.insert(run.name.clone(), run);
        }
    }
    if latest.is_empty() {
        return Json(json!({"total_count": 0, "check_suites": []})).into_response();
    }
    let completed = latest.values().all(|r| r.status == "completed");
    let failed = latest
        .values()
        .any(|r| r.conclusion.as_deref().is_some_and(|c| c != "success"));
    let conclusion = match (completed, failed) {
        (false, _) => Value::Null,
        (true, true) => json!("failure"),
        (true, false) => json!("success"),
    };
    let status = if completed {
        "completed"
    } else {
        "in_progress"
    };
    inner.next_id += 1;
    let fresh = inner.next_id;
    let id = *inner.suites.entry((full, sha.clone())).or_insert(fresh);
    let suite = json!({"id": id, "head_sha": sha, "status": status, "conclusion": conclusion});
    Json(json!({"total_count": 1, "check_suites": [suite]})).into_response()
}

async fn rerequest_check_suite(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, id)): UrlPath<(String, String, u64)>,
) -> Response {
    let mut inner = lock(&shared);
    let Some((key, _)) = inner.suites.iter().find(|(_, suite)| **suite == id) else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    let key = key.clone();
    if key.0 != format!("{owner}/{repo}") {
        return message(StatusCode::NOT_FOUND, "Not Found");
    }
    inner.rerequested.push(key);
    (StatusCode::CREATED, Json(json!({}))).into_response()
}

#[derive(Deserialize)]
struct CheckRunWrite {
    name: Option<String>,
    head_sha: Option<String>,
    status: Option<String>,
    conclusion: Option<String>,
    external_id: Option<String>,
    output: Option<Value>,
}

async fn create_check_run(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    Json(body): Json<CheckRunWrite>,
) -> Response {
    let (Some(name), Some(head_sha)) = (body.name, body.head_sha) else {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "name and head_sha are required",
        );
    };
    let mut inner = lock(&shared);
    inner.next_id += 1;
    let status = body.status.unwrap_or_else(|| "queued".to_owned());
    let run = CheckRun {
        id: inner.next_id,
        repo: format!("{owner}/{repo}"),
        name,
        head_sha,
        history: vec![state_of(&status, body.conclusion.as_deref())],
        status,
        conclusion: body.conclusion,
        external_id: body.external_id,
        output: body.output.unwrap_or(Value::Null),
        updates: 0,
    };
    let answer = check_run_json(&run);
    inner.check_runs.push(run);
    (StatusCode::CREATED, Json(answer)).into_response()
}

async fn update_check_run(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, id)): UrlPath<(String, String, u64)>,
    Json(body): Json<CheckRunWrite>,
) -> Response {
    let full = format!("{owner}/{repo}");
    let mut inner = lock(&shared);
    let Some(run) = inner
        .check_runs
        .iter_mut()
        .find(|r| r.id == id && r.repo == full)
    else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    if let Some(status) = body.status {
        run.status = status;
    }
    if body.conclusion.is_some() {
        run.conclusion = body.conclusion;
    }
    if let Some(output) = body.output {
        run.output = output;
    }
    run.updates += 1;
    let state = state_of(&run.status, run.conclusion.as_deref());
    run.history.push(state);
    Json(check_run_json(run)).into_response()
}

async fn combined_status(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, reference)): UrlPath<(String, String, String)>,
) -> Response {
    let path = match repo_path(&shared, &owner, &repo) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let sha = resolve(&path, &reference).await.unwrap_or(reference);
    let full = format!("{owner}/{repo}");
    let mut latest: BTreeMap<String, String> = BTreeMap::new();
    for (r, s, context, state) in &lock(&shared).statuses {
        if *r == full && *s == sha {
            latest.insert(context.clone(), state.clone());
        }
    }
    let statuses: Vec<Value> = latest
        .iter()
        .map(|(c, s)| json!({"context": c, "state": s}))
        .collect();
    let state = if latest.values().any(|s| s == "failure" || s == "error") {
        "failure"
    } else if latest.values().all(|s| s == "success") && !latest.is_empty() {
        "success"
    } else {
        "pending"
    };
    Json(json!({"state": state, "sha": sha, "statuses": statuses, "total_count": latest.len()}))
        .into_response()
}

#[derive(Deserialize)]
struct StatusWrite {
    state: String,
    context: Option<String>,
}

async fn create_status(
    State(shared): State<Arc<Shared>>,
    UrlPath((owner, repo, sha)): UrlPath<(String, String, String)>,
    Json(body): Json<StatusWrite>,
) -> Response {
    let context = body.context.unwrap_or_else(|| "default".to_owned());
    lock(&shared).statuses.push((
        format!("{owner}/{repo}"),
        sha.clone(),
        context.clone(),
        body.state.clone(),
    ));
    (
        StatusCode::CREATED,
        Json(json!({"state": body.state, "context": context, "sha": sha})),
    )
        .into_response()
}
