//! The tokenizer of a checkpoint directory: `tokenizer.json` (HF `tokenizers`), the chat template
//! from `tokenizer_config.json` (rendered with `minijinja`), and the special ids from
//! `generation_config.json` / `config.json` (both parsed by their own types,
//! [`GenerationConfig`] and [`Qwen2Config`], once per load).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Qwen2Config;
use crate::error::{ModelError, Result, read_json};
use crate::generation::GenerationConfig;

/// One chat message, as the chat template sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message with the given role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// A checkpoint's tokenizer with its chat template and special ids.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    chat_template: Option<(PathBuf, String)>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    eos_ids: Vec<u32>,
    pad_id: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("vocab", &self.inner.get_vocab_size(true))
            .field("eos_ids", &self.eos_ids)
            .field("pad_id", &self.pad_id)
            .finish_non_exhaustive()
    }
}

fn token_string(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) => Some(s.clone()),
        // {"content": "<|im_end|>", ...} (AddedToken form)
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` (required) and, when present, `tokenizer_config.json`,
    /// `generation_config.json` and `config.json` from `dir`. With `vocab_size` (the model's
    /// embedding rows), checks that every token id the tokenizer can produce has a row.
    /// [`from_pretrained`](crate::from_pretrained) parses the two configs once for the model
    /// and the tokenizer and calls [`Tokenizer::from_parts`] instead.
    ///
    /// # Errors
    /// [`ModelError::Tokenizer`] for a missing or malformed `tokenizer.json`,
    /// [`ModelError::Json`] for a malformed optional file, [`ModelError::TokenizerVocab`] when an
    /// id reaches `vocab_size`; a present but invalid `config.json` or `generation_config.json`
    /// fails as [`Qwen2Config::from_file`] / [`GenerationConfig::from_file`] do.
    pub fn from_dir(dir: impl AsRef<Path>, vocab_size: Option<usize>) -> Result<Self> {
        let dir = dir.as_ref();
        let config_path = dir.join("config.json");
        let config = if config_path.exists() {
            Some(Qwen2Config::from_file(&config_path)?)
        } else {
            None
        };
        let generation = GenerationConfig::from_dir(dir)?;
        Self::from_parts(dir, vocab_size, config.as_ref(), generation.as_ref())
    }

    /// Loads `tokenizer.json` (required) and `tokenizer_config.json` (optional) from `dir`,
    /// taking the EOS and pad ids from the already parsed model and generation configs.
    /// With `vocab_size`, checks that every token id the tokenizer can produce has a row.
    ///
    /// # Errors
    /// As [`Tokenizer::from_dir`], except for the two configs, which the caller parsed.
    pub fn from_parts(
        dir: impl AsRef<Path>,
        vocab_size: Option<usize>,
        config: Option<&Qwen2Config>,
        generation: Option<&GenerationConfig>,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let path = dir.join("tokenizer.json");
        let inner =
            tokenizers::Tokenizer::from_file(&path).map_err(|source| ModelError::Tokenizer {
                path: path.clone(),
                source,
            })?;
        if let Some(vocab_size) = vocab_size {
            let max_id = inner.get_vocab(true).values().copied().max().unwrap_or(0);
            if max_id as usize >= vocab_size {
                return Err(ModelError::TokenizerVocab {
                    path,
                    max_id,
                    vocab_size,
                });
            }
        }
        let tok_config_path = dir.join("tokenizer_config.json");
        let tok_config = if tok_config_path.exists() {
            Some(read_json(&tok_config_path)?)
        } else {
            None
        };

        let chat_template = tok_config
            .as_ref()
            .and_then(|c| match c.get("chat_template") {
                Some(serde_json::Value::String(t)) => Some(t.clone()),
                // a list of named templates: take "default"
                Some(serde_json::Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
                _ => None,
            });
        let chat_template = chat_template.map(|t| (dir.join("tokenizer_config.json"), t));
        let bos_token = token_string(tok_config.as_ref().and_then(|c| c.get("bos_token")));
        let eos_token = token_string(tok_config.as_ref().and_then(|c| c.get("eos_token")));
        let pad_token = token_string(tok_config.as_ref().and_then(|c| c.get("pad_token")));

        let mut eos_ids = generation
            .map(GenerationConfig::eos_ids)
            .unwrap_or_default();
        eos_ids.extend(config.map(Qwen2Config::eos_ids).unwrap_or_default());
        eos_ids.extend(eos_token.as_deref().and_then(|t| inner.token_to_id(t)));
        let mut seen = std::collections::HashSet::new();
        eos_ids.retain(|id| seen.insert(*id));

        let pad_id = generation
            .and_then(|g| g.pad_token_id)
            .or_else(|| pad_token.as_deref().and_then(|t| inner.token_to_id(t)))
            .or_else(|| eos_ids.first().copied());
        Ok(Self {
            inner,
            path,
            chat_template,
            bos_token,
            eos_token,
            eos_ids,
            pad_id,
        })
    }

    /// Token ids of `text`; `add_special_tokens` applies the tokenizer's post-processor (Qwen2.5
    /// adds none).
    ///
    /// # Errors
    /// [`ModelError::Tokenizer`] if the tokenizer fails.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| self.error(e))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`; `skip_special_tokens` drops `<|im_end|>` and friends.
    ///
    /// # Errors
    /// [`ModelError::Tokenizer`] if the tokenizer fails.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| self.error(e))
    }

    /// Renders the chat template over `messages` (`add_generation_prompt` appends the assistant
    /// header, e.g. `<|im_start|>assistant\n`). The result is text: encode it with
    /// [`Tokenizer::encode`] without special tokens.
    ///
    /// # Errors
    /// [`ModelError::NoChatTemplate`], or [`ModelError::Template`] if it fails to compile/render.
    pub fn apply_chat_template(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let Some((path, template)) = &self.chat_template else {
            return Err(ModelError::NoChatTemplate {
                path: self.path.with_file_name("tokenizer_config.json"),
            });
        };
        let err = |source| ModelError::Template {
            path: path.clone(),
            source,
        };
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    message,
                ))
            },
        );
        env.add_template("chat", template).map_err(err)?;
        let tmpl = env.get_template("chat").map_err(err)?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        })
        .map_err(err)
    }

    /// The text a model sees for one user `prompt`: `prompt` as is when `chat` is false, else
    /// the chat template over an optional `system` turn and the user turn, with the assistant
    /// header appended.
    ///
    /// # Errors
    /// As [`Tokenizer::apply_chat_template`] (only when `chat`).
    pub fn prompt_text(&self, prompt: &str, chat: bool, system: Option<&str>) -> Result<String> {
        if !chat {
            return Ok(prompt.to_string());
        }
        let mut messages = Vec::new();
        if let Some(system) = system {
            messages.push(Message::system(system));
        }
        messages.push(Message::user(prompt));
        self.apply_chat_template(&messages, true)
    }

    /// Ids that end generation (from `generation_config.json`, `config.json` and the
    /// `eos_token` of `tokenizer_config.json`, deduplicated, in that order).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// The id used to pad batches: `pad_token_id`, else `pad_token`, else the first EOS id.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    /// The id of a token string, e.g. `"<|im_end|>"`.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Number of ids the tokenizer can produce (added tokens included).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    fn error(&self, e: tokenizers::Error) -> ModelError {
        ModelError::Tokenizer {
            path: self.path.clone(),
            source: e,
        }
    }
}
