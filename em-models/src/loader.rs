//! Loading a Hugging Face checkpoint directory: `config.json` plus `model.safetensors` or a
//! sharded `model.safetensors.index.json`, with F32/F16/BF16/F64 tensors converted to the runtime
//! dtype on the target device.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::{Embedding, Linear};
use burn::tensor::{DType, Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use crate::config::Qwen2Config;
use crate::error::{ModelError, Result, read_file, read_json};
use crate::model::{Attention, DecoderLayer, Mlp, Qwen2ForCausalLM, Qwen2Model, RmsNorm, biases};
use crate::rope::RotaryEmbedding;

/// How to load a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// The dtype the weights take on the device: `F32` (the default, and the right choice on CPU)
    /// or `F16`/`BF16` on a GPU. Norms, softmax and the returned logits are f32 regardless.
    pub dtype: DType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { dtype: DType::F32 }
    }
}

/// The tensors of a checkpoint, read into memory shard by shard.
pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<(PathBuf, Vec<u8>)>,
    /// tensor name → shard index
    index: HashMap<String, usize>,
}

impl Checkpoint {
    /// Reads `model.safetensors.index.json` and its shards if present, else `model.safetensors`.
    ///
    /// # Errors
    /// [`ModelError::Io`] for a missing file, [`ModelError::Json`] for a malformed index,
    /// [`ModelError::Safetensors`] for a corrupt or truncated file.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index_path.exists() {
            let index = read_json(&index_path)?;
            let Some(map) = index.get("weight_map").and_then(|m| m.as_object()) else {
                return Err(ModelError::MissingKey {
                    path: index_path,
                    key: "weight_map",
                });
            };
            let mut names = BTreeSet::new();
            for file in map.values() {
                let Some(file) = file.as_str() else {
                    return Err(ModelError::InvalidConfig {
                        path: index_path,
                        key: "weight_map",
                        reason: format!("file name {file} is not a string"),
                    });
                };
                names.insert(file.to_string());
            }
            names.into_iter().map(|f| dir.join(f)).collect()
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut shards = Vec::with_capacity(files.len());
        let mut index = HashMap::new();
        for (i, path) in files.into_iter().enumerate() {
            let bytes = read_file(&path)?;
            let parsed =
                SafeTensors::deserialize(&bytes).map_err(|source| ModelError::Safetensors {
                    path: path.clone(),
                    source,
                })?;
            for name in parsed.names() {
                index.insert(name.to_string(), i);
            }
            shards.push((path, bytes));
        }
        Ok(Self { dir, shards, index })
    }

    /// Whether the checkpoint has a tensor of that name.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.index.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Reads tensor `name`, checks its shape against `expected`, converts it to f32 on the host.
    ///
    /// # Errors
    /// [`ModelError::MissingTensor`], [`ModelError::ShapeMismatch`],
    /// [`ModelError::UnsupportedDtype`], [`ModelError::Safetensors`].
    pub fn read_f32(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let Some(&shard) = self.index.get(name) else {
            return Err(ModelError::MissingTensor {
                name: name.to_string(),
                dir: self.dir.clone(),
            });
        };
        let (path, bytes) = &self.shards[shard];
        let parsed = SafeTensors::deserialize(bytes).map_err(|source| ModelError::Safetensors {
            path: path.clone(),
            source,
        })?;
        let view = parsed
            .tensor(name)
            .map_err(|source| ModelError::Safetensors {
                path: path.clone(),
                source,
            })?;
        if view.shape() != expected {
            return Err(ModelError::ShapeMismatch {
                name: name.to_string(),
                expected: expected.to_vec(),
                got: view.shape().to_vec(),
            });
        }
        let data = view.data();
        let values = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
                .collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|b| {
                    f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
                })
                .collect(),
            other => {
                return Err(ModelError::UnsupportedDtype {
                    name: name.to_string(),
                    path: path.clone(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        Ok(values)
    }

    fn tensor<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor<D>> {
        Ok(upload(self.read_f32(name, &shape)?, shape, device, dtype))
    }

    /// A Linear from HF's `[out, in]` weight (burn keeps `[in, out]`) and an optional bias.
    fn linear(
        &self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        device: &Device,
        dtype: DType,
    ) -> Result<Linear> {
        // Transposed on the host so that the device tensor is contiguous `[in, out]`: a lazy
        // `.transpose()` view made flex re-copy every weight on every forward (the real 0.5B
        // model decoded at 0.7 tok/s, ~1.4 s per step of which ~1.2 s were those copies).
        let name = format!("{prefix}.weight");
        let values = transpose_host(&self.read_f32(&name, &[d_out, d_in])?, d_out, d_in);
        let weight = upload(values, [d_in, d_out], device, dtype);
        let bias = if bias {
            Some(Param::from_tensor(self.tensor(
                &format!("{prefix}.bias"),
                [d_out],
                device,
                dtype,
            )?))
        } else {
            None
        };
        Ok(Linear {
            weight: Param::from_tensor(weight),
            bias,
        })
    }

    fn norm(&self, name: &str, size: usize, eps: f64, device: &Device) -> Result<RmsNorm> {
        Ok(RmsNorm {
            weight: Param::from_tensor(self.tensor(name, [size], device, DType::F32)?),
            eps,
        })
    }
}

impl Qwen2ForCausalLM {
    /// Loads `config.json` and the safetensors weights of a checkpoint directory onto `device`.
    ///
    /// `lm_head.weight` is used when present; otherwise (tied checkpoints such as Qwen2.5-0.5B)
    /// the embedding serves as the output projection.
    ///
    /// # Errors
    /// Every [`ModelError`] of [`Qwen2Config::from_file`] and [`Checkpoint::open`], plus
    /// [`ModelError::MissingTensor`] and [`ModelError::ShapeMismatch`] naming the tensor.
    pub fn from_dir(dir: impl AsRef<Path>, device: &Device, options: &LoadOptions) -> Result<Self> {
        let dir = dir.as_ref();
        let config_path = dir.join("config.json");
        let config = Qwen2Config::from_file(&config_path)?;
        let checkpoint = Checkpoint::open(dir)?;
        Self::from_checkpoint(&config, &config_path, &checkpoint, device, options)
    }

    /// Builds the model from an already opened checkpoint.
    ///
    /// # Errors
    /// As [`Qwen2ForCausalLM::from_dir`].
    pub fn from_checkpoint(
        config: &Qwen2Config,
        config_path: &Path,
        ckpt: &Checkpoint,
        device: &Device,
        options: &LoadOptions,
    ) -> Result<Self> {
        let arch = config.architecture(config_path)?;
        let (qkv_bias, o_bias) = biases(config, arch);
        let dtype = options.dtype;
        let (hidden, inter) = (config.hidden_size, config.intermediate_size);
        let (heads, kv_heads, head_dim) = (
            config.num_attention_heads,
            config.kv_heads(),
            config.head_size(),
        );
        let eps = config.rms_norm_eps;

        let embed = ckpt.tensor(
            "model.embed_tokens.weight",
            [config.vocab_size, hidden],
            device,
            dtype,
        )?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let linear = |name: &str, d_in: usize, d_out: usize, bias: bool| {
                ckpt.linear(&format!("{p}.{name}"), d_in, d_out, bias, device, dtype)
            };
            let self_attn = Attention {
                q_proj: linear("self_attn.q_proj", hidden, heads * head_dim, qkv_bias)?,
                k_proj: linear("self_attn.k_proj", hidden, kv_heads * head_dim, qkv_bias)?,
                v_proj: linear("self_attn.v_proj", hidden, kv_heads * head_dim, qkv_bias)?,
                o_proj: linear("self_attn.o_proj", heads * head_dim, hidden, o_bias)?,
                num_heads: heads,
                num_kv_heads: kv_heads,
                head_dim,
            };
            let mlp = Mlp {
                gate_proj: linear("mlp.gate_proj", hidden, inter, false)?,
                up_proj: linear("mlp.up_proj", hidden, inter, false)?,
                down_proj: linear("mlp.down_proj", inter, hidden, false)?,
            };
            layers.push(DecoderLayer {
                self_attn,
                mlp,
                input_layernorm: ckpt.norm(
                    &format!("{p}.input_layernorm.weight"),
                    hidden,
                    eps,
                    device,
                )?,
                post_attention_layernorm: ckpt.norm(
                    &format!("{p}.post_attention_layernorm.weight"),
                    hidden,
                    eps,
                    device,
                )?,
            });
        }
        let norm = ckpt.norm("model.norm.weight", hidden, eps, device)?;
        let lm_head = if ckpt.contains("lm_head.weight") && !config.tie_word_embeddings {
            Some(ckpt.linear("lm_head", hidden, config.vocab_size, false, device, dtype)?)
        } else {
            if !config.tie_word_embeddings {
                tracing::warn!(
                    "{}: no lm_head.weight although tie_word_embeddings is false; using the embedding",
                    ckpt.dir.display()
                );
            }
            None
        };
        Ok(Self {
            model: Qwen2Model {
                embed_tokens: Embedding {
                    weight: Param::from_tensor(embed),
                },
                layers,
                norm,
            },
            lm_head,
            vocab_size: config.vocab_size,
            max_position_embeddings: config.max_position_embeddings,
            inv_freq: RotaryEmbedding::new(config).inv_freq().to_vec(),
        })
    }
}

/// Host f32 values to a device tensor of `shape` in the runtime `dtype`.
fn upload<const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &Device,
    dtype: DType,
) -> Tensor<D> {
    let tensor = Tensor::<D>::from_data(TensorData::new(values, shape), device);
    if dtype == DType::F32 {
        tensor
    } else {
        tensor.cast(dtype)
    }
}

/// `[rows, cols] → [cols, rows]` for a row-major host buffer, in cache-friendly tiles.
fn transpose_host(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut out = vec![0.0; values.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = values[r * cols + c];
                }
            }
        }
    }
    out
}
