//! `config.json` of a Hugging Face causal LM: [`Qwen2Config`] with HF's field names verbatim.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result, read_json};

/// The architectures this crate implements. Qwen2 is Llama with biases on the q/k/v projections,
/// so one implementation serves both; the differences live in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Architecture {
    /// `Qwen2ForCausalLM` (Qwen2, Qwen2.5, Qwen2.5-Math/Coder): q/k/v bias.
    Qwen2,
    /// `LlamaForCausalLM` (Llama 2/3/3.1): no bias by default, Llama-3 RoPE scaling.
    Llama,
}

/// One token id or several (`eos_token_id` is either in HF configs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// A single id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

impl TokenIds {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// `rope_scaling` of a HF config. Only `default` and `llama3` are implemented; any other type is
/// rejected by [`Qwen2Config::validate`] rather than silently ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    /// `rope_type` (older configs call it `type`).
    #[serde(alias = "type")]
    pub rope_type: String,
    /// Context extension factor.
    #[serde(default)]
    pub factor: Option<f64>,
    /// Llama 3: wavelengths longer than `original_max_position_embeddings / low_freq_factor` are
    /// divided by `factor`.
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    /// Llama 3: wavelengths shorter than `original_max_position_embeddings / high_freq_factor` are
    /// kept.
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    /// Llama 3: the pre-training context length.
    #[serde(default)]
    pub original_max_position_embeddings: Option<f64>,
}

/// A Qwen2 / Qwen2.5 / Llama `config.json`. Field names are Hugging Face's; keys this crate does
/// not interpret are kept in [`Qwen2Config::extra`] and written back by
/// [`Qwen2ForCausalLM::save_pretrained`](crate::Qwen2ForCausalLM::save_pretrained). Load it
/// with [`Qwen2Config::from_file`], which reports a missing required key by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Qwen2Config {
    /// e.g. `["Qwen2ForCausalLM"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<String>,
    /// e.g. `"qwen2"`, `"llama"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    /// Embedding rows (Qwen2.5 0.5B: 151,936, more than the tokenizer's ids).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA); defaults to `num_attention_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; defaults to `hidden_size / num_attention_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// Longest context the model was trained for.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// RoPE scaling (Llama 3.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScaling>,
    /// Whether `lm_head` shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama: bias on q/k/v/o (Qwen2 always has q/k/v bias and no o bias).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_bias: Option<bool>,
    /// Llama: bias on the MLP projections (must be false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_bias: Option<bool>,
    /// The MLP activation (must be `silu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_act: Option<String>,
    /// Beginning-of-sequence id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence id(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<TokenIds>,
    /// Sliding-window attention (Qwen2: off in every released config; rejected when on).
    #[serde(default)]
    pub use_sliding_window: bool,
    /// Every other key of the file (`initializer_range`, `torch_dtype`, `transformers_version`,
    /// ...), verbatim, so that a saved checkpoint keeps them.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_rope_theta() -> f64 {
    10_000.0
}

const REQUIRED: [&str; 7] = [
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "max_position_embeddings",
    "rms_norm_eps",
];

impl Qwen2Config {
    /// Reads and validates `config.json`.
    ///
    /// # Errors
    /// [`ModelError::Io`], [`ModelError::Json`] (malformed file or a value of the wrong type),
    /// [`ModelError::MissingKey`] naming the first absent required key,
    /// [`ModelError::UnsupportedArchitecture`] and [`ModelError::InvalidConfig`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let value = read_json(path)?;
        Self::from_value(value, path)
    }

    /// Parses and validates a config from JSON text; `path` is only used in error messages.
    ///
    /// # Errors
    /// As [`Qwen2Config::from_file`].
    pub fn from_json_str(text: &str, path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|source| ModelError::Json {
                path: path.to_path_buf(),
                source,
            })?;
        Self::from_value(value, path)
    }

    fn from_value(value: serde_json::Value, path: &Path) -> Result<Self> {
        let Some(object) = value.as_object() else {
            return Err(invalid(
                path,
                "<root>",
                "config.json must be a JSON object".into(),
            ));
        };
        if let Some(key) = REQUIRED
            .iter()
            .find(|key| object.get(**key).is_none_or(|v| v.is_null()))
        {
            return Err(ModelError::MissingKey {
                path: path.to_path_buf(),
                key,
            });
        }
        // Keys present as `null` (HF writes e.g. `"rope_scaling": null`) are kept as such, so a
        // save writes every key of the source back.
        let nulls: Vec<String> = object
            .iter()
            .filter(|(_, v)| v.is_null())
            .map(|(k, _)| k.clone())
            .collect();
        let mut config: Self =
            serde_json::from_value(value).map_err(|source| ModelError::Json {
                path: path.to_path_buf(),
                source,
            })?;
        for key in nulls {
            config.extra.entry(key).or_insert(serde_json::Value::Null);
        }
        config.validate(path)?;
        Ok(config)
    }

    /// Which implementation serves this config, from `architectures` (first) or `model_type`.
    ///
    /// # Errors
    /// [`ModelError::UnsupportedArchitecture`] for anything but Qwen2 and Llama.
    pub fn architecture(&self, path: &Path) -> Result<Architecture> {
        let from_arch = self.architectures.first().map(|a| match a.as_str() {
            "Qwen2ForCausalLM" => Some(Architecture::Qwen2),
            "LlamaForCausalLM" => Some(Architecture::Llama),
            _ => None,
        });
        let from_type = self.model_type.as_deref().map(|t| match t {
            "qwen2" => Some(Architecture::Qwen2),
            "llama" => Some(Architecture::Llama),
            _ => None,
        });
        match (from_arch, from_type) {
            (Some(Some(a)), _) | (None, Some(Some(a))) => Ok(a),
            (None, None) => Err(ModelError::MissingKey {
                path: path.to_path_buf(),
                key: "architectures",
            }),
            _ => Err(ModelError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                found: format!(
                    "architectures {:?}, model_type {:?}",
                    self.architectures, self.model_type
                ),
            }),
        }
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Per-head width.
    pub fn head_size(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Whether q/k/v carry a bias.
    pub fn qkv_bias(&self, arch: Architecture) -> bool {
        match arch {
            Architecture::Qwen2 => true,
            Architecture::Llama => self.attention_bias.unwrap_or(false),
        }
    }

    /// Whether o_proj carries a bias.
    pub fn o_bias(&self, arch: Architecture) -> bool {
        match arch {
            Architecture::Qwen2 => false,
            Architecture::Llama => self.attention_bias.unwrap_or(false),
        }
    }

    /// `initializer_range`: the standard deviation of [`Qwen2Config::init`]'s normal draws
    /// (HF's default 0.02 when absent).
    pub fn initializer_range(&self) -> f64 {
        self.extra
            .get("initializer_range")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.02)
    }

    /// The config as JSON text with `torch_dtype` set (every kept key included).
    /// Known fields take precedence over a key of the same name in [`Qwen2Config::extra`] (a
    /// source's `null` that was since given a value).
    pub fn to_json_with_dtype(&self, torch_dtype: &str) -> String {
        let mut config = self.clone();
        let extra = std::mem::take(&mut config.extra);
        // Serialising plain data (strings, numbers, maps) cannot fail.
        let mut map = match serde_json::to_value(&config) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        for (key, value) in extra {
            map.entry(key).or_insert(value);
        }
        map.insert(
            "torch_dtype".into(),
            serde_json::Value::String(torch_dtype.into()),
        );
        serde_json::to_string_pretty(&serde_json::Value::Object(map)).unwrap_or_default()
    }

    /// End-of-sequence ids from the config (may be empty).
    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(TokenIds::to_vec)
            .unwrap_or_default()
    }

    /// Checks that the values describe a model this crate can run.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`] naming the key, or [`ModelError::UnsupportedArchitecture`].
    pub fn validate(&self, path: &Path) -> Result<()> {
        self.architecture(path)?;
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(path, key, "must be positive".into()));
            }
        }
        let kv = self.kv_heads();
        if kv == 0 || !self.num_attention_heads.is_multiple_of(kv) {
            return Err(invalid(
                path,
                "num_key_value_heads",
                format!(
                    "{kv} must be positive and divide num_attention_heads {}",
                    self.num_attention_heads
                ),
            ));
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(invalid(
                path,
                "hidden_size",
                format!(
                    "{} is not divisible by num_attention_heads {}",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        if self.head_size() == 0 || !self.head_size().is_multiple_of(2) {
            return Err(invalid(
                path,
                "head_dim",
                format!("{} must be positive and even (RoPE)", self.head_size()),
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(invalid(
                path,
                "rms_norm_eps",
                format!("{} must be finite and positive", self.rms_norm_eps),
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return Err(invalid(
                path,
                "rope_theta",
                format!("{} must be finite and > 1", self.rope_theta),
            ));
        }
        if let Some(act) = &self.hidden_act
            && act != "silu"
        {
            return Err(invalid(
                path,
                "hidden_act",
                format!("{act:?} is not supported (only \"silu\")"),
            ));
        }
        if self.mlp_bias == Some(true) {
            return Err(invalid(
                path,
                "mlp_bias",
                "MLP biases are not supported".into(),
            ));
        }
        if self.use_sliding_window {
            return Err(invalid(
                path,
                "use_sliding_window",
                "sliding-window attention is not supported".into(),
            ));
        }
        if let Some(scaling) = &self.rope_scaling {
            match scaling.rope_type.as_str() {
                "default" => {}
                "llama3" => {
                    let need = |key: &'static str, v: Option<f64>| match v {
                        Some(v) if v.is_finite() && v > 0.0 => Ok(v),
                        _ => Err(invalid(
                            path,
                            "rope_scaling",
                            format!("llama3 scaling needs a positive `{key}`"),
                        )),
                    };
                    need("factor", scaling.factor)?;
                    let low = need("low_freq_factor", scaling.low_freq_factor)?;
                    let high = need("high_freq_factor", scaling.high_freq_factor)?;
                    need(
                        "original_max_position_embeddings",
                        scaling.original_max_position_embeddings,
                    )?;
                    if high <= low {
                        return Err(invalid(
                            path,
                            "rope_scaling",
                            "high_freq_factor must exceed low_freq_factor".into(),
                        ));
                    }
                }
                other => {
                    return Err(invalid(
                        path,
                        "rope_scaling",
                        format!("rope_type {other:?} is not supported (default, llama3)"),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn invalid(path: &Path, key: &'static str, reason: String) -> ModelError {
    ModelError::InvalidConfig {
        path: PathBuf::from(path),
        key,
        reason,
    }
}
