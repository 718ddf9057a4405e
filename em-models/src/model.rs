//! The decoder-only transformer shared by Qwen2 and Llama. Struct and field names equal the
//! Hugging Face checkpoint keys (`model.layers.3.self_attn.q_proj.weight`), so loading needs no
//! key remapping.

use std::ops::Range;

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::activation::silu;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, DType, Device, Int, Tensor, TensorData};

use crate::attend;
use crate::cache::KvCache;
use crate::config::{Architecture, Qwen2Config};
use crate::error::Result;
use crate::kernels::{self, Layout};
use crate::rope::{RotaryEmbedding, apply_rope, rope_rows};

/// Which positions' logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Every position (`[batch, seq, vocab]`): training, scoring.
    All,
    /// Only the last position (`[batch, 1, vocab]`): decoding. The lm_head runs on one row per
    /// sequence instead of all of them.
    Last,
}

/// Root-mean-square layer norm with HF's parameter name (`weight`), computed in f32.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// Per-channel scale.
    pub weight: Param<Tensor<1>>,
    /// Epsilon added to the mean square.
    pub eps: f64,
}

impl RmsNorm {
    /// `x / sqrt(mean(x²) + eps) · weight`, computed in f32 (f64 for an f64 model), returned
    /// in `x`'s dtype.
    ///
    /// # Shapes
    /// `[..., hidden_size] → [..., hidden_size]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if let Some(y) = self.forward_host(&x) {
            return y;
        }
        self.forward_ops(x)
    }

    /// [`RmsNorm::forward`] as one host pass over the rows, for a plain f32 `x` on flex: the
    /// sum of squares in fixed lanes at the CPU's SIMD width ([`em_core::fused::rows`]), then
    /// `x · inv_rms · weight`, where burn's ops make eight passes (a decode step runs 49 norms
    /// of one row each, a few µs of op overhead apiece). The same operations as
    /// [`RmsNorm::forward_ops`] but for the order of the sum of squares, so the two agree to f32
    /// rounding (tested). `None` for anything else (autodiff, f64, other backends).
    fn forward_host<const D: usize>(&self, x: &Tensor<D>) -> Option<Tensor<D>> {
        use em_core::fused::{host_rows, rows, tensor_from_rows};
        let dims = x.dims();
        let width = dims[D - 1];
        let n = dims.iter().product::<usize>() / width.max(1);
        if width == 0 || self.weight.dims() != [width] {
            return None;
        }
        let x_rows = host_rows(&x.clone().reshape([n, width]))?;
        // The weight as f32 (a copy only for 16-bit weights: `width` values).
        let weight = self.weight.val();
        if weight.is_autodiff() {
            return None;
        }
        let weight = host_rows(&weight.cast(DType::F32).reshape([1, width]))?;
        let (weight, eps) = (weight.values(), self.eps as f32);
        let xv = x_rows.values();
        let mut out = vec![0f32; n * width];
        each_chunk_mut(&mut out, width, n * width >= rows::CHUNK, |i, out| {
            rows::vectorized(Norm {
                out,
                x: &xv[i * width..(i + 1) * width],
                weight,
                eps,
            });
        });
        Some(tensor_from_rows(out, [n, width], &x.device()).reshape(dims))
    }

    /// [`RmsNorm::forward`] in burn's ops: any backend, autodiff included.
    fn forward_ops<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dtype = x.dtype();
        let x = em_core::promote(x);
        let compute = x.dtype();
        let inv_rms = (x.clone().square().mean_dim(D - 1) + self.eps)
            .sqrt()
            .recip();
        let weight = self.weight.val().cast(compute).unsqueeze::<D>();
        (x * inv_rms * weight).cast(dtype)
    }
}

/// Runs `f(i, chunk)` over the consecutive `width`-wide chunks of `out` (a host pass's output
/// rows): on rayon's threads when `parallel`, else on the calling thread (a decode step's few
/// rows are not worth a fork).
pub(crate) fn each_chunk_mut(
    out: &mut [f32],
    width: usize,
    parallel: bool,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    use rayon::prelude::*;
    if parallel {
        out.par_chunks_mut(width)
            .enumerate()
            .for_each(|(i, chunk)| f(i, chunk));
    } else {
        out.chunks_mut(width)
            .enumerate()
            .for_each(|(i, chunk)| f(i, chunk));
    }
}

/// One row of [`RmsNorm::forward_host`].
struct Norm<'a> {
    out: &'a mut [f32],
    x: &'a [f32],
    weight: &'a [f32],
    eps: f32,
}

impl em_core::fused::rows::Kernel for Norm<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let mean = attend::dot(self.x, self.x) / self.x.len() as f32;
        let inv_rms = 1.0 / (mean + self.eps).sqrt();
        for ((out, &x), &w) in self.out.iter_mut().zip(self.x).zip(self.weight) {
            *out = x * inv_rms * w;
        }
    }
}

/// `linear(x)`, `x` in the compute dtype (f32, or f64 for an f64 model) whatever the weights'
/// width. Decode-sized inputs on the CPU (at most [`kernels::MAX_ROWS`] rows, flex, no autodiff,
/// f32/f16/bf16 weights) take [`kernels`]' fast path, which streams the weight once in its stored
/// width on every thread and accumulates in f32; everything else takes burn's `Linear::forward`
/// in the weights' dtype, `x` cast to it and the result cast back. The two agree up to float
/// rounding (tested).
pub(crate) fn project(linear: &Linear, x: Tensor<3>) -> Tensor<3> {
    let weight = linear.weight.val();
    let bias = linear.bias.as_ref().map(|b| b.val());
    kernels::project(&x, &weight, Layout::KN, bias.as_ref())
        .unwrap_or_else(|| in_width(x, weight.dtype(), |x| linear.forward(x)))
}

/// [`project`] for several linears of the same `x`: on the CPU fast path `x` is read once and
/// decode-sized products share one parallel region ([`kernels::project_all`]); each weight is
/// still its own parameter, read live. Otherwise each linear as [`project`].
pub(crate) fn project_all<const N: usize>(linears: [&Linear; N], x: Tensor<3>) -> [Tensor<3>; N] {
    let weights = linears.map(|linear| linear.weight.val());
    let biases = linears.map(|linear| linear.bias.as_ref().map(|b| b.val()));
    let pairs: Vec<_> = weights
        .iter()
        .zip(&biases)
        .map(|(w, b)| (w, b.as_ref()))
        .collect();
    match kernels::project_all(&x, &pairs, Layout::KN) {
        Some(ys) => ys.try_into().expect("one output per linear"),
        None => linears.map(|linear| project(linear, x.clone())),
    }
}

/// `f(x)` computed in `dtype` (the weights'), returned in `x`'s dtype.
fn in_width(x: Tensor<3>, dtype: DType, f: impl FnOnce(Tensor<3>) -> Tensor<3>) -> Tensor<3> {
    let compute = x.dtype();
    if compute == dtype {
        f(x)
    } else {
        f(x.cast(dtype)).cast(compute)
    }
}

/// The head `(W · xᵀ)ᵀ`, `W: [vocab, hidden]` as stored (the tied embedding or an untied
/// [`LmHead`], both in HF's layout), `x: [batch, seq, hidden]`: [`kernels`]' fast path reads
/// `W`'s rows as they are for decode-sized inputs on the CPU; else burn's matmul, which never
/// transposes the 136M-entry matrix either (a strided view of it is copied by the matmul on
/// every call); only the small `[batch, hidden, seq]` side is.
fn head_product(weight: Tensor<2>, x: Tensor<3>) -> Tensor<3> {
    kernels::project(&x, &weight, Layout::NK, None).unwrap_or_else(|| {
        in_width(x, weight.dtype(), |x| {
            weight
                .unsqueeze::<3>()
                .matmul(x.swap_dims(1, 2))
                .swap_dims(1, 2)
        })
    })
}

/// Grouped-query self-attention with RoPE.
#[derive(Module, Debug)]
pub struct Attention {
    /// Query projection (`[hidden, heads·head_dim]` in burn's layout).
    pub q_proj: Linear,
    /// Key projection.
    pub k_proj: Linear,
    /// Value projection.
    pub v_proj: Linear,
    /// Output projection.
    pub o_proj: Linear,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
}

/// What a layer needs besides its input: RoPE tables and the attention mask.
pub(crate) struct LayerInputs {
    pub cos: Tensor<4>,
    pub sin: Tensor<4>,
    /// `[batch, 1, q, k]`, true = masked out; `None` = plain causal.
    pub mask: Option<Tensor<4, Bool>>,
    /// Each row's real tokens (absolute slots), which the mask is built from.
    pub spans: Vec<Range<usize>>,
}

impl Attention {
    /// With `cache`, the new keys/values are appended to layer `layer` of it and attention runs
    /// over everything cached; without (training), over this call's positions only.
    fn forward(
        &self,
        x: Tensor<3>,
        inputs: &LayerInputs,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor<3> {
        let [batch, seq, _] = x.dims();
        let heads =
            |t: Tensor<3>, n: usize| t.reshape([batch, seq, n, self.head_dim]).swap_dims(1, 2);
        // RoPE on the projections' rows where a host pass can (CPU), else on the split heads.
        let rotated = |t: Tensor<3>, n: usize| match rope_rows(&t, &inputs.cos, &inputs.sin) {
            Some(t) => heads(t, n),
            None => apply_rope(heads(t, n), &inputs.cos, &inputs.sin),
        };
        let [q, k, v] = project_all([&self.q_proj, &self.k_proj, &self.v_proj], x);
        let q = rotated(q, self.num_heads);
        let k = rotated(k, self.num_kv_heads);
        let v = heads(v, self.num_kv_heads);
        let (k, v, buffers) = match cache {
            Some((cache, layer)) => {
                let (k, v) = cache.append(layer, k, v);
                (k, v, cache.buffers(layer))
            }
            None => (k, v, None),
        };
        let total = k.dims()[2];
        // On the CPU, attention over the cache's buffers in place (decoding and prefill alike);
        // elsewhere burn's op, on grouped query rows when decoding.
        if let Some((keys, values)) = &buffers
            && let Some(out) = attend::cache_attention(
                kernels::Kernels::detect(),
                &q,
                keys,
                values,
                total,
                &inputs.spans,
            )
        {
            return project(&self.o_proj, out);
        }
        if seq == 1 && self.num_heads > self.num_kv_heads {
            return project(&self.o_proj, self.decode_attention(q, k, v, inputs, total));
        }
        let (k, v) = (self.repeat_kv(k), self.repeat_kv(v));
        let mask = inputs
            .mask
            .clone()
            .map(|m| m.expand([batch, self.num_heads, seq, total]));
        let is_causal = mask.is_none();
        let out = attention(q, k, v, mask, None, attention_options(is_causal));
        let out = out
            .swap_dims(1, 2)
            .reshape([batch, seq, self.num_heads * self.head_dim]);
        project(&self.o_proj, out)
    }

    /// Attention of one new position per row (decoding) with grouped kv heads, without
    /// [`Self::repeat_kv`]'s copies: the `rep` query heads that share a kv head become `rep`
    /// query rows of that kv head, so each cached key and value is read once rather than copied
    /// `rep` times (the copy was ~10% of a 16-bit decode step of the 0.5B model, 14 heads over
    /// 2). The query is the newest position, so every row sees all the cached keys its mask
    /// allows: the mask is the same for the `rep` rows, and nothing is causal among them.
    ///
    /// # Shapes
    /// `q: [batch, heads, 1, head_dim]`, `k`, `v`: `[batch, kv_heads, total, head_dim]` →
    /// `[batch, 1, heads·head_dim]`.
    fn decode_attention(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        inputs: &LayerInputs,
        total: usize,
    ) -> Tensor<3> {
        let batch = q.dims()[0];
        let rep = self.num_heads / self.num_kv_heads;
        let q = q.reshape([batch, self.num_kv_heads, rep, self.head_dim]);
        let mask = inputs
            .mask
            .clone()
            .map(|m| m.expand([batch, self.num_kv_heads, rep, total]));
        attention(q, k, v, mask, None, attention_options(false)).reshape([
            batch,
            1,
            self.num_heads * self.head_dim,
        ])
    }

    /// `[b, kv_heads, s, d] → [b, heads, s, d]`: query head `i` uses kv head `i / (heads/kv_heads)`.
    fn repeat_kv(&self, x: Tensor<4>) -> Tensor<4> {
        let rep = self.num_heads / self.num_kv_heads;
        if rep == 1 {
            return x;
        }
        let [b, kv, s, d] = x.dims();
        x.unsqueeze_dim::<5>(2)
            .expand([b, kv, rep, s, d])
            .reshape([b, kv * rep, s, d])
    }
}

/// burn's attention options with the default scale (`1/√head_dim`) and no softcap.
fn attention_options(is_causal: bool) -> AttentionModuleOptions {
    AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal,
    }
}

/// The SwiGLU MLP: `down(silu(gate(x)) · up(x))`.
#[derive(Module, Debug)]
pub struct Mlp {
    /// Gate projection.
    pub gate_proj: Linear,
    /// Up projection.
    pub up_proj: Linear,
    /// Down projection.
    pub down_proj: Linear,
}

impl Mlp {
    /// # Shapes
    /// `[batch, seq, hidden_size] → [batch, seq, hidden_size]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [gate, up] = project_all([&self.gate_proj, &self.up_proj], x);
        project(&self.down_proj, swiglu(gate, up))
    }
}

/// `silu(gate) · up`, SwiGLU's product. Plain f32 tensors on flex take a host-row pass
/// ([`em_core::fused`]): one pass at the CPU's SIMD width on rayon's threads, with em-core's
/// vectorized `exp`, where burn's ops make three single-threaded passes that call libm's
/// `expf` (5% of a 16-bit prefill's samples, `perf record` on `--bench model`). The same
/// operations as burn-flex's (`x · sigmoid(x)`, sigmoid in its stable two-branch form, then
/// `· up`); only `exp` differs, by at most an ulp. Everything else (autodiff for training,
/// other backends, f64) takes burn's ops.
fn swiglu(gate: Tensor<3>, up: Tensor<3>) -> Tensor<3> {
    use em_core::fused::{host_rows, rows, tensor_from_rows};
    use rayon::prelude::*;
    let [batch, seq, width] = gate.dims();
    let flat = |t: &Tensor<3>| host_rows(&t.clone().reshape([batch * seq, width]));
    if up.dims() == gate.dims()
        && let (Some(g), Some(u)) = (flat(&gate), flat(&up))
    {
        let mut out = vec![0f32; batch * seq * width];
        out.par_chunks_mut(rows::CHUNK)
            .zip(g.values().par_chunks(rows::CHUNK))
            .zip(u.values().par_chunks(rows::CHUNK))
            .for_each(|((out, g), u)| rows::vectorized(SwiGlu { out, g, u }));
        return tensor_from_rows(out, [batch * seq, width], &gate.device())
            .reshape([batch, seq, width]);
    }
    silu(gate) * up
}

/// One chunk of [`swiglu`]'s host pass.
struct SwiGlu<'a> {
    out: &'a mut [f32],
    g: &'a [f32],
    u: &'a [f32],
}

impl em_core::fused::rows::Kernel for SwiGlu<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        for ((out, &g), &u) in self.out.iter_mut().zip(self.g).zip(self.u) {
            let e = em_core::fused::rows::exp(-g.abs());
            let sigmoid = if g >= 0.0 {
                1.0 / (1.0 + e)
            } else {
                e / (1.0 + e)
            };
            *out = g * sigmoid * u;
        }
    }
}

/// One pre-norm decoder layer.
#[derive(Module, Debug)]
pub struct DecoderLayer {
    /// Self-attention.
    pub self_attn: Attention,
    /// MLP.
    pub mlp: Mlp,
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    pub(crate) fn forward(
        &self,
        x: Tensor<3>,
        inputs: &LayerInputs,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Tensor<3> {
        let h = self
            .self_attn
            .forward(self.input_layernorm.forward(x.clone()), inputs, cache);
        let x = x + h;
        let h = self
            .mlp
            .forward(self.post_attention_layernorm.forward(x.clone()));
        x + h
    }
}

/// The transformer body (`model.*` keys).
#[derive(Module, Debug)]
pub struct Qwen2Model {
    /// Token embedding `[vocab_size, hidden_size]`.
    pub embed_tokens: Embedding,
    /// Decoder layers.
    pub layers: Vec<DecoderLayer>,
    /// Final norm.
    pub norm: RmsNorm,
}

/// An untied output projection, `lm_head.weight`, kept in HF's layout `[vocab, hidden]` (not
/// burn's `Linear` layout `[hidden, vocab]`): the same layout as a tied head's embedding, so
/// both heads are one product ([`Qwen2ForCausalLM::head_weight`]) and a decode step reads the
/// head's rows contiguously ([`Layout::NK`]). No bias (Qwen2 and Llama have none).
#[derive(Module, Debug)]
pub struct LmHead {
    /// `[vocab, hidden]`.
    pub weight: Param<Tensor<2>>,
}

/// A Qwen2/Qwen2.5 or Llama causal LM: body plus `lm_head` (absent when tied to the embedding).
///
/// Qwen2 is Llama with q/k/v biases, so this one type serves both ([`LlamaForCausalLM`] is an
/// alias); [`Architecture`] and the config decide the biases and the RoPE scaling.
#[derive(Module, Debug)]
pub struct Qwen2ForCausalLM {
    /// The body.
    pub model: Qwen2Model,
    /// Output projection; `None` when tied to `model.embed_tokens`.
    pub lm_head: Option<LmHead>,
    /// Embedding rows = logits width.
    pub vocab_size: usize,
    /// Longest context the model was trained for.
    pub max_position_embeddings: usize,
    /// RoPE inverse frequencies (f64, host).
    pub inv_freq: Vec<f64>,
}

/// The Llama family runs on the same implementation (no bias, Llama-3 RoPE scaling from config).
pub type LlamaForCausalLM = Qwen2ForCausalLM;

impl Qwen2ForCausalLM {
    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.model.embed_tokens.weight.device()
    }

    /// The dtype of the weights (the embedding's).
    pub fn dtype(&self) -> DType {
        self.model.embed_tokens.weight.val().dtype()
    }

    /// The dtype norms, RoPE tables and logits compute in: f64 for an f64 model, else f32.
    pub fn compute_dtype(&self) -> DType {
        em_core::compute_dtype(self.dtype())
    }

    /// The head's weight, `[vocab, hidden]`: `lm_head`'s when untied, else the embedding.
    pub fn head_weight(&self) -> Tensor<2> {
        match &self.lm_head {
            Some(head) => head.weight.val(),
            None => self.model.embed_tokens.weight.val(),
        }
    }

    /// Decoder layers.
    pub fn num_layers(&self) -> usize {
        self.model.layers.len()
    }

    /// An empty KV cache for this model.
    pub fn new_cache(&self, batch: usize, max_len: usize) -> KvCache {
        KvCache::new(self.num_layers(), batch, max_len)
    }

    /// Runs `ids` (`[batch, seq]`, following what `cache` holds) through the model and returns
    /// f32 logits for every position or for the last one, appending keys/values to `cache`.
    ///
    /// Rows are left-padded as declared by [`KvCache::set_left_padding`]: padded positions are
    /// masked out of attention, and the position of a token counts from its row's first real
    /// token, so a padded row gives the logits it would give alone.
    ///
    /// # Shapes
    /// `ids: [batch, seq]` → `[batch, seq, vocab_size]` ([`Logits::All`]) or
    /// `[batch, 1, vocab_size]` ([`Logits::Last`]).
    ///
    /// # Errors
    /// [`ModelError::ContextOverflow`](crate::ModelError::ContextOverflow) when the cache cannot
    /// hold `seq` more positions; [`ModelError::Batch`](crate::ModelError::Batch) when the batch
    /// differs from the cache's.
    pub fn forward(
        &self,
        ids: Tensor<2, Int>,
        cache: &mut KvCache,
        logits: Logits,
    ) -> Result<Tensor<3>> {
        // On the CPU a step is a few hundred short parallel regions (every product, norm and
        // row pass). Called from a thread outside rayon's pool, each one wakes a worker, which
        // wakes the other, and then wakes the caller: ~880 context switches per decoded token
        // of the 0.5B model. Run on a worker, the step forks from it instead: ~4× fewer
        // switches, and f16 decode +15-23% on a 2-core VM (#14's note); the other workers
        // poll for the step's jobs rather than fall asleep between regions
        // ([`em_core::fused::with_pool_awake`]). A caller already on the pool runs in place.
        // Other devices keep the caller's thread (their streams).
        #[cfg(feature = "flex")]
        if self.device() == Device::flex() {
            return em_core::fused::with_pool_awake(|| self.forward_here(ids, cache, logits));
        }
        self.forward_here(ids, cache, logits)
    }

    /// [`Qwen2ForCausalLM::forward`] on the calling thread.
    fn forward_here(
        &self,
        ids: Tensor<2, Int>,
        cache: &mut KvCache,
        logits: Logits,
    ) -> Result<Tensor<3>> {
        let [batch, seq] = ids.dims();
        cache.check_room(batch, seq)?;
        let device = ids.device();
        let start = cache.len();
        // A cached row's real tokens start after its left padding and run to the end.
        let spans: Vec<Range<usize>> = cache
            .left_padding()
            .iter()
            .map(|&pad| pad..start + seq)
            .collect();
        let inputs = self.layer_inputs(&spans, start, seq, &device);

        let mut x = self.embed(ids);
        for (index, layer) in self.model.layers.iter().enumerate() {
            x = layer.forward(x, &inputs, Some((&mut *cache, index)));
        }
        cache.advance(seq);
        if logits == Logits::Last {
            let hidden = x.dims()[2];
            x = x.slice([0..batch, seq - 1..seq, 0..hidden]);
        }
        let x = self.model.norm.forward(x);
        Ok(em_core::promote(head_product(self.head_weight(), x)))
    }
}

impl Qwen2ForCausalLM {
    /// The embeddings of `ids` in the compute dtype: the residual stream, norms, attention and
    /// KV cache run in f32 (f64 for an f64 model) whatever the weights' width, as llama.cpp and
    /// HF's mixed precision do; only the products read 16-bit weights (see [`project`]).
    ///
    /// # Shapes
    /// `[batch, seq] → [batch, seq, hidden_size]`
    pub(crate) fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        em_core::promote(self.model.embed_tokens.forward(ids))
    }

    /// RoPE tables and the attention mask for `seq` new positions at absolute slots
    /// `start..start + seq` of rows whose real tokens sit at `spans` (KV-cache decoding: after
    /// the left padding; training: left or right padding). A token's position counts from its
    /// row's first real token, so a padded row computes what it computes alone. One mechanism
    /// for [`Qwen2ForCausalLM::forward`] and the training forward.
    pub(crate) fn layer_inputs(
        &self,
        spans: &[Range<usize>],
        start: usize,
        seq: usize,
        device: &Device,
    ) -> LayerInputs {
        let total = start + seq;
        let positions: Vec<Vec<usize>> = spans
            .iter()
            .map(|span| {
                (start..total)
                    .map(|i| i.saturating_sub(span.start))
                    .collect()
            })
            .collect();
        let rope = RotaryEmbedding::from_inv_freq(self.inv_freq.clone());
        let (cos, sin) = rope.tables(&positions, device, self.compute_dtype());
        let padded = spans.iter().any(|s| s.start > 0 || s.end < total);
        let mask = padded.then(|| span_mask(spans, start, seq, device));
        LayerInputs {
            cos,
            sin,
            mask,
            spans: spans.to_vec(),
        }
    }
}

/// `[batch, 1, seq, start + seq]`, true = masked: in row `b` with real tokens at `spans[b]`,
/// the query at absolute slot `i` sees key `j` iff `span.start ≤ j ≤ i` and `j < span.end`, or
/// `j = i` (a padding query sees at least itself, which keeps its softmax finite; its output is
/// never used).
fn span_mask(spans: &[Range<usize>], start: usize, seq: usize, device: &Device) -> Tensor<4, Bool> {
    let total = start + seq;
    let mut data = Vec::with_capacity(spans.len() * seq * total);
    for span in spans {
        for i in start..total {
            data.extend(
                (0..total).map(|j| !((j >= span.start && j <= i && j < span.end) || j == i)),
            );
        }
    }
    Tensor::from_data(TensorData::new(data, [spans.len(), 1, seq, total]), device)
}

/// Checks the config's architecture-dependent flags (used by the loader).
pub(crate) fn biases(config: &Qwen2Config, arch: Architecture) -> (bool, bool) {
    (config.qkv_bias(arch), config.o_bias(arch))
}

#[cfg(all(test, feature = "flex"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn host(t: Tensor<3>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// The host pass against burn's ops on autodiff-tracked copies (which decline it), its
    /// slow twin: within 3 ulps (the products of two roundings and an `exp` an ulp apart;
    /// plus 1e-35 where `exp(−|g|)` underflows, 0 in em-core's and subnormal in libm's),
    /// over the range where `exp` matters, its ends, ±0, ±∞ and NaN, in a shape that spans
    /// several chunks with a ragged end.
    #[test]
    fn swiglu_matches_burn_ops() {
        let device = Device::flex();
        let [batch, seq, width] = [2, 3, 4_865];
        let n = batch * seq * width;
        let mut g: Vec<f32> = (0..n).map(|i| (i as f32 / n as f32 - 0.5) * 60.0).collect();
        g[..8].copy_from_slice(&[
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -100.0,
            100.0,
            -87.5,
        ]);
        let u: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0)
            .collect();
        let t = |v: &[f32]| {
            Tensor::<3>::from_data(TensorData::new(v.to_vec(), [batch, seq, width]), &device)
        };
        let (gate, up) = (t(&g), t(&u));
        assert!(em_core::fused::host_rows(&gate.clone().reshape([n / width, width])).is_some());
        let fused = host(swiglu(gate.clone(), up.clone()));
        let slow = host(swiglu(gate.autodiff(), up.autodiff()));
        for (i, (&a, &b)) in fused.iter().zip(&slow).enumerate() {
            let ok = if b.is_nan() {
                a.is_nan()
            } else {
                a == b || (a - b).abs() <= 3.0 * f32::EPSILON * b.abs() + 1e-35
            };
            assert!(ok, "entry {i}: silu({}) · {} = {a} vs {b}", g[i], u[i]);
        }
    }

    /// 16-bit projections on flex keep HF's `[out, in]` storage under burn's `[in, out]` view
    /// (`build`), f32 ones are stored `[in, out]`; either way `project` takes the CPU fast path
    /// for a decode row, and for a prefill-sized block with 16-bit weights (a declined view
    /// would fall back to burn's op, right but slow), and its result is burn's `Linear` on the
    /// same weights widened to f32, the slow twin, up to f32 rounding.
    #[test]
    fn projections_take_the_fast_path_in_their_stored_layout() {
        let device = Device::flex();
        let config = crate::testing::tiny_config(crate::testing::Tiny::Qwen2Untied).unwrap();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let model = config.init(&device, dtype, 3).unwrap();
            let layer = &model.model.layers[0];
            for linear in [&layer.self_attn.q_proj, &layer.mlp.down_proj] {
                let weight = linear.weight.val();
                let stored = if dtype == DType::F32 {
                    Layout::KN
                } else {
                    Layout::NK
                };
                assert_eq!(
                    kernels::stored_layout(&weight, Layout::KN),
                    Some(stored),
                    "{dtype:?}"
                );
                let [d_in, _] = weight.dims();
                let twin = Linear {
                    weight: Param::from_tensor(weight.clone().cast(DType::F32)),
                    bias: linear
                        .bias
                        .as_ref()
                        .map(|b| Param::from_tensor(b.val().cast(DType::F32))),
                };
                for rows in [1, 12] {
                    let x =
                        crate::testing::normal_tensor::<3>([1, rows, d_in], rows as u64, &device);
                    let bias = linear.bias.as_ref().map(|b| b.val());
                    let fast = kernels::project(&x, &weight, Layout::KN, bias.as_ref());
                    if dtype == DType::F32 && rows > kernels::MAX_ROWS {
                        // f32 prefill is burn's matmul on the contiguous weight.
                        assert!(fast.is_none(), "f32 prefill takes burn's matmul");
                        continue;
                    }
                    let fast =
                        fast.unwrap_or_else(|| panic!("{dtype:?} {rows} rows: fast path declined"));
                    let slow = host(twin.forward(x));
                    let fast = host(fast);
                    let scale = slow.iter().fold(1f32, |m, v| m.max(v.abs()));
                    for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-5 * scale,
                            "{dtype:?} {rows} rows at {i}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    /// The norm's host pass against its burn ops (`forward_ops`, the slow twin), for f32 and
    /// f16 weights, one decode row and a prefill-sized batch that takes the parallel split:
    /// within a few ulps (only the order of the sum of squares differs).
    #[test]
    fn rms_norm_host_matches_burn_ops() {
        let device = Device::flex();
        let width = 896;
        let normal = crate::testing::normal_tensor::<3>;
        let weight = normal([width, 1, 1], 5, &device).reshape([width]);
        for dtype in [DType::F32, DType::F16] {
            let norm = RmsNorm {
                weight: Param::from_tensor(weight.clone().cast(dtype)),
                eps: 1e-6,
            };
            for [batch, seq] in [[1, 1], [2, 40]] {
                let x = normal([batch, seq, width], (batch * seq) as u64, &device);
                let fast = norm
                    .forward_host(&x)
                    .expect("plain f32 flex tensors take the host pass");
                let (fast, slow) = (host(fast), host(norm.forward_ops(x.clone())));
                assert_eq!(host(norm.forward(x)), fast);
                for (i, (&a, &b)) in fast.iter().zip(&slow).enumerate() {
                    assert!(
                        (a - b).abs() <= 8.0 * f32::EPSILON * b.abs().max(1e-3),
                        "{dtype:?} [{batch}, {seq}] entry {i}: {a} vs {b}"
                    );
                }
            }
        }
        let x = normal([1, 1, width], 6, &device);
        assert!(
            RmsNorm {
                weight: Param::from_tensor(weight.clone()),
                eps: 1e-6
            }
            .forward_host(&x.clone().cast(DType::F64))
            .is_none()
        );
    }
}
