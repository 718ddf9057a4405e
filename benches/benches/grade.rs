//! em-grade's hot paths: grading is a reward in RL and runs once per sample in evaluation.
//!
//! ```text
//! cargo bench -p em-benches --bench grade
//! ```
//!
//! Groups are `"host/{op}"` (grading runs on the CPU whatever the backend): extracting and
//! matching every MATH500 solution's answer (one iteration = 500 outputs), and one sandboxed
//! run of a canonical MBPP solution (Python start-up, namespaces, tests).
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use em_grade::code::grade_code;
use em_grade::math::{answers_match, extract_answer};
use em_grade::problems::{Benchmark, data_dir};
use em_grade::reference::canonical_solutions;
use em_grade::{SandboxConfig, Task};

fn math500() -> Vec<(String, String)> {
    let path = data_dir().join(Benchmark::Math500.file());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("MATH500 file"))
            .expect("MATH500 JSON");
    let solutions = json["solution"].as_object().expect("solution column");
    let expected = json["expected_answer"].as_object().expect("answer column");
    solutions
        .iter()
        .map(|(row, s)| {
            (
                s.as_str().unwrap_or_default().to_string(),
                expected[row].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn bench_math(c: &mut Criterion) {
    let cases = math500();
    let mut group = c.benchmark_group("host/extract_and_match");
    group.throughput(Throughput::Elements(cases.len() as u64));
    group.bench_with_input(
        BenchmarkId::from_parameter("math500"),
        &cases,
        |b, cases| {
            b.iter(|| {
                cases
                    .iter()
                    .filter(|(solution, reference)| {
                        let answer = extract_answer(solution)
                            .map(|e| e.answer)
                            .unwrap_or_default();
                        answers_match(&answer, reference).correct
                    })
                    .count()
            })
        },
    );
    group.finish();
}

fn bench_sandbox(c: &mut Criterion) {
    let cases = canonical_solutions(Benchmark::Mbpp, &data_dir()).expect("MBPP solutions");
    let (problem, code) = &cases[0];
    let Task::Code { harness, .. } = &problem.task else {
        return;
    };
    let output = format!("```python\n{code}\n```\n");
    let config = SandboxConfig::default();
    let mut group = c.benchmark_group("host/sandbox_run");
    group.sample_size(20);
    group.bench_with_input(
        BenchmarkId::from_parameter("mbpp-first"),
        &output,
        |b, output| b.iter(|| grade_code(output, harness, &config).map(|v| v.passed)),
    );
    group.finish();
}

criterion_group!(benches, bench_math, bench_sandbox);
criterion_main!(benches);
