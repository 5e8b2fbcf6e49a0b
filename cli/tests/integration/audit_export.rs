//! The audit chain and the decision export over HTTP and through the CLI, against a live
//! `converge serve` on both backends: roles and tenants hold (a tenant-bound key verifies and
//! exports only its own tenant), a row altered in the database is reported at its position
//! (and `converge audit verify` exits 3), bad parameters are 400s, and the CLI's export is the
//! API's, byte for byte.

use converge_testkit::ServerProcess;
use serde_json::{Value, json};

use crate::operator_cli::converge;

pub(crate) const ROOT: &str = "root-key";
pub(crate) const ACME: &str = "acme-operator-key";
pub(crate) const ACME_VIEWER: &str = "acme-viewer-key";
pub(crate) const GLOBEX: &str = "globex-admin-key";

/// `converge serve` without its worker on `database`, with four keys: an admin of no tenant
/// (`ROOT`), acme's operator (actor `alice`) and viewer, globex's admin; no rate limit.
pub(crate) fn tenants_server(
    dir: &std::path::Path,
    database: &[(&'static str, String)],
) -> ServerProcess {
    let mut env = database.to_vec();
    env.push((
        "CONVERGE_API_KEYS",
        format!(
            "{ROOT}:admin:root,{ACME}:operator:alice:acme,{ACME_VIEWER}:viewer:v:acme,{GLOBEX}:admin:g:globex"
        ),
    ));
    env.push(("CONVERGE_RATE_LIMIT_ENABLED", "0".to_owned()));
    ServerProcess::start_with(env!("CARGO_BIN_EXE_converge"), dir, &env, &["--no-worker"])
}

async fn get(
    client: &reqwest::Client,
    server: &ServerProcess,
    key: &str,
    path: &str,
) -> (u16, String, Option<String>) {
    let response = client
        .get(server.url(path))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, response.text().await.unwrap(), content_type)
}

async fn verify(client: &reqwest::Client, server: &ServerProcess, key: &str, query: &str) -> Value {
    let (status, body, _) = get(client, server, key, &format!("/v1/audit/verify{query}")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn create(client: &reqwest::Client, server: &ServerProcess, key: &str, id: &str) {
    let response = client
        .post(server.url("/v1/intents"))
        .header("x-api-key", key)
        .json(&json!({"id": id, "source": format!("{id}-branch")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201, "{id}");
}

/// Alters one stored event of acme's chain, as someone with database access could.
async fn tamper(database: &[(&str, String)]) {
    let setting = |name: &str| {
        database
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    };
    let sql = "UPDATE events SET evidence = payload WHERE tenant_id = 'acme' AND chain_index = 1";
    match setting("CONVERGE_PG_DSN") {
        Some(dsn) => {
            let pool = sqlx::PgPool::connect(&dsn).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        None => {
            let path = setting("CONVERGE_DB_PATH").unwrap();
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{path}"))
                .await
                .unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_chain_and_the_export_hold_tenants_roles_and_tampering_on_both_backends() {
    let client = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    for database in converge_testkit::server_databases(dir.path(), "audit.db").await {
        let server = crate::audit_export::tenants_server(dir.path(), &database);
        for id in ["acme-1", "acme-2", "acme-3"] {
            create(&client, &server, ACME, id).await;
        }
        for id in ["globex-1", "globex-2"] {
            create(&client, &server, GLOBEX, id).await;
        }

        // Each tenant's chain, whole; asking for another tenant's gives a key its own.
        let acme = verify(&client, &server, ACME, "?tenant_id=globex").await;
        assert_eq!(acme["tenant_id"], "acme", "{acme}");
        assert_eq!(acme["status"], "valid", "{acme}");
        let acme_events = acme["checked"].as_i64().unwrap();
        assert!(acme_events >= 3, "{acme}");
        assert_eq!(acme["head"]["next_index"], acme_events);
        let globex = verify(&client, &server, GLOBEX, "").await;
        assert_eq!(
            (globex["tenant_id"].as_str(), globex["status"].as_str()),
            (Some("globex"), Some("valid"))
        );
        assert_ne!(globex["head"]["last_hash"], acme["head"]["last_hash"]);
        let by_root = verify(&client, &server, ROOT, "?tenant_id=acme").await;
        assert_eq!(by_root["head"], acme["head"]);
        // The same under /api, and in pages.
        let (status, _, _) = get(&client, &server, ACME, "/api/audit/verify").await;
        assert_eq!(status, 200);
        let first = verify(&client, &server, ACME, "?limit=1").await;
        assert_eq!(
            (first["checked"].as_i64(), first["next_after"].as_i64()),
            (Some(1), Some(0))
        );
        let rest = verify(&client, &server, ACME, "?after=0").await;
        assert_eq!(rest["checked"].as_i64(), Some(acme_events - 1));

        // Verifying is for operators; the export is for viewers too.
        let (status, body, _) = get(&client, &server, ACME_VIEWER, "/v1/audit/verify").await;
        assert_eq!(status, 403, "{body}");
        let (status, body, _) = get(&client, &server, ACME, "/v1/audit/verify?after=999").await;
        assert_eq!(status, 404, "no such position: {body}");
        for bad in ["?limit=0", "?limit=1000001", "?after=-1"] {
            let (status, body, _) =
                get(&client, &server, ACME, &format!("/v1/audit/verify{bad}")).await;
            assert_eq!(status, 400, "{bad}: {body}");
        }

        // The export: acme's intents only, one JSON record a line, in the original's shape.
        let (status, jsonl, content_type) = get(
            &client,
            &server,
            ACME_VIEWER,
            "/v1/export/decisions?tenant_id=globex",
        )
        .await;
        assert_eq!(status, 200, "{jsonl}");
        assert_eq!(content_type.as_deref(), Some("application/x-ndjson"));
        let records: Vec<Value> = jsonl
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let ids: Vec<&str> = records
            .iter()
            .filter_map(|r| r["intent_id"].as_str())
            .collect();
        assert_eq!(ids, ["acme-1", "acme-2", "acme-3"]);
        assert_eq!(records[0]["source"], "acme-1-branch");
        assert_eq!(records[0]["tenant_id"], "acme");
        assert_eq!(records[0]["mergeable"], Value::Null);
        assert_eq!(records[0]["bomb_count"], 0);
        assert_eq!(records[0].as_object().unwrap().len(), 28);
        let (status, csv, content_type) =
            get(&client, &server, ACME, "/v1/export/decisions?fmt=csv").await;
        assert_eq!(status, 200);
        assert_eq!(content_type.as_deref(), Some("text/csv; charset=utf-8"));
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 4, "{csv}");
        assert!(lines[0].starts_with("intent_id,source,target,status,"));
        assert!(lines[1].starts_with("acme-1,acme-1-branch,main,READY,"));
        let (_, everyone, _) = get(&client, &server, ROOT, "/v1/export/decisions").await;
        assert_eq!(everyone.lines().count(), 5);
        let (status, body, _) = get(&client, &server, ACME, "/v1/export/decisions?fmt=xml").await;
        assert_eq!(status, 400, "{body}");

        // The CLI's export is the API's.
        let cli_env = [
            ("CONVERGE_API_URL", server.url("")),
            ("CONVERGE_API_KEY", ACME.to_owned()),
        ];
        let file = dir.path().join("decisions.csv");
        let run = converge(
            &[
                "export",
                "decisions",
                "--fmt",
                "csv",
                "--output",
                file.to_str().unwrap(),
            ],
            &cli_env,
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), csv);
        let run = converge(&["export", "decisions", "--fmt", "xml"], &cli_env);
        assert_eq!(run.code, 2, "{}", run.stderr);

        // An event altered in the database is found where it is; globex's chain is untouched.
        let run = converge(&["audit", "verify", "--json"], &cli_env);
        assert_eq!(run.code, 0, "{} {}", run.stdout, run.stderr);
        assert_eq!(run.json()["checked"].as_i64(), Some(acme_events));
        tamper(&database).await;
        let broken = verify(&client, &server, ACME, "").await;
        assert_eq!(broken["status"], "broken", "{broken}");
        assert_eq!(broken["first_broken"]["chain_index"], 1);
        assert_eq!(broken["checked"], 1);
        assert_eq!(
            verify(&client, &server, GLOBEX, "").await["status"],
            "valid"
        );
        let run = converge(&["audit", "verify"], &cli_env);
        assert_eq!(run.code, 3, "{} {}", run.stdout, run.stderr);
        assert!(run.stdout.contains("broken"), "{}", run.stdout);
    }
}
