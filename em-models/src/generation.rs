//! `generation_config.json` of a Hugging Face checkpoint: the special ids the tokenizer needs and
//! the sampling defaults the model was released with. Read here, once per load, and nowhere
//! else: [`Tokenizer::from_parts`](crate::Tokenizer::from_parts) takes its ids from it and
//! em-infer's `Sampling::from_generation_config` its sampling defaults.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::config::TokenIds;
use crate::error::{ModelError, Result, read_json};

/// The keys of `generation_config.json` that em uses, typed; every other key is kept in
/// [`GenerationConfig::extra`]. Absent keys are `None`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GenerationConfig {
    /// The file it came from (error messages).
    pub path: PathBuf,
    /// `bos_token_id`.
    pub bos_token_id: Option<u32>,
    /// `eos_token_id`: one id or several.
    pub eos_token_id: Option<TokenIds>,
    /// `pad_token_id`.
    pub pad_token_id: Option<u32>,
    /// `do_sample` (`false` means greedy decoding).
    pub do_sample: Option<bool>,
    /// `temperature`.
    pub temperature: Option<f64>,
    /// `top_k` (a whole number ≥ 0).
    pub top_k: Option<usize>,
    /// `top_p`.
    pub top_p: Option<f64>,
    /// `min_p`.
    pub min_p: Option<f64>,
    /// `repetition_penalty`.
    pub repetition_penalty: Option<f64>,
    /// The file's other keys, verbatim.
    pub extra: serde_json::Map<String, Value>,
}

impl GenerationConfig {
    /// `dir/generation_config.json` if the file exists, else `None`.
    ///
    /// # Errors
    /// As [`GenerationConfig::from_file`].
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Option<Self>> {
        let path = dir.as_ref().join("generation_config.json");
        if path.exists() {
            Self::from_file(path).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Reads and type-checks a `generation_config.json`. Values are checked for their type only
    /// (a number, a whole number, a boolean); whether a temperature or top-p is in range is the
    /// sampler's rule, checked where it is used.
    ///
    /// # Errors
    /// [`ModelError::Io`], [`ModelError::Json`] for unreadable JSON,
    /// [`ModelError::InvalidConfig`] naming a key whose value has the wrong type.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let Value::Object(mut map) = read_json(path)? else {
            return Err(invalid(path, "<root>", "must be a JSON object".into()));
        };
        let mut take = |key: &'static str| map.remove(key).filter(|v| !v.is_null());
        let number = |key: &'static str, v: Option<Value>| -> Result<Option<f64>> {
            v.map(|v| {
                v.as_f64()
                    .ok_or_else(|| invalid(path, key, format!("is {v}, expected a number")))
            })
            .transpose()
        };
        let id = |key: &'static str, v: Option<Value>| -> Result<Option<u32>> {
            v.map(|v| {
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| invalid(path, key, format!("is {v}, expected a token id")))
            })
            .transpose()
        };
        let bos_token_id = id("bos_token_id", take("bos_token_id"))?;
        let pad_token_id = id("pad_token_id", take("pad_token_id"))?;
        let eos_token_id = take("eos_token_id")
            .map(|v| {
                serde_json::from_value::<TokenIds>(v.clone()).map_err(|_| {
                    invalid(
                        path,
                        "eos_token_id",
                        format!("is {v}, expected a token id or a list of them"),
                    )
                })
            })
            .transpose()?;
        let do_sample = take("do_sample")
            .map(|v| {
                v.as_bool().ok_or_else(|| {
                    invalid(path, "do_sample", format!("is {v}, expected a boolean"))
                })
            })
            .transpose()?;
        let temperature = number("temperature", take("temperature"))?;
        let top_k = number("top_k", take("top_k"))?
            .map(|k| {
                if k >= 0.0 && k.fract() == 0.0 {
                    Ok(k as usize)
                } else {
                    Err(invalid(
                        path,
                        "top_k",
                        format!("is {k}, expected a whole number ≥ 0"),
                    ))
                }
            })
            .transpose()?;
        let top_p = number("top_p", take("top_p"))?;
        let min_p = number("min_p", take("min_p"))?;
        let repetition_penalty = number("repetition_penalty", take("repetition_penalty"))?;
        Ok(Self {
            path: path.to_path_buf(),
            bos_token_id,
            eos_token_id,
            pad_token_id,
            do_sample,
            temperature,
            top_k,
            top_p,
            min_p,
            repetition_penalty,
            extra: map,
        })
    }

    /// End-of-sequence ids (may be empty).
    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_default()
    }
}

fn invalid(path: &Path, key: &'static str, reason: String) -> ModelError {
    ModelError::InvalidConfig {
        path: path.to_path_buf(),
        key,
        reason,
    }
}
