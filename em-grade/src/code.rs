//! Code answers: extracting the program from a model's output, building the test program of
//! each benchmark's harness, running it in the [`sandbox`](crate::sandbox), pass@k.

use crate::error::Result;
use crate::problems::CodeHarness;
use crate::sandbox::{Limit, RunResult, SandboxConfig, Status, run_python};

/// The program in a model's output (`docs/method.md` §4): the last ```` ```python ````
/// block containing `def ` (or `class `); else the last fenced block of any language with one;
/// else the whole text when it has one. `None` when there is no function at all.
pub fn extract_code(text: &str) -> Option<String> {
    let blocks = fenced_blocks(text);
    let has_def = |code: &str| code.contains("def ") || code.contains("class ");
    blocks
        .iter()
        .rev()
        .find(|(lang, code)| {
            (lang.eq_ignore_ascii_case("python") || lang.eq_ignore_ascii_case("py"))
                && has_def(code)
        })
        .or_else(|| blocks.iter().rev().find(|(_, code)| has_def(code)))
        .map(|(_, code)| code.clone())
        .or_else(|| has_def(text).then(|| text.to_string()))
}

/// `(language, code)` of every ```` ``` ```` block; an unclosed last block runs to the end.
fn fenced_blocks(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        let (lang, body) = match after.find('\n') {
            Some(nl) => (after[..nl].trim().to_string(), &after[nl + 1..]),
            None => break,
        };
        match body.find("```") {
            Some(end) => {
                out.push((lang, body[..end].to_string()));
                rest = &body[end + 3..];
            }
            None => {
                out.push((lang, body.to_string()));
                break;
            }
        }
    }
    out
}

/// Imports LeetCode solutions assume (the contest environment has them).
const LEETCODE_PRELUDE: &str = "from typing import *\nfrom collections import *\nfrom functools import *\nfrom itertools import *\nfrom heapq import *\nfrom bisect import *\nfrom math import *\nimport math, heapq, bisect, itertools, functools, collections, string, re\n";

/// The whole test program for `code` under `harness`, ending with a line that prints `marker`:
/// a run passes only if it exits 0 **and** prints the marker, so code that calls `exit(0)`
/// before the tests run does not pass.
pub fn test_program(code: &str, harness: &CodeHarness, marker: &str) -> String {
    let body = match harness {
        CodeHarness::HumanEval {
            prompt,
            test,
            entry_point,
        } => {
            let defines = code.contains(&format!("def {entry_point}"));
            let program = if defines {
                // Keep the prompt's imports (and helper functions) in front of a full solution.
                let header: String = prompt
                    .lines()
                    .filter(|l| l.starts_with("import ") || l.starts_with("from "))
                    .map(|l| format!("{l}\n"))
                    .collect();
                format!("{header}{code}")
            } else {
                format!("{prompt}{code}")
            };
            format!("{program}\n\n{test}\n\ncheck({entry_point})\n")
        }
        CodeHarness::Mbpp {
            test_imports,
            tests,
        } => format!(
            "{}\n{code}\n\n{}\n",
            test_imports.join("\n"),
            tests.join("\n")
        ),
        CodeHarness::LeetCode { test } => format!("{LEETCODE_PRELUDE}\n{code}\n\n{test}\n"),
    };
    format!("{body}\nprint({marker:?})\n")
}

/// How a program fared against its tests.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum CodeOutcome {
    /// It ran every test and exited 0.
    Passed,
    /// The output holds no program.
    NoCode,
    /// It exited 0 before the tests finished (e.g. `sys.exit(0)` at import).
    ExitedEarly,
    /// A non-zero exit: a failed assertion or another exception.
    Failed {
        /// The exception's name (`AssertionError`, `NameError`, ...) or `exit code N`.
        reason: String,
    },
    /// A sandbox limit stopped it (after the retries of a timeout).
    LimitExceeded {
        /// Which limit.
        limit: Limit,
    },
    /// Killed by another signal.
    Signaled {
        /// The signal number.
        signal: i32,
    },
}

impl std::fmt::Display for CodeOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodeOutcome::Passed => f.write_str("passed"),
            CodeOutcome::NoCode => f.write_str("no code"),
            CodeOutcome::ExitedEarly => f.write_str("exited before the tests finished"),
            CodeOutcome::Failed { reason } => f.write_str(reason),
            CodeOutcome::LimitExceeded { limit } => write!(f, "limit exceeded: {}", limit.name()),
            CodeOutcome::Signaled { signal } => write!(f, "signal {signal}"),
        }
    }
}

/// The verdict of one program against its tests.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CodeVerdict {
    /// All tests passed.
    pub passed: bool,
    /// How it ended.
    pub outcome: CodeOutcome,
    /// The extracted program, if any.
    pub code: Option<String>,
    /// The sandbox run, when there was one (its `attempts`, CPU seconds and limits included).
    pub run: Option<RunResult>,
}

/// Extracts the program from `output` and runs it against `harness` under `config` (for a
/// benchmark problem, scale it first with [`SandboxConfig::for_reference`]; [`crate::grade`]
/// does).
///
/// # Errors
/// [`crate::GradeError`] when the sandbox itself cannot start or `config` is unusable.
pub fn grade_code(
    output: &str,
    harness: &CodeHarness,
    config: &SandboxConfig,
) -> Result<CodeVerdict> {
    let Some(code) = extract_code(output) else {
        return Ok(CodeVerdict {
            passed: false,
            outcome: CodeOutcome::NoCode,
            code: None,
            run: None,
        });
    };
    let marker = format!("em-grade-done-{:016x}", nonce());
    let run = run_python(&test_program(&code, harness, &marker), config)?;
    let finished = run.stdout.lines().any(|l| l == marker);
    let outcome = match &run.status {
        Status::Passed if finished => CodeOutcome::Passed,
        Status::Passed => CodeOutcome::ExitedEarly,
        Status::Failed { reason, code } => CodeOutcome::Failed {
            reason: if reason.is_empty() {
                format!("exit code {code}")
            } else {
                reason.clone()
            },
        },
        Status::LimitExceeded { limit } => CodeOutcome::LimitExceeded { limit: *limit },
        Status::Signaled { signal } => CodeOutcome::Signaled { signal: *signal },
    };
    Ok(CodeVerdict {
        passed: outcome == CodeOutcome::Passed,
        outcome,
        code: Some(code),
        run: Some(run),
    })
}

/// A fresh 64-bit value for the end-of-tests marker (not guessable by the code under test
/// before it runs).
fn nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// The unbiased pass@k estimator from `n` samples of which `c` passed:
/// `1 − C(n−c, k) / C(n, k)`, computed as a product (no overflow).
///
/// # Panics
/// If `c > n` or `k` is 0 or `k > n`.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    assert!(
        c <= n && k >= 1 && k <= n,
        "pass_at_k: need c ≤ n and 1 ≤ k ≤ n, got n={n} c={c} k={k}"
    );
    if n - c < k {
        return 1.0;
    }
    1.0 - ((n - c + 1)..=n)
        .map(|i| 1.0 - k as f64 / i as f64)
        .product::<f64>()
}

/// Runs `jobs` on at most `workers` threads (default: the machine's cores), returning results in
/// job order.
///
/// Its own scoped threads rather than rayon: a grading job mostly waits on a Python child
/// process, and rayon's global pool is the one burn's CPU backend computes on, so blocking its
/// threads on sandbox runs would stall tensor work in the same process (em-eval grades while a
/// model generates); a private rayon pool would be a dependency for these fifteen lines.
pub fn run_pool<T: Sync, R: Send>(
    jobs: &[T],
    workers: Option<usize>,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let workers = workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, jobs.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<R>>> =
        jobs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let r = work(job);
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(r);
                    }
                }
            });
        }
    });
    results
        .into_iter()
        .filter_map(|m| m.into_inner().ok().flatten())
        .collect()
}
