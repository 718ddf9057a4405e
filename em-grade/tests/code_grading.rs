//! Code grading: extraction rules, every benchmark's harness against its own canonical
//! solutions (all must pass) and against broken ones (all must fail), pass@k against exact
//! binomials.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use em_grade::code::{CodeOutcome, extract_code, grade_code, pass_at_k, run_pool, test_program};
use em_grade::problems::{Benchmark, Problem, Task, data_dir};
use em_grade::reference::canonical_solutions;
use em_grade::sandbox::SandboxConfig;
use em_grade::{GradeError, GradeStage, grade};

#[test]
fn extraction_rules() {
    let cases: &[(&str, Option<&str>)] = &[
        (
            "```python\ndef a():\n    return 1\n```\ntext\n```python\ndef b():\n    return 2\n```",
            Some("def b():\n    return 2\n"),
        ),
        (
            "```python\ndef a():\n    pass\n```\n```python\nprint(a())\n```",
            Some("def a():\n    pass\n"),
        ),
        ("```\ndef c():\n    pass\n```", Some("def c():\n    pass\n")),
        (
            "```python\nclass Solution:\n    def f(self): pass\n```",
            Some("class Solution:\n    def f(self): pass\n"),
        ),
        ("def d(x): return x", Some("def d(x): return x")),
        (
            "```python\ndef e():\n    return 5",
            Some("def e():\n    return 5"),
        ),
        ("no code here", None),
    ];
    for (text, want) in cases {
        assert_eq!(extract_code(text).as_deref(), *want, "{text}");
    }
}

/// Busy-loops on every core until dropped: the machine as loaded as CI's can get.
struct CpuHogs {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl CpuHogs {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for i in 0..10_000u64 {
                            x = std::hint::black_box(
                                x.wrapping_mul(6364136223846793005).wrapping_add(i),
                            );
                        }
                    }
                    x
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Every canonical HumanEval and MBPP solution passes its own tests while a CPU hog runs on
/// every core (on top of whatever else the test runner runs), because each problem's CPU budget
/// comes from its reference time and a timeout is retried; solutions made to return `None`
/// fail.
#[test]
fn canonical_solutions_pass_under_full_load_and_broken_ones_fail() {
    let config = SandboxConfig::default();
    let _hogs = CpuHogs::start();
    for b in [Benchmark::HumanEval, Benchmark::Mbpp] {
        let cases: Vec<(Problem, String)> = canonical_solutions(b, &data_dir())
            .unwrap()
            .into_iter()
            .map(|(p, code)| (p, format!("Here you go:\n```python\n{code}\n```\n")))
            .collect();
        let t = std::time::Instant::now();
        let grades = run_pool(&cases, None, |(p, out)| grade(p, out, &config).unwrap());
        let failed: Vec<_> = grades
            .iter()
            .zip(&cases)
            .filter(|(g, _)| !g.correct)
            .map(|(g, (p, _))| format!("{}: {}", p.id, g.stage))
            .collect();
        eprintln!(
            "{}: {} canonical solutions in {:.1} s under full load",
            b.name(),
            cases.len(),
            t.elapsed().as_secs_f64()
        );
        assert!(failed.is_empty(), "{}: {failed:?}", b.name());
        // Every solution made to return None fails its tests (a sample, to keep it quick).
        let broken: Vec<_> = cases
            .iter()
            .step_by(16)
            .filter(|(_, out)| out.contains("return "))
            .map(|(p, out)| (p.clone(), out.replace("return ", "return None and ")))
            .collect();
        let grades = run_pool(&broken, None, |(p, out)| grade(p, out, &config).unwrap());
        for (g, (_, out)) in grades.iter().zip(&broken) {
            assert!(!g.correct, "{}: a broken solution passed:\n{out}", b.name());
        }
    }
}

/// The shipped reference table covers every problem with a canonical solution, and loading
/// attaches it; the budget it implies is the floor or ×`reference_factor`.
#[test]
fn reference_times_cover_every_canonical_solution() {
    let times = em_grade::reference::load_times(&data_dir()).unwrap();
    let config = SandboxConfig::default();
    for b in [Benchmark::HumanEval, Benchmark::Mbpp] {
        let table = &times[b.name()];
        for p in b.load(&data_dir()).unwrap() {
            let Task::Code {
                reference_cpu_seconds,
                ..
            } = p.task
            else {
                panic!("{} is a code benchmark", b.name())
            };
            let seconds = reference_cpu_seconds.unwrap_or_else(|| panic!("{}: no reference", p.id));
            assert_eq!(Some(&seconds), table.get(&p.id));
            assert!(seconds > 0.0 && seconds < 60.0, "{}: {seconds}", p.id);
            let budget = config.for_reference(Some(Duration::from_secs_f64(seconds)));
            let want = (seconds * config.reference_factor).max(config.cpu_time.as_secs_f64());
            assert!(
                (budget.cpu_time.as_secs_f64() - want).abs() < 1e-9,
                "{}",
                p.id
            );
            let ratio = budget.cpu_time.as_secs_f64() / config.cpu_time.as_secs_f64();
            assert!(
                (budget.wall_time.as_secs_f64() - config.wall_time.as_secs_f64() * ratio).abs()
                    < 1e-6
            );
        }
    }
    // MBPP 123 (`amicable_numbers_sum(9999)`) takes seconds of CPU: its budget is above the floor.
    assert!(times["mbpp"]["123"] > 1.0, "{}", times["mbpp"]["123"]);
    // LeetCode ships no solutions: its problems keep the floor.
    for p in Benchmark::LeetCode.load(&data_dir()).unwrap() {
        assert!(matches!(
            p.task,
            Task::Code {
                reference_cpu_seconds: None,
                ..
            }
        ));
    }
}

#[test]
fn a_malformed_reference_table_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(em_grade::reference::FILE),
        "{\"mbpp\": {\"1\": -2.0}}",
    )
    .unwrap();
    let err = em_grade::reference::load_times(dir.path()).unwrap_err();
    assert!(
        matches!(&err, GradeError::Field { field, .. } if field == "mbpp.1"),
        "{err}"
    );
    std::fs::write(dir.path().join(em_grade::reference::FILE), "{\"mbpp\": [1]").unwrap();
    let err = em_grade::reference::load_times(dir.path()).unwrap_err();
    assert!(matches!(err, GradeError::Json { .. }), "{err}");
}

#[test]
fn leetcode_harness_calls_solution_methods() {
    let p = &Benchmark::LeetCode.load(&data_dir()).unwrap()[0];
    let Task::Code { harness, .. } = &p.task else {
        panic!()
    };
    let good = "```python\nclass Solution:\n    def minimumPushes(self, word: str) -> int:\n        return sum(i // 8 + 1 for i in range(len(word)))\n```";
    let bad = "```python\nclass Solution:\n    def minimumPushes(self, word: str) -> int:\n        return len(word)\n```";
    let config = SandboxConfig::default();
    assert!(grade_code(good, harness, &config).unwrap().passed);
    let v = grade_code(bad, harness, &config).unwrap();
    assert!(!v.passed);
    assert_eq!(
        v.outcome,
        CodeOutcome::Failed {
            reason: "AssertionError".into()
        }
    );
    // Exiting early with status 0 skips the tests: not a pass.
    let sneaky = "```python\nimport sys\nclass Solution:\n    def minimumPushes(self, word):\n        return 0\nsys.exit(0)\n```";
    let v = grade_code(sneaky, harness, &config).unwrap();
    assert!(!v.passed);
    assert_eq!(v.outcome, CodeOutcome::ExitedEarly);
    assert_eq!(
        grade_code("no code", harness, &config).unwrap().outcome,
        CodeOutcome::NoCode
    );
    // The same through `grade`, with the typed stage.
    let g = grade(p, bad, &config).unwrap();
    assert!(!g.correct);
    assert_eq!(g.stage.to_string(), "AssertionError");
    assert!(matches!(g.stage, GradeStage::Code { .. }));
    assert!(g.extracted.unwrap().contains("return len(word)"));
    assert!(test_program("pass", harness, "MARK").ends_with("print(\"MARK\")\n"));
}

#[test]
fn pass_at_k_matches_exact_binomials() {
    fn binom(n: u128, k: u128) -> u128 {
        if k > n {
            return 0;
        }
        (0..k).fold(1u128, |acc, i| acc * (n - i) / (i + 1))
    }
    for n in 1..=20usize {
        for c in 0..=n {
            for k in 1..=n {
                let exact = 1.0
                    - binom((n - c) as u128, k as u128) as f64 / binom(n as u128, k as u128) as f64;
                assert!(
                    (pass_at_k(n, c, k) - exact).abs() < 1e-12,
                    "n={n} c={c} k={k}"
                );
            }
        }
    }
    assert!((pass_at_k(10, 3, 1) - 0.3).abs() < 1e-15);
}
