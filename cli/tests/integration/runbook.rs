//! The runbook's environment table and the code stay in step: every `CONVERGE_*` and `OTEL_*`
//! variable the sources read is in the table, and every variable in the table is read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            // Tests and benches set variables; they do not define settings.
            if !matches!(
                path.file_name().and_then(|n| n.to_str()),
                Some("tests" | "benches" | "target")
            ) {
                rust_files(&path, found);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// Quoted variable names (`"CONVERGE_…"`) in `text`.
fn quoted_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["\"CONVERGE_", "\"OTEL_"] {
        for (start, _) in text.match_indices(prefix) {
            let rest = &text[start + 1..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if rest[name.len()..].starts_with('"') && !name.ends_with('_') {
                names.insert(name);
            }
        }
    }
    names
}

/// The rows of the runbook's environment table: (variable, default cell).
fn environment_rows(runbook: &str) -> Vec<(String, String)> {
    runbook
        .split("## Environment")
        .nth(1)
        .and_then(|section| section.split("\n## ").next())
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| {
            let mut cells = rest.split(" | ");
            let variable = cells.next()?.trim_end_matches('`').to_owned();
            Some((variable, cells.next()?.trim().to_owned()))
        })
        .collect()
}

fn runbook() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join("docs/RUNBOOK.md"))
        .unwrap_or_else(|e| panic!("docs/RUNBOOK.md: {e}"))
}

/// Every default the table lists as one plain value is the one the configuration uses:
/// setting the variable to it changes nothing. The base environment turns the optional
/// sections on (a GitHub App, command checks), so that their defaults are used too.
#[test]
fn the_configuration_uses_the_defaults_the_runbook_lists() {
    use converge_runtime::config::Config;
    let base = [
        ("CONVERGE_GITHUB_APP_ID", "1"),
        ("CONVERGE_GITHUB_APP_PRIVATE_KEY", "not read here"),
        ("CONVERGE_LOCAL_CHECKS", "commands"),
    ];
    let config = |variable: &str, value: Option<&str>| {
        let found = Config::from_lookup(|name| {
            if name == variable {
                return value.map(str::to_owned);
            }
            base.iter()
                .find(|(base_name, _)| *base_name == name)
                .map(|(_, v)| (*v).to_owned())
        });
        format!(
            "{:?}",
            found.unwrap_or_else(|e| panic!("{variable}={value:?}: {e}"))
        )
    };
    let mut checked = Vec::new();
    for (variable, default) in environment_rows(&runbook()) {
        // One value in backticks and nothing else: `5`, `sqlite`, `https://api.github.com`.
        let Some(value) = default
            .strip_prefix('`')
            .and_then(|rest| rest.strip_suffix('`'))
            .filter(|value| !value.contains(['`', '…']))
        else {
            continue;
        };
        assert_eq!(
            config(&variable, Some(value)),
            config(&variable, None),
            "the runbook says {variable} defaults to {value}, but setting it changes the configuration"
        );
        checked.push(variable);
    }
    assert!(checked.len() >= 15, "too few defaults checked: {checked:?}");
}

#[test]
fn the_runbook_lists_every_setting_the_code_reads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["shared", "functions", "cli/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut read = BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        read.extend(quoted_names(&text));
    }
    let runbook = std::fs::read_to_string(root.join("docs/RUNBOOK.md"))
        .unwrap_or_else(|e| panic!("docs/RUNBOOK.md: {e}"));
    let table: BTreeSet<String> = runbook
        .split("## Environment")
        .nth(1)
        .and_then(|section| section.split("\n## ").next())
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_owned)
        .collect();
    assert!(table.len() > 30, "the table was not found: {table:?}");
    let missing: Vec<_> = read.difference(&table).collect();
    assert!(
        missing.is_empty(),
        "read but not in the runbook: {missing:?}"
    );
    let unread: Vec<_> = table.difference(&read).collect();
    assert!(
        unread.is_empty(),
        "in the runbook but never read: {unread:?}"
    );
}
