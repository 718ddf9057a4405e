//! Training data: fixed samples (`{"prompt_ids", "response_ids"}` or `{"prompt", "response"}`
//! per line), prompts from a benchmark or a JSON Lines file, and the order a run takes them
//! in: step `s` takes items `(s−1)·B … s·B−1` of an endless sequence of epochs, each epoch in
//! file order or shuffled by its own seed. The order is a function of the step alone, so a
//! resumed run takes exactly the batches an uninterrupted one would.

use std::io::BufRead;
use std::path::Path;

use em_models::Tokenizer;

use crate::error::{Result, TrainError, io};

/// One fixed sample: a prompt and a response, as token ids.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// The prompt (at least one token).
    pub prompt_ids: Vec<u32>,
    /// The response (at least one token; an EOS is part of it only if it is in the ids).
    pub response_ids: Vec<u32>,
}

impl Sample {
    /// Prompt plus response length.
    pub fn len(&self) -> usize {
        self.prompt_ids.len() + self.response_ids.len()
    }

    /// Whether both are empty (never true for a sample that was read or generated).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The non-blank lines of a JSON Lines file, parsed, with their 1-based line numbers.
///
/// # Errors
/// [`TrainError::Io`]; [`TrainError::Data`] naming the line for invalid JSON or a line that is
/// not an object.
pub fn read_jsonl(path: &Path) -> Result<Vec<(usize, serde_json::Map<String, serde_json::Value>)>> {
    let file = std::fs::File::open(path).map_err(io(path))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io(path))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| TrainError::Data {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(serde_json::Value::Object(map)) => out.push((i + 1, map)),
            Ok(_) => return Err(bad("expected a JSON object".into())),
            Err(e) => return Err(bad(format!("invalid JSON: {e}"))),
        }
    }
    Ok(out)
}

/// Reads a samples file. A line has either `prompt_ids` and `response_ids` (non-empty arrays of
/// token ids) or `prompt` and `response` (text: the prompt is encoded as is, the response
/// without special tokens, and no EOS is appended; needs `tokenizer`). Every id must be below
/// `vocab_size`.
///
/// # Errors
/// [`TrainError::Data`] naming the line and the field; [`TrainError::NeedsTokenizer`] for text
/// lines without a tokenizer; [`TrainError::NoData`] for a file without samples.
pub fn read_samples(
    path: &Path,
    tokenizer: Option<&Tokenizer>,
    vocab_size: usize,
) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for (line, map) in read_jsonl(path)? {
        let bad = |message: String| TrainError::Data {
            path: path.to_path_buf(),
            line,
            message,
        };
        let ids = |field: &str| token_ids(&map, field, vocab_size).map_err(bad);
        let text = |field: &str| -> Result<String> {
            match map.get(field) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(bad(format!("`{field}` must be a string, got {other}"))),
                None => Err(bad(format!("missing `{field}`"))),
            }
        };
        let sample = if map.contains_key("prompt_ids") || map.contains_key("response_ids") {
            Sample {
                prompt_ids: ids("prompt_ids")?,
                response_ids: ids("response_ids")?,
            }
        } else if map.contains_key("prompt") || map.contains_key("response") {
            let tokenizer = tokenizer.ok_or(TrainError::NeedsTokenizer("a text sample"))?;
            Sample {
                prompt_ids: tokenizer.encode(&text("prompt")?, false)?,
                response_ids: tokenizer.encode(&text("response")?, false)?,
            }
        } else {
            return Err(bad(
                "expected `prompt_ids` and `response_ids`, or `prompt` and `response`".into(),
            ));
        };
        if sample.prompt_ids.is_empty() {
            return Err(bad("the prompt is empty".into()));
        }
        if sample.response_ids.is_empty() {
            return Err(bad("the response is empty: nothing to train on".into()));
        }
        samples.push(sample);
    }
    if samples.is_empty() {
        return Err(TrainError::NoData(format!(
            "{} has no samples",
            path.display()
        )));
    }
    Ok(samples)
}

/// The token ids in `field` of a JSON object: an array of integers below `vocab_size`.
fn token_ids(
    map: &serde_json::Map<String, serde_json::Value>,
    field: &str,
    vocab_size: usize,
) -> std::result::Result<Vec<u32>, String> {
    let Some(value) = map.get(field) else {
        return Err(format!("missing `{field}`"));
    };
    let Some(items) = value.as_array() else {
        return Err(format!("`{field}` must be an array of token ids"));
    };
    items
        .iter()
        .map(|v| match v.as_u64() {
            Some(id) if (id as usize) < vocab_size => Ok(id as u32),
            Some(id) => Err(format!(
                "`{field}` has id {id}, outside the vocabulary of {vocab_size}"
            )),
            None => Err(format!("`{field}` has {v}, not a token id")),
        })
        .collect()
}

/// One group of replayed rollouts: a prompt, its `group_size` responses, and optionally the
/// reference answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayGroup {
    /// The prompt's ids.
    pub prompt_ids: Vec<u32>,
    /// The responses' ids (each non-empty).
    pub responses: Vec<Vec<u32>>,
    /// The reference answer, when the lines carry one (`"answer"`, string or number).
    pub answer: Option<String>,
}

/// Reads a replay file: `{"prompt_ids": [...], "response_ids": [...]}` lines (optional
/// `"answer"`), in groups of exactly `group_size` consecutive lines with identical
/// `prompt_ids` (and answers).
///
/// # Errors
/// [`TrainError::Data`] naming the line for a bad field, a group whose prompt changes before
/// `group_size` lines, or a last group that is short; [`TrainError::NoData`] for an empty file.
pub fn read_replay(path: &Path, group_size: usize, vocab_size: usize) -> Result<Vec<ReplayGroup>> {
    let lines = read_jsonl(path)?;
    let mut groups: Vec<ReplayGroup> = Vec::new();
    let mut last_line = 0;
    for (i, (line, map)) in lines.iter().enumerate() {
        last_line = *line;
        let bad = |message: String| TrainError::Data {
            path: path.to_path_buf(),
            line: *line,
            message,
        };
        let prompt_ids = token_ids(map, "prompt_ids", vocab_size).map_err(bad)?;
        let response = token_ids(map, "response_ids", vocab_size).map_err(bad)?;
        if prompt_ids.is_empty() || response.is_empty() {
            return Err(bad("empty prompt or response".into()));
        }
        let answer = match map.get("answer") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            Some(other) => return Err(bad(format!("`answer` must be a string, got {other}"))),
        };
        if i % group_size == 0 {
            groups.push(ReplayGroup {
                prompt_ids,
                responses: vec![response],
                answer,
            });
            continue;
        }
        let Some(group) = groups.last_mut() else {
            continue;
        };
        if group.prompt_ids != prompt_ids || group.answer != answer {
            return Err(bad(format!(
                "line {} of a group of {group_size} has another prompt or answer than the group's first line",
                i % group_size + 1
            )));
        }
        group.responses.push(response);
    }
    if let Some(group) = groups.last()
        && group.responses.len() != group_size
    {
        return Err(TrainError::Data {
            path: path.to_path_buf(),
            line: last_line,
            message: format!(
                "the last group has {} lines; groups have exactly {group_size}",
                group.responses.len()
            ),
        });
    }
    if groups.is_empty() {
        return Err(TrainError::NoData(format!(
            "{} has no rollouts",
            path.display()
        )));
    }
    Ok(groups)
}

/// Reads the prompt texts of a JSON Lines file from `field` (a string on every line) and, with
/// `answer_field`, each line's reference answer (a string or a number).
///
/// # Errors
/// [`TrainError::Data`] naming the line; [`TrainError::NoData`] for an empty file.
pub fn read_prompts(
    path: &Path,
    field: &str,
    answer_field: Option<&str>,
) -> Result<Vec<(String, Option<String>)>> {
    let mut prompts = Vec::new();
    for (line, map) in read_jsonl(path)? {
        let answer = match answer_field {
            None => None,
            Some(a) => Some(match map.get(a) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Number(n)) => n.to_string(),
                other => {
                    return Err(TrainError::Data {
                        path: path.to_path_buf(),
                        line,
                        message: match other {
                            None => format!("missing `{a}`"),
                            Some(v) => format!("`{a}` must be a string or a number, got {v}"),
                        },
                    });
                }
            }),
        };
        match map.get(field) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => {
                prompts.push((s.clone(), answer))
            }
            other => {
                return Err(TrainError::Data {
                    path: path.to_path_buf(),
                    line,
                    message: match other {
                        None => format!("missing `{field}`"),
                        Some(v) => format!("`{field}` must be a non-empty string, got {v}"),
                    },
                });
            }
        }
    }
    if prompts.is_empty() {
        return Err(TrainError::NoData(format!(
            "{} has no prompts",
            path.display()
        )));
    }
    Ok(prompts)
}

/// The indices (into `n` items) that optimiser step `step` (1-based) takes, `batch` of them:
/// positions `(step−1)·batch …` of the endless sequence of epochs, each epoch in order or, with
/// `shuffle`, permuted by a seed derived from it and the epoch number.
pub fn batch_indices(n: usize, batch: usize, step: usize, shuffle: Option<u64>) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let start = (step.max(1) - 1) * batch;
    let mut epoch_cache: Option<(usize, Vec<usize>)> = None;
    (start..start + batch)
        .map(|position| {
            let (epoch, within) = (position / n, position % n);
            match shuffle {
                None => within,
                Some(seed) => {
                    if epoch_cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
                        epoch_cache = Some((epoch, permutation(n, seed, epoch)));
                    }
                    epoch_cache.as_ref().map_or(within, |(_, p)| p[within])
                }
            }
        })
        .collect()
}

/// The data cursor after `step` steps: (epoch, position within it).
pub fn cursor(n: usize, batch: usize, step: usize) -> (usize, usize) {
    let consumed = step * batch;
    (consumed / n.max(1), consumed % n.max(1))
}

/// A permutation of `0..n` (Fisher–Yates on [`em_core::rng`] seeded by `seed` and `epoch`).
pub fn permutation(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = em_core::rng::rng(em_core::rng::mix(seed, epoch as u64));
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = ((em_core::rng::uniform(&mut rng) * (i + 1) as f64) as usize).min(i);
        p.swap(i, j);
    }
    p
}
