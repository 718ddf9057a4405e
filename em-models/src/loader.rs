//! Loading a Hugging Face checkpoint directory: `config.json` plus `model.safetensors` or a
//! sharded `model.safetensors.index.json`, with F32/F16/BF16/F64 tensors converted to the runtime
//! dtype on the target device.
//!
//! Memory: [`Checkpoint::open`] reads only the files' headers; each tensor is then read on its
//! own (seek + read in 1 MiB pieces, converted piece by piece straight into the runtime dtype),
//! uploaded and dropped, so the load peaks near the loaded model's size plus its largest tensor
//! (no mmap: the workspace denies `unsafe`).

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device, Element, TensorData};
use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensorError};

use crate::build::{Role, WeightSource, build};
use crate::config::Qwen2Config;
use crate::error::{ModelError, Result, read_json};
use crate::model::Qwen2ForCausalLM;

/// How to load a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// The dtype the weights take on the device: `F32` (the default, and the one for training),
    /// `F16`/`BF16` for inference (half the memory; on the CPU also faster decoding, since a
    /// decode step reads every weight once and the CPU path reads them in their stored width),
    /// or `F64` (tests: the whole model, norms, RoPE and logits included, then runs in f64). With
    /// 16-bit weights the residual stream, norms, attention, the KV cache and the returned
    /// logits stay f32; on the CPU the products widen the weights exactly and accumulate in f32.
    pub dtype: DType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { dtype: DType::F32 }
    }
}

/// The floating-point dtypes a model can be loaded in, saved in or initialised in.
pub const FLOAT_DTYPES: [DType; 4] = [DType::F32, DType::F64, DType::BF16, DType::F16];

/// `f32`, `f64`, `bf16`, `f16` (also HF's `float32`, `bfloat16`, ...) → the [`DType`].
///
/// # Errors
/// [`ModelError::UnknownDtype`] for anything else.
pub fn parse_dtype(name: &str) -> Result<DType> {
    match name.to_ascii_lowercase().as_str() {
        "f32" | "float32" | "float" => Ok(DType::F32),
        "f64" | "float64" | "double" => Ok(DType::F64),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" | "half" => Ok(DType::F16),
        _ => Err(ModelError::UnknownDtype {
            dtype: name.to_string(),
        }),
    }
}

/// Checks that `dtype` is one of [`FLOAT_DTYPES`].
pub(crate) fn check_float(dtype: DType) -> Result<DType> {
    if FLOAT_DTYPES.contains(&dtype) {
        Ok(dtype)
    } else {
        Err(ModelError::UnknownDtype {
            dtype: format!("{dtype:?}"),
        })
    }
}

/// One tensor's place in its file.
#[derive(Debug, Clone)]
struct Entry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    start: u64,
    end: u64,
}

/// The tensors of a checkpoint: the headers of its files, read at [`Checkpoint::open`]; the
/// tensors themselves are read one at a time when asked for.
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<PathBuf>,
    /// tensor name → where it is
    index: HashMap<String, Entry>,
}

/// Bytes read per piece when converting a tensor.
const PIECE: usize = 1 << 20;
/// safetensors' own bound on the header.
const MAX_HEADER: u64 = 100_000_000;

impl Checkpoint {
    /// Reads `model.safetensors.index.json` and the headers of its shards if present, else the
    /// header of `model.safetensors`, and checks that every tensor's byte range fits its file.
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
        Self::from_files(dir, files)
    }

    /// One safetensors file on its own (an optimiser state, a golden file): its header is read
    /// and checked as [`Checkpoint::open`] does for a checkpoint's weights.
    ///
    /// # Errors
    /// As [`Checkpoint::open`].
    pub fn open_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_files(dir, vec![path])
    }

    fn from_files(dir: PathBuf, files: Vec<PathBuf>) -> Result<Self> {
        let mut index = HashMap::new();
        for (shard, path) in files.iter().enumerate() {
            let (data_start, metadata) = read_header(path)?;
            for (name, info) in metadata.tensors() {
                index.insert(
                    name,
                    Entry {
                        shard,
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        start: data_start + info.data_offsets.0 as u64,
                        end: data_start + info.data_offsets.1 as u64,
                    },
                );
            }
        }
        Ok(Self {
            dir,
            shards: files,
            index,
        })
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
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

    /// The stored shape of tensor `name`, if the checkpoint has it.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.index.get(name).map(|e| e.shape.clone())
    }

    /// Reads tensor `name`, checks its shape against `expected`, converts it to f32 on the host.
    ///
    /// # Errors
    /// [`ModelError::MissingTensor`], [`ModelError::ShapeMismatch`],
    /// [`ModelError::UnsupportedDtype`], [`ModelError::Io`].
    pub fn read_f32(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        self.read::<f32>(name, expected)
    }

    /// Reads tensor `name` (shape checked against `expected`) as host data of `dtype`, one of
    /// [`FLOAT_DTYPES`], converting from the stored dtype piece by piece.
    ///
    /// # Errors
    /// As [`Checkpoint::read_f32`], and [`ModelError::UnknownDtype`] for another `dtype`.
    pub fn read_data(&self, name: &str, expected: &[usize], dtype: DType) -> Result<TensorData> {
        let shape = expected.to_vec();
        Ok(match check_float(dtype)? {
            DType::F64 => TensorData::new(self.read::<f64>(name, expected)?, shape),
            DType::BF16 => TensorData::new(self.read::<half::bf16>(name, expected)?, shape),
            DType::F16 => TensorData::new(self.read::<half::f16>(name, expected)?, shape),
            _ => TensorData::new(self.read::<f32>(name, expected)?, shape),
        })
    }

    fn read<E: HostFloat>(&self, name: &str, expected: &[usize]) -> Result<Vec<E>> {
        let Some(entry) = self.index.get(name) else {
            return Err(ModelError::MissingTensor {
                name: name.to_string(),
                dir: self.dir.clone(),
            });
        };
        let path = &self.shards[entry.shard];
        if entry.shape != expected {
            return Err(ModelError::ShapeMismatch {
                name: name.to_string(),
                expected: expected.to_vec(),
                got: entry.shape.clone(),
            });
        }
        let width = match entry.dtype {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::F64 => 8,
            other => {
                return Err(ModelError::UnsupportedDtype {
                    name: name.to_string(),
                    path: path.clone(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        let io = |source| ModelError::Io {
            path: path.clone(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        file.seek(SeekFrom::Start(entry.start)).map_err(io)?;
        let total = (entry.end - entry.start) as usize;
        let mut out = Vec::with_capacity(total / width);
        let mut piece = vec![0u8; PIECE.min(total)];
        let mut left = total;
        while left > 0 {
            let take = left.min(PIECE);
            let bytes = &mut piece[..take];
            file.read_exact(bytes).map_err(io)?;
            convert(bytes, entry.dtype, &mut out);
            left -= take;
        }
        Ok(out)
    }
}

impl WeightSource for Checkpoint {
    fn tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        _role: Role,
        dtype: DType,
    ) -> Result<TensorData> {
        self.read_data(name, shape, dtype)
    }

    fn has(&self, name: &str) -> bool {
        self.contains(name)
    }

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }
}

/// Reads and checks one file's header: returns where its data starts and its metadata, having
/// checked that every tensor's byte count matches its dtype and shape and that the data section
/// is exactly as long as the header says (a truncated file fails here, not mid-load).
fn read_header(path: &Path) -> Result<(u64, Metadata)> {
    let corrupt = |source| ModelError::Safetensors {
        path: path.to_path_buf(),
        source,
    };
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len < 8 {
        return Err(corrupt(SafeTensorError::HeaderTooSmall));
    }
    let mut n = [0u8; 8];
    file.read_exact(&mut n).map_err(io)?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER {
        return Err(corrupt(SafeTensorError::HeaderTooLarge));
    }
    if 8 + n > len {
        return Err(corrupt(SafeTensorError::InvalidHeaderLength));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(io)?;
    let metadata: Metadata = serde_json::from_slice(&header)
        .map_err(|e| corrupt(SafeTensorError::InvalidHeaderDeserialization(e)))?;
    let data_len = len - 8 - n;
    for (name, info) in metadata.tensors() {
        let (start, end) = info.data_offsets;
        let bytes = info
            .shape
            .iter()
            .try_fold(info.dtype.bitsize(), |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| corrupt(SafeTensorError::ValidationOverflow))?
            / 8;
        if end < start || end - start != bytes {
            return Err(corrupt(SafeTensorError::InvalidOffset(name)));
        }
        if end as u64 > data_len {
            return Err(corrupt(SafeTensorError::MetadataIncompleteBuffer));
        }
    }
    if metadata.data_len() as u64 != data_len {
        return Err(corrupt(SafeTensorError::MetadataIncompleteBuffer));
    }
    Ok((8 + n, metadata))
}

/// A host element type weights are read into: f32, f64, bf16 or f16.
pub(crate) trait HostFloat: Element + Copy {
    fn from_f32(x: f32) -> Self;
    fn from_f64(x: f64) -> Self;
}

impl HostFloat for f32 {
    fn from_f32(x: f32) -> Self {
        x
    }
    fn from_f64(x: f64) -> Self {
        x as f32
    }
}

impl HostFloat for f64 {
    fn from_f32(x: f32) -> Self {
        f64::from(x)
    }
    fn from_f64(x: f64) -> Self {
        x
    }
}

impl HostFloat for half::bf16 {
    fn from_f32(x: f32) -> Self {
        half::bf16::from_f32(x)
    }
    fn from_f64(x: f64) -> Self {
        half::bf16::from_f64(x)
    }
}

impl HostFloat for half::f16 {
    fn from_f32(x: f32) -> Self {
        half::f16::from_f32(x)
    }
    fn from_f64(x: f64) -> Self {
        half::f16::from_f64(x)
    }
}

/// Little-endian bytes of `dtype` (F32/F16/BF16/F64) appended to `out` as `E`.
fn convert<E: HostFloat>(bytes: &[u8], dtype: Dtype, out: &mut Vec<E>) {
    match dtype {
        Dtype::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| E::from_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        ),
        Dtype::F16 => {
            out.extend(bytes.chunks_exact(2).map(|b| {
                E::from_f32(half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            }))
        }
        Dtype::BF16 => out.extend(bytes.chunks_exact(2).map(|b| {
            E::from_f32(half::bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
        })),
        _ => out.extend(bytes.chunks_exact(8).map(|b| {
            E::from_f64(f64::from_le_bytes([
                b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
            ]))
        })),
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
        let mut checkpoint = Checkpoint::open(dir)?;
        Self::from_checkpoint(&config, &config_path, &mut checkpoint, device, options)
    }

    /// Builds the model from an already opened checkpoint.
    ///
    /// # Errors
    /// As [`Qwen2ForCausalLM::from_dir`].
    pub fn from_checkpoint(
        config: &Qwen2Config,
        config_path: &Path,
        ckpt: &mut Checkpoint,
        device: &Device,
        options: &LoadOptions,
    ) -> Result<Self> {
        build(config, config_path, ckpt, device, options.dtype)
    }
}
