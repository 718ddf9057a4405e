//! Saving a model as a Hugging Face checkpoint directory that transformers, vLLM and this crate
//! load: `config.json` (every key of the source kept, `torch_dtype` set), `model.safetensors`
//! (HF names, `[out, in]` projections, metadata `{"format": "pt"}`; a tied head has no
//! `lm_head.weight`) or shards with `model.safetensors.index.json`, and every other file of the
//! source directory (tokenizer, generation config, ...).
//!
//! Atomic: everything is written into a temporary sibling directory that is renamed into place
//! at the end, so a killed save never leaves a partial checkpoint under the final name. Tensors
//! are read back from the device one at a time while the file is written.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::DType;
use safetensors::{Dtype, View};

use crate::config::Qwen2Config;
use crate::error::{ModelError, Result};
use crate::loader::check_float;
use crate::model::Qwen2ForCausalLM;
use crate::params::{NamedParam, named_params};

/// HF's default shard size limit ("5GB").
pub const DEFAULT_MAX_SHARD_SIZE: u64 = 5_000_000_000;

/// How to save.
#[derive(Debug, Clone, PartialEq)]
pub struct SaveOptions {
    /// The dtype of the saved tensors (f32, bf16, f16 or f64).
    pub dtype: DType,
    /// Largest shard in bytes; a model above it is split into shards with an index (a single
    /// tensor larger than the limit gets a shard of its own).
    pub max_shard_size: u64,
    /// Replace an existing output directory (otherwise it is an error).
    pub overwrite: bool,
}

impl Default for SaveOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            max_shard_size: DEFAULT_MAX_SHARD_SIZE,
            overwrite: false,
        }
    }
}

/// `2GB`, `500MB`, `10KB`, `123` (bytes): decimal units as transformers reads them (also
/// `GiB`/`MiB`/`KiB`).
///
/// # Errors
/// [`ModelError::InvalidSize`] for anything else.
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let factor: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KIB" => 1 << 10,
        "MIB" => 1 << 20,
        "GIB" => 1 << 30,
        _ => return Err(invalid_size(text)),
    };
    let number: f64 = number.parse().map_err(|_| invalid_size(text))?;
    if !(number.is_finite() && number > 0.0) {
        return Err(invalid_size(text));
    }
    Ok((number * factor as f64) as u64)
}

fn invalid_size(text: &str) -> ModelError {
    ModelError::InvalidSize {
        text: text.to_string(),
    }
}

/// HF's name of a dtype in `config.json`'s `torch_dtype`.
fn torch_dtype(dtype: DType) -> &'static str {
    match dtype {
        DType::F64 => "float64",
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        _ => "float32",
    }
}

fn safetensors_dtype(dtype: DType) -> Dtype {
    match dtype {
        DType::F64 => Dtype::F64,
        DType::BF16 => Dtype::BF16,
        DType::F16 => Dtype::F16,
        _ => Dtype::F32,
    }
}

fn dtype_size(dtype: DType) -> usize {
    match dtype {
        DType::F64 => 8,
        DType::BF16 | DType::F16 => 2,
        _ => 4,
    }
}

/// A parameter as a safetensors view whose bytes are read from the device, converted and
/// transposed only when the writer asks for them.
struct LazyView {
    param: NamedParam,
    shape: Vec<usize>,
    dtype: DType,
}

impl LazyView {
    /// The parameter in HF's layout and the saved dtype, as little-endian bytes: a `Linear`
    /// weight is transposed back to `[out, in]` (the read-back copies it in that order).
    fn bytes(&self) -> Vec<u8> {
        let flat = self.param.flat.clone();
        let data = if self.param.transposed {
            let (rows, cols) = (self.param.shape[0], self.param.shape[1]);
            flat.reshape([rows, cols]).transpose().into_data()
        } else {
            flat.into_data()
        };
        data.convert_dtype(self.dtype).into_bytes().to_vec()
    }
}

impl View for LazyView {
    fn dtype(&self) -> Dtype {
        safetensors_dtype(self.dtype)
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.bytes())
    }
    fn data_len(&self) -> usize {
        self.param.numel() * dtype_size(self.dtype)
    }
}

/// Writes `tensors` to the safetensors file `path` under their names, in HF's layout
/// ([`NamedParam::hf_shape`]: `Linear` weights transposed back to `[out, in]`) and `dtype`, with
/// `metadata`; each tensor is read back from the device only when the writer reaches it. The
/// one safetensors writer of the workspace (model weights, optimiser moments).
///
/// # Errors
/// [`ModelError::UnknownDtype`] for a non-float `dtype`; [`ModelError::Safetensors`] naming
/// `path` for a failed write.
pub fn write_safetensors(
    path: &Path,
    tensors: Vec<NamedParam>,
    dtype: DType,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let dtype = check_float(dtype)?;
    let views: Vec<(String, LazyView)> = tensors
        .into_iter()
        .map(|param| {
            (
                param.name.clone(),
                LazyView {
                    shape: param.hf_shape(),
                    param,
                    dtype,
                },
            )
        })
        .collect();
    safetensors::serialize_to_file(views, Some(metadata), path).map_err(|source| {
        ModelError::Safetensors {
            path: path.to_path_buf(),
            source,
        }
    })
}

impl Qwen2ForCausalLM {
    /// Saves the model with its `config` as a Hugging Face checkpoint in `out`, copying every
    /// non-weight file of `source_dir` (the directory it was loaded from, if any). See the
    /// [module docs](crate::save) for the layout.
    ///
    /// # Errors
    /// [`ModelError::OutputExists`] when `out` exists and `options.overwrite` is false,
    /// [`ModelError::UnknownDtype`], [`ModelError::Io`] / [`ModelError::Safetensors`] for write
    /// failures (the partial output is removed).
    pub fn save_pretrained(
        &self,
        config: &Qwen2Config,
        source_dir: Option<&Path>,
        out: impl AsRef<Path>,
        options: &SaveOptions,
    ) -> Result<()> {
        let out = out.as_ref();
        let dtype = check_float(options.dtype)?;
        if out.exists() && !options.overwrite {
            return Err(ModelError::OutputExists {
                path: out.to_path_buf(),
            });
        }
        let tmp = temporary_sibling(out)?;
        let result = self.write_into(config, source_dir, &tmp, dtype, options.max_shard_size);
        let result = result.and_then(|()| replace_dir(&tmp, out));
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }

    fn write_into(
        &self,
        config: &Qwen2Config,
        source_dir: Option<&Path>,
        dir: &Path,
        dtype: DType,
        max_shard_size: u64,
    ) -> Result<()> {
        // The effective weights: a LoRA adapter is merged into its base weight (a no-op for a
        // model without reparameterized parameters).
        let params = named_params(&self.valid().materialize());
        // Shards in module order, each up to the limit.
        let mut shards: Vec<Vec<NamedParam>> = vec![Vec::new()];
        let mut current = 0u64;
        let mut total = 0u64;
        for param in params {
            let bytes = (param.numel() * dtype_size(dtype)) as u64;
            total += bytes;
            if current > 0 && current + bytes > max_shard_size {
                shards.push(Vec::new());
                current = 0;
            }
            current += bytes;
            if let Some(last) = shards.last_mut() {
                last.push(param);
            }
        }
        let n = shards.len();
        let mut weight_map = serde_json::Map::new();
        for (i, shard) in shards.into_iter().enumerate() {
            let file = if n == 1 {
                "model.safetensors".to_string()
            } else {
                format!("model-{:05}-of-{n:05}.safetensors", i + 1)
            };
            for param in &shard {
                weight_map.insert(param.name.clone(), file.clone().into());
            }
            let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
            write_safetensors(&dir.join(&file), shard, dtype, metadata)?;
        }
        if n > 1 {
            let index = serde_json::json!({
                "metadata": {"total_size": total},
                "weight_map": weight_map,
            });
            write(
                &dir.join("model.safetensors.index.json"),
                serde_json::to_string_pretty(&index)
                    .unwrap_or_default()
                    .as_bytes(),
            )?;
        }
        write(
            &dir.join("config.json"),
            config.to_json_with_dtype(torch_dtype(dtype)).as_bytes(),
        )?;
        if let Some(source) = source_dir {
            copy_other_files(source, dir)?;
        }
        Ok(())
    }
}

/// Whether a file of a checkpoint directory holds weights (or their index) or the config, which
/// a save writes itself.
fn is_weight_or_config(name: &str) -> bool {
    name == "config.json"
        || name == "model.safetensors.index.json"
        || name == "pytorch_model.bin.index.json"
        || (name.starts_with("model") && name.ends_with(".safetensors"))
        || (name.starts_with("pytorch_model") && name.ends_with(".bin"))
}

fn copy_other_files(source: &Path, dir: &Path) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Io { path, source }
    };
    for entry in std::fs::read_dir(source).map_err(io(source))? {
        let entry = entry.map_err(io(source))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        if is_weight_or_config(name) {
            continue;
        }
        // Follows symlinks (a hub snapshot is made of them): a dangling one is an error, not a
        // file silently missing from the copy; subdirectories are not part of a checkpoint.
        if std::fs::metadata(&path).map_err(io(&path))?.is_dir() {
            continue;
        }
        std::fs::copy(&path, dir.join(name)).map_err(io(&path))?;
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A fresh, empty directory next to `out` (same filesystem, so the final rename is atomic).
fn temporary_sibling(out: &Path) -> Result<PathBuf> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let io = |source| ModelError::Io {
        path: parent.clone(),
        source,
    };
    std::fs::create_dir_all(&parent).map_err(io)?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "checkpoint".into());
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.partial-"))
        .tempdir_in(&parent)
        .map_err(io)?;
    Ok(tmp.keep())
}

/// Moves the finished `tmp` to `out`, replacing an existing `out` (which is moved aside first
/// and removed only once the new one is in place).
fn replace_dir(tmp: &Path, out: &Path) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Io { path, source }
    };
    if out.exists() {
        let old = tmp.with_extension("old");
        std::fs::rename(out, &old).map_err(io(out))?;
        std::fs::rename(tmp, out).map_err(io(out))?;
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    } else {
        std::fs::rename(tmp, out).map_err(io(out))?;
    }
    Ok(())
}
