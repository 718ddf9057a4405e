//! Building a model from a config and a source of weights: one path for loading a checkpoint
//! ([`Checkpoint`](crate::Checkpoint)) and for a fresh, seeded initialisation
//! ([`Qwen2Config::init`]). Sources hand out tensors in Hugging Face's layout (`[out, in]` for
//! projections); the builder transposes projections on the host to burn's `[in, out]` (16-bit
//! weights on flex keep HF's storage under a transposed view, see `Builder::keeps_hf_layout`,
//! and a layer's projections share one large-page mapping, see `in_large_pages_together`)
//! and uploads one tensor at a time.

use std::path::Path;

use burn::module::Param;
use burn::nn::{Embedding, Linear};
use burn::tensor::{DType, Device, Element, Tensor, TensorData};
use em_core::rng::{Rng, normal, rng};

use crate::config::Qwen2Config;
use crate::error::Result;
use crate::loader::{HostFloat, check_float};
use crate::model::{
    Attention, DecoderLayer, LmHead, Mlp, Qwen2ForCausalLM, Qwen2Model, RmsNorm, biases,
};
use crate::rope::RotaryEmbedding;

/// What a tensor is, for a source that makes weights rather than reading them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The token embedding.
    Embedding,
    /// A projection's weight (`[out, in]`).
    Weight,
    /// A projection's bias.
    Bias,
    /// An RMSNorm scale.
    Norm,
}

/// Where a model's weights come from.
pub(crate) trait WeightSource {
    /// Tensor `name` of HF shape `shape` as host data of `dtype`.
    fn tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        role: Role,
        dtype: DType,
    ) -> Result<TensorData>;
    /// Whether the source has an optional tensor (`lm_head.weight`).
    fn has(&self, name: &str) -> bool;
    /// For messages.
    fn describe(&self) -> String;
}

/// HF's `_init_weights` for Qwen2/Llama from one seeded stream, drawn in the order the builder
/// asks: projections and the embedding from normal(0, `initializer_range`), biases 0, norms 1.
struct Init {
    rng: Rng,
    std: f64,
    tied: bool,
}

impl WeightSource for Init {
    fn tensor(
        &mut self,
        _name: &str,
        shape: &[usize],
        role: Role,
        dtype: DType,
    ) -> Result<TensorData> {
        let n: usize = shape.iter().product();
        let values: Vec<f64> = match role {
            Role::Norm => vec![1.0; n],
            Role::Bias => vec![0.0; n],
            Role::Embedding | Role::Weight => {
                (0..n).map(|_| normal(&mut self.rng) * self.std).collect()
            }
        };
        Ok(host_data(&values, shape, dtype))
    }

    fn has(&self, name: &str) -> bool {
        name == "lm_head.weight" && !self.tied
    }

    fn describe(&self) -> String {
        "a fresh initialisation".into()
    }
}

/// f64 host values as a tensor of `dtype` on `device`, built from host data of that dtype (a
/// backend without f64, such as wgpu on Metal, never sees an f64 tensor unless asked for one).
pub fn host_tensor<const D: usize>(
    values: &[f64],
    shape: [usize; D],
    device: &Device,
    dtype: DType,
) -> Tensor<D> {
    Tensor::from_data(host_data(values, &shape, dtype), (device, dtype))
}

/// f64 host values as data of `dtype` (one of the float dtypes).
fn host_data(values: &[f64], shape: &[usize], dtype: DType) -> TensorData {
    fn typed<E: HostFloat>(values: &[f64], shape: &[usize]) -> TensorData {
        TensorData::new(
            values.iter().map(|&v| E::from_f64(v)).collect::<Vec<E>>(),
            shape.to_vec(),
        )
    }
    match dtype {
        DType::F64 => typed::<f64>(values, shape),
        DType::BF16 => typed::<half::bf16>(values, shape),
        DType::F16 => typed::<half::f16>(values, shape),
        _ => typed::<f32>(values, shape),
    }
}

impl Qwen2Config {
    /// A model with fresh weights in `dtype` (f32, f64, bf16 or f16) on `device`: HF's
    /// initialisation (projections and embedding ~ normal(0, [`initializer_range`]), biases 0,
    /// norms 1) drawn on the host from one seeded stream ([`em_core::rng`]), so a seed gives the
    /// same model on every backend.
    ///
    /// [`initializer_range`]: Qwen2Config::initializer_range
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`](crate::ModelError::InvalidConfig) or
    /// [`ModelError::UnsupportedArchitecture`](crate::ModelError::UnsupportedArchitecture) for a
    /// config this crate cannot run; [`ModelError::UnknownDtype`](crate::ModelError::UnknownDtype).
    pub fn init(&self, device: &Device, dtype: DType, seed: u64) -> Result<Qwen2ForCausalLM> {
        let path = Path::new("<config>");
        self.validate(path)?;
        let mut init = Init {
            rng: rng(seed),
            std: self.initializer_range(),
            tied: self.tie_word_embeddings,
        };
        build(self, path, &mut init, device, dtype)
    }
}

/// Builds the model from `source`.
pub(crate) fn build(
    config: &Qwen2Config,
    config_path: &Path,
    source: &mut dyn WeightSource,
    device: &Device,
    dtype: DType,
) -> Result<Qwen2ForCausalLM> {
    let dtype = check_float(dtype)?;
    let arch = config.architecture(config_path)?;
    let (qkv_bias, o_bias) = biases(config, arch);
    let (hidden, inter) = (config.hidden_size, config.intermediate_size);
    let (heads, kv_heads, head_dim) = (
        config.num_attention_heads,
        config.kv_heads(),
        config.head_size(),
    );
    let eps = config.rms_norm_eps;
    let mut b = Builder {
        source,
        device,
        dtype,
    };

    let embed = b.upload::<2>(
        "model.embed_tokens.weight",
        [config.vocab_size, hidden],
        Role::Embedding,
        dtype,
    )?;
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for l in 0..config.num_hidden_layers {
        let p = format!("model.layers.{l}");
        // A layer's seven projections in the order a forward pass reads them (one large-page
        // mapping for 16-bit weights on flex: `Builder::linears`).
        let [
            q_proj,
            k_proj,
            v_proj,
            o_proj,
            gate_proj,
            up_proj,
            down_proj,
        ] = b.linears([
            (
                &format!("{p}.self_attn.q_proj"),
                hidden,
                heads * head_dim,
                qkv_bias,
            ),
            (
                &format!("{p}.self_attn.k_proj"),
                hidden,
                kv_heads * head_dim,
                qkv_bias,
            ),
            (
                &format!("{p}.self_attn.v_proj"),
                hidden,
                kv_heads * head_dim,
                qkv_bias,
            ),
            (
                &format!("{p}.self_attn.o_proj"),
                heads * head_dim,
                hidden,
                o_bias,
            ),
            (&format!("{p}.mlp.gate_proj"), hidden, inter, false),
            (&format!("{p}.mlp.up_proj"), hidden, inter, false),
            (&format!("{p}.mlp.down_proj"), inter, hidden, false),
        ])?;
        let self_attn = Attention {
            q_proj,
            k_proj,
            v_proj,
            o_proj,
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim,
        };
        let mlp = Mlp {
            gate_proj,
            up_proj,
            down_proj,
        };
        let input_layernorm = b.norm(&format!("{p}.input_layernorm.weight"), hidden, eps)?;
        let post_attention_layernorm =
            b.norm(&format!("{p}.post_attention_layernorm.weight"), hidden, eps)?;
        layers.push(DecoderLayer {
            self_attn,
            mlp,
            input_layernorm,
            post_attention_layernorm,
        });
    }
    let norm = b.norm("model.norm.weight", hidden, eps)?;
    let lm_head = if b.source.has("lm_head.weight") && !config.tie_word_embeddings {
        // HF's `[vocab, hidden]` as it is: the head keeps that layout (`LmHead`).
        let weight = b.upload::<2>(
            "lm_head.weight",
            [config.vocab_size, hidden],
            Role::Weight,
            b.dtype,
        )?;
        Some(LmHead {
            weight: Param::from_tensor(weight),
        })
    } else {
        if !config.tie_word_embeddings {
            tracing::warn!(
                "{}: no lm_head.weight although tie_word_embeddings is false; using the embedding",
                b.source.describe()
            );
        }
        None
    };
    Ok(Qwen2ForCausalLM {
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

struct Builder<'a> {
    source: &'a mut dyn WeightSource,
    device: &'a Device,
    dtype: DType,
}

impl Builder<'_> {
    fn upload<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        role: Role,
        dtype: DType,
    ) -> Result<Tensor<D>> {
        let mut data = self.source.tensor(name, &shape, role, dtype)?;
        if self.keeps_hf_layout() {
            data = in_large_pages(data);
        }
        Ok(Tensor::from_data(data, (self.device, dtype)))
    }

    /// A layer's Linears from HF's `[out, in]` weights (burn keeps `[in, out]`) and optional
    /// biases, `(prefix, d_in, d_out, bias)` each, read from the source in the order given
    /// (each weight, then its bias: a seeded source's values depend on the order). Weights that
    /// keep HF's layout are held on the host until the last is read and then share one
    /// large-page mapping ([`in_large_pages_together`]), in the order given: the load's peak
    /// host memory grows from about one weight to about one layer (about 0.9 GB for a 7B f16
    /// model's layer). Other weights are transposed and uploaded one at a time, as before.
    fn linears<const N: usize>(
        &mut self,
        specs: [(&str, usize, usize, bool); N],
    ) -> Result<[Linear; N]> {
        let keeps_hf_layout = self.keeps_hf_layout();
        let (mut held, mut weights, mut biases) = (Vec::new(), Vec::new(), Vec::new());
        for (prefix, d_in, d_out, bias) in specs {
            let data = self.source.tensor(
                &format!("{prefix}.weight"),
                &[d_out, d_in],
                Role::Weight,
                self.dtype,
            )?;
            if keeps_hf_layout {
                held.push(data);
            } else {
                // Transposed on the host so that the device tensor is contiguous `[in, out]`.
                let data = transpose_data(&data, d_out, d_in)?;
                weights.push(Tensor::<2>::from_data(data, (self.device, self.dtype)));
            }
            biases.push(if bias {
                Some(Param::from_tensor(self.upload::<1>(
                    &format!("{prefix}.bias"),
                    [d_out],
                    Role::Bias,
                    self.dtype,
                )?))
            } else {
                None
            });
        }
        if keeps_hf_layout {
            // HF's `[out, in]` storage under burn's `[in, out]` as a transposed view.
            weights = in_large_pages_together(held)
                .into_iter()
                .map(|data| Tensor::<2>::from_data(data, (self.device, self.dtype)).transpose())
                .collect();
        }
        let linears: Vec<Linear> = weights
            .into_iter()
            .zip(biases)
            .map(|(weight, bias)| Linear {
                weight: Param::from_tensor(weight),
                bias,
            })
            .collect();
        Ok(linears
            .try_into()
            .unwrap_or_else(|_| unreachable!("one Linear per spec")))
    }

    /// Whether projection weights stay in HF's `[out, in]` storage under burn's `[in, out]`
    /// (a transposed view): 16-bit weights on flex, which only ever meet the CPU kernels
    /// (`kernels::project`: decode's products and prefill's widened ones; training is f32). The
    /// kernels then read each output's weights as one contiguous row (`Layout::NK`), as
    /// llama.cpp does. Measured on the AMD EPYC VM (2026-12-06), two f16 models of the 0.5B
    /// checkpoint loaded in one process and alternated (a throwaway bench): the `[in, out]`
    /// model's step time over this one's, median of 78 pairs per run, 0.99-1.08 at batch 1
    /// (six runs, four of them ≥ 1.03), 1.06-1.11 at batch 8; 128-token prefill 0.97-0.98
    /// (24 pairs, two runs), as prefill widens a transposed chunk (`kernels::matmul_widened`).
    /// Everywhere else the host transposes them once: a lazy view made flex's own matmul copy
    /// every weight on every forward (the real 0.5B model decoded at 0.7 tok/s, ~1.2 s of
    /// ~1.4 s per step in those copies).
    fn keeps_hf_layout(&self) -> bool {
        #[cfg(feature = "flex")]
        if *self.device == Device::flex() {
            return matches!(self.dtype, DType::F16 | DType::BF16);
        }
        false
    }

    fn norm(&mut self, name: &str, size: usize, eps: f64) -> Result<RmsNorm> {
        let dtype = em_core::compute_dtype(self.dtype);
        Ok(RmsNorm {
            weight: Param::from_tensor(self.upload::<1>(name, [size], Role::Norm, dtype)?),
            eps,
        })
    }
}

/// 2 MiB: a large page of x86-64 Linux (a PMD-mapped transparent huge page).
#[cfg(feature = "flex")]
const LARGE_PAGE: usize = 2 << 20;

/// `data` copied into memory that Linux may back with 2 MiB pages, for a weight of at least
/// one such page ([`in_large_pages_together`] for one tensor); anything smaller is left as it
/// is.
///
/// Why: a decode step streams every weight once, and with 4 KiB pages the CPU's prefetchers
/// stop at every page boundary and its TLB misses every few KiB; llama.cpp gets 2 MiB pages for
/// its GGUF from the page cache. Measured on the AMD EPYC VM (2026-12-06, a throwaway bench,
/// two f16 models of the 0.5B checkpoint, with and without this, alternated in one process,
/// 1.12 of their 1.26 GB in 2 MiB pages): the 4 KiB model's step time over this one's, median
/// of 78 pairs, 1.03 and 1.08 at batch 1 (two runs), 1.01 and 1.03 at batch 8; 128-token
/// prefill 0.99-1.01. The copy costs 0.26-0.30 s at load (2.8-3.6 s before). Collapsing the
/// pages after loading instead (`MADV_COLLAPSE`) took 2.4-3.8 s.
#[cfg(feature = "flex")]
pub(crate) fn in_large_pages(data: TensorData) -> TensorData {
    in_large_pages_together(vec![data])
        .pop()
        .unwrap_or_else(|| unreachable!("one tensor in, one out"))
}

/// Where each tensor of [`in_large_pages_together`] starts in its mapping: a cache line apart.
#[cfg(feature = "flex")]
const PACKED_ALIGN: usize = 64;

/// `datas` copied one after the other (each on a cache-line boundary) into one mapping that
/// Linux may back with 2 MiB pages, when together they fill at least one such page: an
/// anonymous mapping, the first tensor on a large-page boundary in it, advised `MADV_HUGEPAGE`
/// before the copy faults the pages in, then made read-only and handed to burn as shared bytes
/// (no further copy; a write would copy-on-write, and weights are never written). Anything
/// smaller, or a mapping that fails, keeps `datas` as they are; elsewhere than Linux the
/// mapping is plain memory. Values, shapes and dtypes are unchanged.
///
/// A layer's seven projections go in together (`Builder::linears`): q, k, v and o of the 0.5B
/// model are 0.2-1.6 MB each, below a large page on their own, so they stayed in 4 KiB pages,
/// and their products read at 23-27 GB/s where gate/up's read at ~34 (timers around each
/// product of a batch-1 f16 step, AMD EPYC VM, 2026-12-07). Two f16 models loaded in one
/// process, weights one mapping each against a layer's weights together, steps alternated
/// (a throwaway bench, same VM and day; the logits bit-identical): median step ratio
/// together / apart 0.987, 0.997, 0.996, 0.993, 0.994 at batch 1 (96 pairs a run), 0.99-1.03
/// at batch 8 (36 pairs, within the noise); load time unchanged.
#[cfg(feature = "flex")]
pub(crate) fn in_large_pages_together(datas: Vec<TensorData>) -> Vec<TensorData> {
    let offsets: Vec<usize> = datas
        .iter()
        .scan(0, |at, data| {
            let start = *at;
            *at += data.as_bytes().len().next_multiple_of(PACKED_ALIGN);
            Some(start)
        })
        .collect();
    let len = datas
        .last()
        .zip(offsets.last())
        .map_or(0, |(data, &at)| at + data.as_bytes().len());
    if len < LARGE_PAGE {
        return datas;
    }
    // One large page more than the data needs, so that the data can start on a boundary
    // whatever address the mapping gets (the slack is never touched, so never backed).
    let Ok(mut map) = memmap2::MmapMut::map_anon(len.next_multiple_of(LARGE_PAGE) + LARGE_PAGE)
    else {
        return datas;
    };
    let start = (map.as_ptr() as usize).next_multiple_of(LARGE_PAGE) - map.as_ptr() as usize;
    // Advice only: without transparent huge pages the mapping keeps 4 KiB pages.
    #[cfg(target_os = "linux")]
    let _ = map.advise_range(
        memmap2::Advice::HugePage,
        start,
        len.next_multiple_of(LARGE_PAGE),
    );
    for (data, &at) in datas.iter().zip(&offsets) {
        let bytes = data.as_bytes();
        map[start + at..start + at + bytes.len()].copy_from_slice(bytes);
    }
    let Ok(map) = map.make_read_only() else {
        return datas;
    };
    let shared = bytes::Bytes::from_owner(map);
    datas
        .iter()
        .zip(&offsets)
        .map(|(data, &at)| {
            let bytes = shared.slice(start + at..start + at + data.as_bytes().len());
            TensorData::from_bytes(
                burn::tensor::Bytes::from_shared(bytes, burn::tensor::AllocationProperty::Other),
                data.shape().clone(),
                data.dtype(),
            )
        })
        .collect()
}

/// Without flex, host data is uploaded as it is.
#[cfg(not(feature = "flex"))]
pub(crate) fn in_large_pages(data: TensorData) -> TensorData {
    data
}

/// Without flex, host data is uploaded as it is.
#[cfg(not(feature = "flex"))]
pub(crate) fn in_large_pages_together(datas: Vec<TensorData>) -> Vec<TensorData> {
    datas
}

/// `[rows, cols] → [cols, rows]` of host data of any float dtype.
pub(crate) fn transpose_data(data: &TensorData, rows: usize, cols: usize) -> Result<TensorData> {
    fn typed<E: Element + Copy>(data: &TensorData, rows: usize, cols: usize) -> Result<TensorData> {
        Ok(TensorData::new(
            transpose_host(data.as_slice::<E>()?, rows, cols),
            [cols, rows],
        ))
    }
    match data.dtype() {
        DType::F64 => typed::<f64>(data, rows, cols),
        DType::BF16 => typed::<half::bf16>(data, rows, cols),
        DType::F16 => typed::<half::f16>(data, rows, cols),
        _ => typed::<f32>(data, rows, cols),
    }
}

/// `[rows, cols] → [cols, rows]` for a row-major host buffer, in cache-friendly tiles.
pub(crate) fn transpose_host<E: Copy>(values: &[E], rows: usize, cols: usize) -> Vec<E> {
    const TILE: usize = 32;
    // Every index is overwritten tile by tile below.
    let mut out = values.to_vec();
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

#[cfg(all(test, feature = "flex"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The mapping's `VmFlags` line in `/proc/self/smaps` for the mapping holding `addr`.
    #[cfg(target_os = "linux")]
    fn vm_flags(addr: usize) -> Option<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = range.split_once('-')
                && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                inside = (a..b).contains(&addr);
            } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
                return Some(flags.to_string());
            }
        }
        None
    }

    /// Weights of at least one large page come back with the same values, shape and dtype, as
    /// a flex tensor over the mapping (not a copy of it), starting on a large-page boundary,
    /// which Linux was asked to back with huge pages (`hg` in its `VmFlags`); smaller ones are
    /// left as they are. The values are
    /// compared with the source data bit for bit, through the tensor burn builds on them.
    #[test]
    fn large_weights_move_to_large_pages_unchanged() {
        let device = Device::flex();
        for (len, moved) in [(LARGE_PAGE / 2 - 7, false), (3 * LARGE_PAGE / 2 + 5, true)] {
            let values: Vec<half::f16> = (0..len)
                .map(|i| half::f16::from_f32((i % 2003) as f32 * 0.25 - 250.0))
                .collect();
            let data = TensorData::new(values.clone(), [len]);
            let source = data.as_bytes().as_ptr() as usize;
            let paged = in_large_pages(data);
            let at = paged.as_bytes().as_ptr() as usize;
            assert_eq!(at != source, moved, "{len} entries");
            assert_eq!(
                (paged.shape().clone(), paged.dtype()),
                ([len].into(), DType::F16)
            );
            let tensor = Tensor::<1>::from_data(paged, (&device, DType::F16));
            let primitive = tensor
                .clone()
                .try_into_primitive::<burn_flex::Flex>()
                .ok()
                .unwrap();
            let stored = primitive.storage::<half::f16>().as_ptr() as usize;
            assert_eq!(stored, at, "flex kept the bytes where they were");
            let back = tensor.to_data();
            assert_eq!(back.as_slice::<half::f16>().unwrap(), &values[..]);
            assert!(
                !moved || at.is_multiple_of(LARGE_PAGE),
                "on a large-page boundary"
            );
            // Kernels built with transparent huge pages have this directory; the advice
            // fails without them.
            #[cfg(target_os = "linux")]
            if moved && std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
                let flags = vm_flags(at).unwrap();
                assert!(flags.split_whitespace().any(|f| f == "hg"), "{flags}");
            }
        }
    }

    /// Tensors packed together come back with the same values, shapes and dtypes, one after
    /// the other in one mapping (the first on a large-page boundary, each on a cache line,
    /// flex's tensors over the mapping rather than copies), which Linux was asked to back with
    /// huge pages; tensors that together fill less than a large page are left where they were.
    /// Mixed widths and odd lengths exercise the cache-line rounding.
    #[test]
    fn tensors_packed_together_share_one_large_page_mapping() {
        let device = Device::flex();
        let f16s = |len: usize, seed: usize| -> Vec<half::f16> {
            (0..len)
                .map(|i| half::f16::from_f32(((i * 7 + seed) % 2003) as f32 * 0.25 - 250.0))
                .collect()
        };
        let bf16s = |len: usize| -> Vec<half::bf16> {
            (0..len)
                .map(|i| half::bf16::from_f32((i % 1009) as f32 * -0.5 + 3.0))
                .collect()
        };
        // Below a page together (left in place), then above it with small members.
        for (lens, moved) in [
            ([1001, 333, 20_000], false),
            // Each member below a large page, together above it.
            ([LARGE_PAGE / 4 + 3, 4_097, LARGE_PAGE / 4 + 11], true),
        ] {
            let (a, b, c) = (f16s(lens[0], 1), bf16s(lens[1]), f16s(lens[2], 5));
            let datas = vec![
                TensorData::new(a.clone(), [lens[0]]),
                TensorData::new(b.clone(), [lens[1]]),
                TensorData::new(c.clone(), [lens[2]]),
            ];
            let sources: Vec<usize> = datas
                .iter()
                .map(|d| d.as_bytes().as_ptr() as usize)
                .collect();
            let packed = in_large_pages_together(datas);
            assert_eq!(packed.len(), 3);
            let at: Vec<usize> = packed
                .iter()
                .map(|d| d.as_bytes().as_ptr() as usize)
                .collect();
            if moved {
                assert!(at[0].is_multiple_of(LARGE_PAGE), "on a large-page boundary");
                assert_eq!(at[1], at[0] + (2 * lens[0]).next_multiple_of(PACKED_ALIGN));
                assert_eq!(at[2], at[1] + (2 * lens[1]).next_multiple_of(PACKED_ALIGN));
                #[cfg(target_os = "linux")]
                if std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
                    for at in [at[0], at[2]] {
                        let flags = vm_flags(at).unwrap();
                        assert!(flags.split_whitespace().any(|f| f == "hg"), "{flags}");
                    }
                }
            } else {
                assert_eq!(at, sources, "left where they were");
            }
            for (i, (data, dtype)) in packed
                .into_iter()
                .zip([DType::F16, DType::BF16, DType::F16])
                .enumerate()
            {
                assert_eq!(
                    (data.shape().clone(), data.dtype()),
                    ([lens[i]].into(), dtype)
                );
                let tensor = Tensor::<1>::from_data(data, (&device, dtype));
                let primitive = tensor
                    .clone()
                    .try_into_primitive::<burn_flex::Flex>()
                    .ok()
                    .unwrap();
                let stored = match dtype {
                    DType::BF16 => primitive.storage::<half::bf16>().as_ptr() as usize,
                    _ => primitive.storage::<half::f16>().as_ptr() as usize,
                };
                assert_eq!(stored, at[i], "flex kept the bytes where they were");
                let back = tensor.to_data();
                match i {
                    0 => assert_eq!(back.as_slice::<half::f16>().unwrap(), &a[..]),
                    1 => assert_eq!(back.as_slice::<half::bf16>().unwrap(), &b[..]),
                    _ => assert_eq!(back.as_slice::<half::f16>().unwrap(), &c[..]),
                }
            }
        }
    }
}
