//! Risk evaluation time for changes of 10, 100 and 1,000 files with co-change coupling.
//!
//! Targets on the project's 2-core machine: 0.1 ms, 0.5 ms and 5 ms (the reference takes
//! 14.6, 57.6 and 730 ms there). Run with `scripts/bench.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is how a test fails.

use std::hint::black_box;

use converge_core::RiskLevel;
use converge_core::risk::{ChangeSubject, CouplingPair, evaluate_risk};
use converge_core::simulation::Simulation;
use criterion::{BenchmarkId, Criterion, criterion_main};

/// A change of `files` files, eight per directory over nested folders, with one coupling pair
/// per two changed files (half of them to files outside the change).
fn change(files: usize) -> (Simulation, Vec<CouplingPair>) {
    let areas = ["src/api", "src/core", "lib/db", "app/ui", "docs", "tests"];
    let files_changed: Vec<String> = (0..files)
        .map(|i| format!("{}/m{}/file_{i}.rs", areas[(i / 8) % areas.len()], i / 8))
        .collect();
    let coupling = (0..files / 2)
        .map(|i| CouplingPair {
            file_a: files_changed[i * 2].clone(),
            file_b: if i % 2 == 0 {
                files_changed[(i * 7 + 3) % files].clone()
            } else {
                format!("vendor/v{}/dep_{i}.rs", i % 5)
            },
            co_changes: (i % 12) as u64 + 1,
            source: "git-log".to_owned(),
        })
        .collect();
    (
        Simulation {
            mergeable: true,
            conflicts: Vec::new(),
            files_changed,
        },
        coupling,
    )
}

fn bench(c: &mut Criterion) {
    let dependencies = vec!["dep-a".to_owned(), "dep-b".to_owned()];
    let scope_hints = vec!["core".to_owned(), "api".to_owned()];
    let subject = ChangeSubject {
        intent_id: "bench-intent",
        source: "feature/bench",
        target: "main",
        risk_level: RiskLevel::Medium,
        dependencies: &dependencies,
        scope_hints: &scope_hints,
    };
    let mut group = c.benchmark_group("risk_eval");
    for files in [10usize, 100, 1000] {
        let (simulation, coupling) = change(files);
        group.bench_with_input(BenchmarkId::from_parameter(files), &files, |b, _| {
            b.iter(|| {
                evaluate_risk(
                    black_box(&subject),
                    black_box(&simulation),
                    black_box(&coupling),
                )
            })
        });
    }
    group.finish();
}

/// Private, so the generated group function needs no docs.
mod groups {
    use criterion::criterion_group;
    criterion_group!(benches, super::bench);
}
criterion_main!(groups::benches);
