//! The runbook's environment table and the code stay in step: every `CONVERGE_*` and `OTEL_*`
//! variable the sources read is in the table, and every variable in the table is read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
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
