//! Benchmark files → one [`Problem`] type (`docs/method.md` §5), with errors that
//! name the file, the line and the field at fault.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use crate::error::GradeError;

/// One benchmark problem.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// Unique within its benchmark.
    pub id: String,
    /// The benchmark's name (`math500`, `humaneval`, ...).
    pub benchmark: String,
    /// What the model is asked (the problem statement, or the code prompt).
    pub question: String,
    /// How an answer is checked.
    pub task: Task,
}

/// How a problem is graded.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Task {
    /// Compare the extracted final answer with `answer` (see `math::answers_match`).
    Math {
        /// The reference answer (several answers joined by ", ").
        answer: String,
    },
    /// Run the extracted program against tests in the sandbox.
    Code {
        /// The tests and how to call them.
        harness: CodeHarness,
        /// CPU seconds the benchmark's reference solution takes in the sandbox (from
        /// `data/reference_cpu.json`, see [`crate::reference`]), which scales this problem's
        /// CPU budget ([`crate::sandbox::SandboxConfig::for_reference`]); `None` when unknown.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference_cpu_seconds: Option<f64>,
    },
}

/// The test program of a code problem.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "style")]
pub enum CodeHarness {
    /// HumanEval: `test` defines `check(candidate)`, called with `entry_point`; the prompt's
    /// signature and imports are prepended when the completion lacks the function.
    HumanEval {
        /// The function's signature and docstring.
        prompt: String,
        /// Defines `check`.
        test: String,
        /// The function under test.
        entry_point: String,
    },
    /// MBPP: `test_imports`, then the code, then each `assert`.
    Mbpp {
        /// Imports the tests need.
        test_imports: Vec<String>,
        /// `assert` lines.
        tests: Vec<String>,
    },
    /// LeetCode: common imports, the code (a `class Solution`), then `test` (asserts on
    /// `Solution()` methods).
    LeetCode {
        /// The test code.
        test: String,
    },
}

/// The benchmarks em-grade ships (files under `em-grade/data/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Benchmark {
    /// MATH500 (500).
    Math500,
    /// AIME 2022-2024 (90).
    Aime,
    /// AMC 2022-2023 (83).
    Amc,
    /// Minerva Math (272).
    Minerva,
    /// OlympiadBench, English text-only (675).
    OlympiadBench,
    /// LeetCode contests (180).
    LeetCode,
    /// HumanEval (164).
    HumanEval,
    /// MBPP (399).
    Mbpp,
}

impl Benchmark {
    /// Every benchmark.
    pub const ALL: [Benchmark; 8] = [
        Benchmark::Math500,
        Benchmark::Aime,
        Benchmark::Amc,
        Benchmark::Minerva,
        Benchmark::OlympiadBench,
        Benchmark::LeetCode,
        Benchmark::HumanEval,
        Benchmark::Mbpp,
    ];

    /// The short name used on command lines and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Benchmark::Math500 => "math500",
            Benchmark::Aime => "aime",
            Benchmark::Amc => "amc",
            Benchmark::Minerva => "minerva",
            Benchmark::OlympiadBench => "olympiadbench",
            Benchmark::LeetCode => "leetcode",
            Benchmark::HumanEval => "humaneval",
            Benchmark::Mbpp => "mbpp",
        }
    }

    /// Parses [`Benchmark::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Whether answers are programs.
    pub fn is_code(self) -> bool {
        matches!(
            self,
            Benchmark::LeetCode | Benchmark::HumanEval | Benchmark::Mbpp
        )
    }

    /// The file, relative to the data directory.
    pub fn file(self) -> &'static str {
        match self {
            Benchmark::Math500 => "math500/math_test_cleaned.json",
            Benchmark::Aime => "aimo-validation-aime/aimo-validation-aime.jsonl",
            Benchmark::Amc => "aimo-validation-amc/aimo-validation-amc.jsonl",
            Benchmark::Minerva => "minerva_math/test.jsonl",
            Benchmark::OlympiadBench => "olympiadbench/test.jsonl",
            Benchmark::LeetCode => "leetcode/leetcode-test.json",
            Benchmark::HumanEval => "humaneval/HumanEval.jsonl.gz",
            Benchmark::Mbpp => "mbpp/new_mbpp.json",
        }
    }

    /// Loads the benchmark from `data_dir` (e.g. [`data_dir`]).
    ///
    /// # Errors
    /// [`GradeError`] naming the file, line and field.
    pub fn load(self, data_dir: &Path) -> Result<Vec<Problem>, GradeError> {
        let path = data_dir.join(self.file());
        let name = self.name();
        let problems = match self {
            Benchmark::Math500 => load_math500(&path)?,
            Benchmark::Aime => load_jsonl(
                &path,
                name,
                &JsonlFields {
                    id: "id",
                    question: "question",
                    answer: "answer",
                },
            )?,
            // The AMC file joins two sources whose `id`s both start at 0: the problem's page
            // (`2022_AMC_12A_Problems/Problem_1`) names it uniquely.
            Benchmark::Amc => each_jsonl(&path, |r| {
                let url = r.string("url")?;
                let id = url.rsplitn(3, '/').take(2).collect::<Vec<_>>();
                if id.len() < 2 {
                    return Err(r.error("url", "expected .../<contest>/<problem>"));
                }
                Ok(Problem {
                    id: format!("{}/{}", id[1], id[0]),
                    benchmark: name.into(),
                    question: r.string("question")?,
                    task: Task::Math {
                        answer: r.scalar("answer")?,
                    },
                })
            })?,
            Benchmark::Minerva => each_jsonl(&path, |r| {
                let solution = r.string("solution")?;
                let answer = crate::math::last_boxed(&solution)
                    .ok_or_else(|| r.error("solution", "no \\boxed{} answer in it"))?;
                Ok(Problem {
                    id: r.scalar("idx")?,
                    benchmark: name.into(),
                    question: r.string("problem")?,
                    task: Task::Math { answer },
                })
            })?,
            Benchmark::OlympiadBench => each_jsonl(&path, |r| {
                let answers = r.strings("final_answer")?;
                if answers.is_empty() {
                    return Err(r.error("final_answer", "empty list"));
                }
                let question = match r.optional_string("context")? {
                    Some(context) if !context.trim().is_empty() => {
                        format!("{context}\n\n{}", r.string("question")?)
                    }
                    _ => r.string("question")?,
                };
                Ok(Problem {
                    id: r.scalar("id")?,
                    benchmark: name.into(),
                    question,
                    task: Task::Math {
                        answer: answers.join(", "),
                    },
                })
            })?,
            Benchmark::LeetCode => each_jsonl(&path, |r| {
                Ok(Problem {
                    id: r.string("task_id")?,
                    benchmark: name.into(),
                    question: r.string("prompt_sft")?,
                    task: Task::Code {
                        harness: CodeHarness::LeetCode {
                            test: r.string("test")?,
                        },
                        reference_cpu_seconds: None,
                    },
                })
            })?,
            Benchmark::HumanEval => each_jsonl(&path, |r| {
                let prompt = r.string("prompt")?;
                Ok(Problem {
                    id: r.string("task_id")?,
                    benchmark: name.into(),
                    question: prompt.clone(),
                    task: Task::Code {
                        harness: CodeHarness::HumanEval {
                            prompt,
                            test: r.string("test")?,
                            entry_point: r.string("entry_point")?,
                        },
                        reference_cpu_seconds: None,
                    },
                })
            })?,
            Benchmark::Mbpp => load_mbpp(&path)?,
        };
        check_unique(&path, &problems)?;
        let mut problems = problems;
        crate::reference::attach(data_dir, self, &mut problems)?;
        Ok(problems)
    }
}

/// The benchmark files shipped with em-grade (`em-grade/data`).
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

fn check_unique(path: &Path, problems: &[Problem]) -> Result<(), GradeError> {
    let mut seen = std::collections::HashSet::new();
    for p in problems {
        if !seen.insert(&p.id) {
            return Err(GradeError::DuplicateId {
                path: path.to_path_buf(),
                id: p.id.clone(),
            });
        }
    }
    Ok(())
}

/// Field names for [`load_jsonl`].
#[derive(Debug, Clone, Copy)]
pub struct JsonlFields<'a> {
    /// The id field (string or number).
    pub id: &'a str,
    /// The question field.
    pub question: &'a str,
    /// The reference answer field (string or number; a number like `142.0` becomes `142`).
    pub answer: &'a str,
}

/// A generic math set in JSON Lines: one object per line with the given fields. Blank lines
/// are skipped.
///
/// # Errors
/// [`GradeError`] naming the file, line and field.
pub fn load_jsonl(
    path: &Path,
    benchmark: &str,
    fields: &JsonlFields<'_>,
) -> Result<Vec<Problem>, GradeError> {
    let problems = each_jsonl(path, |r| {
        Ok(Problem {
            id: r.scalar(fields.id)?,
            benchmark: benchmark.into(),
            question: r.string(fields.question)?,
            task: Task::Math {
                answer: r.scalar(fields.answer)?,
            },
        })
    })?;
    check_unique(path, &problems)?;
    Ok(problems)
}

/// One JSON record being read, for error messages.
struct Record<'a> {
    path: &'a Path,
    line: usize,
    value: serde_json::Value,
}

impl Record<'_> {
    fn error(&self, field: &str, message: impl Into<String>) -> GradeError {
        GradeError::Field {
            path: self.path.to_path_buf(),
            line: Some(self.line),
            field: field.into(),
            message: message.into(),
        }
    }

    fn get(&self, field: &str) -> Result<&serde_json::Value, GradeError> {
        match self.value.get(field) {
            Some(serde_json::Value::Null) | None => Err(self.error(field, "missing")),
            Some(v) => Ok(v),
        }
    }

    fn string(&self, field: &str) -> Result<String, GradeError> {
        self.get(field)?
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| self.error(field, "expected a string"))
    }

    fn optional_string(&self, field: &str) -> Result<Option<String>, GradeError> {
        match self.value.get(field) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(_) => self.string(field).map(Some),
        }
    }

    /// A string, or a number written as an integer when it is one (`142.0` → `142`).
    fn scalar(&self, field: &str) -> Result<String, GradeError> {
        match self.get(field)? {
            serde_json::Value::String(s) => Ok(s.clone()),
            serde_json::Value::Number(n) => Ok(match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => i.to_string(),
                (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
                _ => n.to_string(),
            }),
            _ => Err(self.error(field, "expected a string or a number")),
        }
    }

    fn strings(&self, field: &str) -> Result<Vec<String>, GradeError> {
        self.get(field)?
            .as_array()
            .ok_or_else(|| self.error(field, "expected a list"))?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| self.error(field, "expected a list of strings"))
            })
            .collect()
    }
}

pub(crate) fn open(path: &Path) -> Result<Box<dyn BufRead>, GradeError> {
    let io = |source| GradeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(std::io::BufReader::new(
            flate2::read::GzDecoder::new(file),
        )))
    } else {
        Ok(Box::new(std::io::BufReader::new(file)))
    }
}

/// The records of a JSON Lines file (gzip when it ends in `.gz`) with their 1-based line
/// numbers; blank lines are skipped.
pub(crate) fn read_jsonl(path: &Path) -> Result<Vec<(usize, serde_json::Value)>, GradeError> {
    let mut out = Vec::new();
    for (i, line) in open(path)?.lines().enumerate() {
        let line = line.map_err(|source| GradeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str(&line).map_err(|source| GradeError::Json {
            path: path.to_path_buf(),
            line: Some(i + 1),
            source,
        })?;
        out.push((i + 1, value));
    }
    Ok(out)
}

fn each_jsonl(
    path: &Path,
    mut parse: impl FnMut(&Record<'_>) -> Result<Problem, GradeError>,
) -> Result<Vec<Problem>, GradeError> {
    read_jsonl(path)?
        .into_iter()
        .map(|(line, value)| parse(&Record { path, line, value }))
        .collect()
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader never sees a half-written file (the one atomic write of em-grade and em-eval).
///
/// # Errors
/// [`GradeError::Io`] naming `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), GradeError> {
    use std::io::Write;
    let io = |source| GradeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value, GradeError> {
    let mut text = String::new();
    open(path)?
        .read_to_string(&mut text)
        .map_err(|source| GradeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    serde_json::from_str(&text).map_err(|source| GradeError::Json {
        path: path.to_path_buf(),
        line: None,
        source,
    })
}

/// MATH500's column-oriented JSON: `{field: {row: value}}`.
fn load_math500(path: &Path) -> Result<Vec<Problem>, GradeError> {
    let json = read_json(path)?;
    let field_error = |field: &str, row: Option<usize>, message: &str| GradeError::Field {
        path: path.to_path_buf(),
        line: row,
        field: field.into(),
        message: message.into(),
    };
    let column = |field: &str| {
        json.get(field)
            .and_then(|c| c.as_object())
            .ok_or_else(|| field_error(field, None, "missing column (expected {row: value})"))
    };
    let problems = column("problem")?;
    let answers = column("expected_answer")?;
    let ids = column("id")?;
    let mut rows: Vec<(usize, &String)> = problems
        .keys()
        .map(|k| (k.parse::<usize>().unwrap_or(usize::MAX), k))
        .collect();
    rows.sort();
    rows.into_iter()
        .map(|(n, key)| {
            let line = Some(n.saturating_add(1));
            let text = |col: &serde_json::Map<String, serde_json::Value>, field: &str| {
                col.get(key)
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        field_error(field, line, &format!("row {key}: missing or not a string"))
                    })
            };
            Ok(Problem {
                id: text(ids, "id")?,
                benchmark: "math500".into(),
                question: text(problems, "problem")?,
                task: Task::Math {
                    answer: text(answers, "expected_answer")?,
                },
            })
        })
        .collect()
}

/// MBPP's JSON list.
fn load_mbpp(path: &Path) -> Result<Vec<Problem>, GradeError> {
    let json = read_json(path)?;
    let list = json.as_array().ok_or_else(|| GradeError::Field {
        path: path.to_path_buf(),
        line: None,
        field: "(top level)".into(),
        message: "expected a JSON list".into(),
    })?;
    list.iter()
        .enumerate()
        .map(|(i, value)| {
            let r = Record {
                path,
                line: i + 1,
                value: value.clone(),
            };
            let tests = r.strings("test_list")?;
            let test_imports = match r.value.get("test_imports") {
                None | Some(serde_json::Value::Null) => Vec::new(),
                Some(_) => r.strings("test_imports")?,
            };
            // The function name the tests call, so the model can name it right.
            let example = tests.first().cloned().unwrap_or_default();
            Ok(Problem {
                id: r.scalar("task_id")?,
                benchmark: "mbpp".into(),
                question: format!("{}\n{example}", r.string("prompt")?),
                task: Task::Code {
                    harness: CodeHarness::Mbpp {
                        test_imports,
                        tests,
                    },
                    reference_cpu_seconds: None,
                },
            })
        })
        .collect()
}
