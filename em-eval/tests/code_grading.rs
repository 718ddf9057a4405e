//! Code grading: extraction rules, every benchmark's harness against its own canonical
//! solutions (all must pass) and against broken ones (all must fail), pass@k against exact
//! binomials.
#![allow(clippy::unwrap_used)]

use em_eval::code::{extract_code, grade_code, pass_at_k, run_pool, test_program};
use em_eval::problems::{Benchmark, CodeHarness, Task, data_dir};
use em_eval::sandbox::SandboxConfig;

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

fn canonical(b: Benchmark) -> Vec<(CodeHarness, String)> {
    let raw: Vec<serde_json::Value> = match b {
        Benchmark::HumanEval => {
            use std::io::BufRead;
            let f = std::fs::File::open(data_dir().join(b.file())).unwrap();
            std::io::BufReader::new(flate2::read::GzDecoder::new(f))
                .lines()
                .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
                .collect()
        }
        _ => serde_json::from_str(&std::fs::read_to_string(data_dir().join(b.file())).unwrap())
            .unwrap(),
    };
    let problems = b.load(&data_dir()).unwrap();
    problems
        .into_iter()
        .zip(raw)
        .map(|(p, r)| {
            let Task::Code { harness } = p.task else {
                panic!()
            };
            let solution = match b {
                Benchmark::HumanEval => format!(
                    "{}{}",
                    r["prompt"].as_str().unwrap(),
                    r["canonical_solution"].as_str().unwrap()
                ),
                _ => r["code"].as_str().unwrap().to_string(),
            };
            (
                harness,
                format!("Here you go:\n```python\n{solution}\n```\n"),
            )
        })
        .collect()
}

#[test]
fn canonical_solutions_pass_and_broken_ones_fail() {
    let config = SandboxConfig::default();
    for b in [Benchmark::HumanEval, Benchmark::Mbpp] {
        let cases = canonical(b);
        let t = std::time::Instant::now();
        let verdicts = run_pool(&cases, None, |(h, out)| {
            grade_code(out, h, &config).unwrap()
        });
        let failed: Vec<_> = verdicts
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.passed)
            .map(|(i, v)| (i, v.reason.clone()))
            .collect();
        eprintln!(
            "{}: {} canonical solutions in {:.1} s",
            b.name(),
            cases.len(),
            t.elapsed().as_secs_f64()
        );
        assert!(failed.is_empty(), "{}: {failed:?}", b.name());
        // Every solution made to return None fails its tests (a sample, to keep it quick).
        let broken: Vec<_> = cases
            .iter()
            .step_by(16)
            .map(|(h, out)| (h.clone(), out.replace("return ", "return None and ")))
            .collect();
        let verdicts = run_pool(&broken, None, |(h, out)| {
            grade_code(out, h, &config).unwrap()
        });
        for (v, (_, out)) in verdicts.iter().zip(&broken) {
            if out.contains("return None and ") {
                assert!(!v.passed, "{}: a broken solution passed:\n{out}", b.name());
            }
        }
    }
}

#[test]
fn leetcode_harness_calls_solution_methods() {
    let p = &Benchmark::LeetCode.load(&data_dir()).unwrap()[0];
    let Task::Code { harness } = &p.task else {
        panic!()
    };
    let good = "```python\nclass Solution:\n    def minimumPushes(self, word: str) -> int:\n        return sum(i // 8 + 1 for i in range(len(word)))\n```";
    let bad = "```python\nclass Solution:\n    def minimumPushes(self, word: str) -> int:\n        return len(word)\n```";
    let config = SandboxConfig::default();
    assert!(grade_code(good, harness, &config).unwrap().passed);
    let v = grade_code(bad, harness, &config).unwrap();
    assert!(!v.passed);
    assert_eq!(v.reason, "AssertionError");
    // Exiting early with status 0 skips the tests: not a pass.
    let sneaky = "```python\nimport sys\nclass Solution:\n    def minimumPushes(self, word):\n        return 0\nsys.exit(0)\n```";
    let v = grade_code(sneaky, harness, &config).unwrap();
    assert!(!v.passed);
    assert_eq!(v.reason, "exited before the tests finished");
    assert_eq!(
        grade_code("no code", harness, &config).unwrap().reason,
        "no code"
    );
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
