//! Sampling from `[batch, vocab]` logits on the device: greedy, temperature, top-k, top-p,
//! min-p and repetition penalty, with a seeded draw per row.
//!
//! Order of operations (Hugging Face's): repetition penalty → temperature → top-k → top-p →
//! min-p → draw. Every filter is a per-row threshold on the tempered log-probabilities, so the
//! kept set is always "every token at least as likely as the cut-off":
//! - **top-k**: the cut-off is the k-th largest log-prob (tokens tied with it are all kept);
//! - **top-p**: the smallest set of most likely tokens whose mass reaches `top_p` of the mass
//!   kept so far (ties at the boundary all kept);
//! - **min-p**: tokens with `p ≥ min_p · max p`.
//!
//! No full-vocabulary sort or cumsum is used (both are O(V²) per row on CubeCL backends, and an
//! f32 cumsum over 151,936 entries ends near 0.9998 instead of 1): the top-k and top-p cut-offs
//! are **bisected** per row on the log-prob axis, `[-104, 0]` (below `e^-104` an f32 probability
//! is 0), 40 halvings, i.e. to 1e-10 nats — finer than the f32 spacing of any log-prob above
//! 1e-3 in magnitude, so the kept set is the exact one; each halving is one masked count or one
//! masked blocked sum ([`em_core::sum_last`]) over the vocabulary (the top-k count over the
//! entries of the k blocks of `√V` entries with the largest maxima only, which gives the same
//! cut-off: see `top_k_candidates`; a top-p search after top-k sums over those candidates too,
//! with the same result: see `TopKSearch::top_p_cutoff`). The top-p mass is compared
//! relative to the kept total, so the f32 normalisation error of the softmax cancels, and on
//! the smaller side (the tail mass for `top_p > ½`), so its rounding error is relative to
//! `min(top_p, 1 − top_p)`: at `top_p = 0.999` over 151,936 tokens the decision is exact to
//! ~1e-10 of the mass, well below any boundary token's own probability.
//!
//! The **draw** is an inverse-CDF search in vocabulary order with one uniform number per row
//! from the row's own seeded ChaCha generator on the host: the token is the index where the
//! prefix mass of the kept distribution passes `u · total`, again bisected on the device, in
//! two levels (blocks of `√V` entries, then the entries of one block: one pass over the
//! vocabulary and `log2 V` masked sums over `√V` entries). Only `[batch]` values cross to the
//! host, no backend RNG state is touched, and the same seed gives the same tokens on the same backend (and, up to rounding at
//! a CDF boundary, on every backend).
//!
//! On the CPU (plain f32 logits on flex), draws and [`Sampling::kept`] take a host twin instead
//! (`host_draw.rs`): a few passes per row on rayon's threads, the top-k and top-p cut-offs
//! from a histogram of the log-probs and a sort of one bucket, and the same search over chunk
//! sums, with nothing of the vocabulary's size allocated but a penalised row.

use burn::tensor::{Bool, DType, Device, FloatDType, IndexingUpdateOp, Int, Tensor, TensorData};
use em_core::rng::{Rng, mix, rng};
use em_models::GenerationConfig;
use rand::RngExt;

use crate::em_inf::compute_rows;
use crate::error::{InferError, Result};
use crate::host_draw::Settings;
use crate::processor::Processed;

/// The smallest log-prob the filters resolve: `exp(-104)` is below the smallest f32 denormal,
/// so every token under it has probability exactly 0 after the softmax.
pub(crate) const LOG_PROB_FLOOR: f64 = -104.0;
/// Halvings of `[LOG_PROB_FLOOR, 0]` for the top-k and top-p cut-offs (104 / 2^40 ≈ 1e-10).
const CUTOFF_HALVINGS: usize = 40;

/// How the next token is chosen from (processed) logits. Defaults: plain multinomial sampling
/// (temperature 1, no filters, no penalty).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Sampling {
    /// Divides the logits; 0 means greedy (argmax).
    pub temperature: f64,
    /// Keep the `top_k` most likely tokens; 0 disables.
    pub top_k: usize,
    /// Keep the smallest most-likely set with this much mass; 1 disables.
    pub top_p: f64,
    /// Keep tokens with `p ≥ min_p · max p`; 0 disables.
    pub min_p: f64,
    /// Hugging Face's repetition penalty on every token already in the prompt or the output:
    /// positive logits are divided by it, negative ones multiplied; 1 disables.
    pub repetition_penalty: f64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
        }
    }
}

impl Sampling {
    /// Greedy decoding (temperature 0).
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Multinomial sampling at `temperature`, no filters.
    pub fn with_temperature(temperature: f64) -> Self {
        Self {
            temperature,
            ..Self::default()
        }
    }

    /// Whether this is greedy decoding.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks every field: temperature finite and ≥ 0; top_p in (0, 1]; min_p in [0, 1];
    /// repetition_penalty finite and > 0.
    ///
    /// # Errors
    /// [`InferError::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let fail = InferError::invalid::<()>;
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return fail(
                "temperature",
                self.temperature,
                "must be finite and ≥ 0 (0 = greedy)",
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return fail("top_p", self.top_p, "must be in (0, 1]");
        }
        if !(self.min_p >= 0.0 && self.min_p <= 1.0) {
            return fail("min_p", self.min_p, "must be in [0, 1]");
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return fail(
                "repetition_penalty",
                self.repetition_penalty,
                "must be finite and > 0",
            );
        }
        Ok(())
    }

    /// The sampling defaults a checkpoint ships in `generation_config.json`, as em-models
    /// parsed it ([`em_models::Pretrained::generation`], [`GenerationConfig::from_file`]):
    /// `do_sample`, `temperature`, `top_k`, `top_p`, `min_p`, `repetition_penalty`; absent keys
    /// keep [`Sampling::default`], `do_sample: false` means greedy. No file (`None`) gives the
    /// defaults.
    ///
    /// # Errors
    /// [`InferError::InvalidConfig`] for values outside their domain.
    pub fn from_generation_config(config: Option<&GenerationConfig>) -> Result<Self> {
        let mut sampling = Self::default();
        let Some(config) = config else {
            return Ok(sampling);
        };
        if let Some(t) = config.temperature {
            sampling.temperature = t;
        }
        if let Some(k) = config.top_k {
            sampling.top_k = k;
        }
        if let Some(p) = config.top_p {
            sampling.top_p = p;
        }
        if let Some(p) = config.min_p {
            sampling.min_p = p;
        }
        if let Some(r) = config.repetition_penalty {
            sampling.repetition_penalty = r;
        }
        if config.do_sample == Some(false) {
            sampling.temperature = 0.0;
        }
        sampling.validate()?;
        Ok(sampling)
    }
}

/// Tempered log-probs and the kept, unnormalised weights of one batch of logits.
struct Filtered {
    /// `log softmax(z / T)` (T = 1 for greedy), `[batch, vocab]`.
    log_p: Tensor<2>,
    /// `softmax(z / T)` where kept, 0 elsewhere.
    weights: Tensor<2>,
}

impl Sampling {
    /// The tokens temperature, top-k, top-p and min-p keep, per row of `logits`
    /// (`[batch, vocab]`, no repetition penalty applied): true = may be sampled.
    ///
    /// # Errors
    /// [`InferError::InvalidConfig`], [`InferError::EmptyVocabulary`].
    pub fn kept(&self, logits: Tensor<2>) -> Result<Tensor<2, Bool>> {
        self.validate()?;
        let logits = to_f32(logits)?;
        if let Some(rows) = em_core::fused::host_rows(&logits) {
            let settings = Settings::of(self, rows.width(), None);
            return Ok(em_core::fused::with_pool_awake(|| {
                crate::host_draw::kept(&rows, &settings, &logits.device())
            }));
        }
        Ok(self.filter(logits).weights.greater_elem(0.0))
    }

    fn filter(&self, mut z: Tensor<2>) -> Filtered {
        let [batch, vocab] = z.dims();
        if !self.is_greedy() && self.temperature != 1.0 {
            z = z / self.temperature;
        }
        let parts = em_core::softmax_entropy(z);
        let log_p = parts.log_probs;
        let mut keep: Option<Tensor<2, Bool>> = None;
        // The top-k candidates (log-probs, weights) and cut-off, when the candidates are fewer
        // than the row.
        let mut top_k: Option<((Tensor<2>, Tensor<2>), Tensor<2>)> = None;
        if self.top_k > 0 && self.top_k < vocab {
            let k = self.top_k as f64;
            // The cut-off is searched among the candidates (see `top_k_candidates`), the same
            // value as over the whole row; the kept set is then taken over the whole row.
            let candidates = top_k_candidates(&log_p, &parts.probs, self.top_k);
            let searched = candidates
                .as_ref()
                .map_or(log_p.clone(), |(log_p, _)| log_p.clone());
            let width = searched.dims()[1];
            let cut = bisect_cutoff(&log_p, |mid| {
                searched
                    .clone()
                    .greater_equal(mid.expand([batch, width]))
                    .float()
                    .sum_dim(1)
                    .greater_equal_elem(k)
            });
            keep = Some(
                log_p
                    .clone()
                    .greater_equal(cut.clone().expand([batch, vocab])),
            );
            top_k = candidates.map(|c| (c, cut));
        }
        if self.top_p < 1.0 {
            let weights = masked(parts.probs.clone(), keep.clone());
            let total = em_core::sum_last(weights.clone());
            // Compare the smaller side: the head mass `Σ_{log p ≥ t} w ≥ top_p·T` for
            // top_p ≤ ½, else the equivalent tail `Σ_{log p < t} w ≤ (1 − top_p)·T`, so the
            // f32 rounding of the sum is relative to min(top_p, 1 − top_p), not to 1.
            let head = self.top_p <= 0.5;
            let bound = total.clone() * if head { self.top_p } else { 1.0 - self.top_p };
            let cut = match (&top_k, &keep) {
                // After top-k, the search runs over its candidates (`TopKSearch::top_p_cutoff`).
                (Some(((candidates, candidate_probs), top_k_cut)), Some(keep)) => {
                    let kept = keep.clone().float().sum_dim(1);
                    let search = TopKSearch {
                        candidates,
                        candidate_probs,
                        cut: top_k_cut,
                        kept,
                        total,
                    };
                    search.top_p_cutoff(&log_p, head, &bound)
                }
                _ => bisect_cutoff(&log_p, |mid| {
                    let mid = mid.expand([batch, vocab]);
                    if head {
                        let above = log_p.clone().greater_equal(mid);
                        em_core::sum_last(masked(weights.clone(), Some(above)))
                            .greater_equal(bound.clone())
                    } else {
                        let below = log_p.clone().lower(mid);
                        em_core::sum_last(masked(weights.clone(), Some(below)))
                            .lower_equal(bound.clone())
                    }
                }),
            };
            let top_p = log_p.clone().greater_equal(cut.expand([batch, vocab]));
            keep = Some(and(keep, top_p));
        }
        if self.min_p > 0.0 {
            let floor = log_p.clone().max_dim(1) + self.min_p.ln();
            let min_p = log_p.clone().greater_equal(floor.expand([batch, vocab]));
            keep = Some(and(keep, min_p));
        }
        Filtered {
            weights: masked(parts.probs, keep),
            log_p,
        }
    }
}

/// One sampling step's result on the device, `[batch, 1]` each, f32: read them back together
/// with whatever else the caller needs from the same step (one host sync per step).
#[derive(Debug, Clone)]
pub struct Draw {
    /// The chosen token ids, as exact f32 integers.
    pub tokens: Tensor<2>,
    /// Log-prob of each chosen token under the distribution it was drawn from.
    pub log_probs: Tensor<2>,
    /// Entropy (nats) of that distribution.
    pub entropies: Tensor<2>,
}

impl Draw {
    /// Reads the draw back to the host in one sync, together with an optional extra `[batch, 1]`
    /// column computed in the same step (the generator's model entropy): one typed
    /// [`DrawnRow`] per row. The only place a step's values are read back and split.
    ///
    /// The draw's columns are f32; an f64 extra column (an f64 model's entropy) widens them to
    /// f64 for the one read-back rather than being rounded to f32, and any other dtype is
    /// cast to f32.
    ///
    /// # Errors
    /// [`InferError::Tensor`] if the read-back fails.
    pub fn read_back(self, extra: Option<Tensor<2>>) -> Result<Vec<DrawnRow>> {
        let mut columns = vec![self.tokens, self.log_probs, self.entropies];
        let width = columns.len() + usize::from(extra.is_some());
        columns.extend(extra);
        let wide = columns.iter().any(|c| c.dtype() == DType::F64);
        let dtype = if wide {
            FloatDType::F64
        } else {
            FloatDType::F32
        };
        let columns = columns.into_iter().map(|c| c.cast(dtype)).collect();
        let values = crate::em_inf::host_f64(Tensor::cat(columns, 1))?;
        Ok(values
            .chunks_exact(width)
            .map(|v| DrawnRow {
                token: v[0] as u32,
                log_prob: v[1],
                entropy: v[2],
                extra: v.get(3).copied(),
            })
            .collect())
    }
}

/// One row of a [`Draw`] on the host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DrawnRow {
    /// The chosen token.
    pub token: u32,
    /// Its log-prob under the distribution it was drawn from.
    pub log_prob: f64,
    /// The entropy of that distribution.
    pub entropy: f64,
    /// The extra column passed to [`Draw::read_back`], if any.
    pub extra: Option<f64>,
}

/// The host values of a [`Draw`].
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    /// Chosen token per row.
    pub tokens: Vec<u32>,
    /// Their log-probs.
    pub log_probs: Vec<f64>,
    /// The entropies of the distributions they were drawn from.
    pub entropies: Vec<f64>,
}

/// A seeded sampler for one batch: one random stream per row, and (with a repetition penalty)
/// the set of tokens each row has seen.
///
/// What the log-prob and entropy of a [`Draw`] describe: the kept, renormalised distribution at
/// the configured temperature; for greedy decoding, the kept distribution at temperature 1.
#[derive(Debug)]
pub struct Sampler {
    sampling: Sampling,
    rngs: Vec<Rng>,
    /// `[batch, vocab]`, 1 where a token was seen (only with a repetition penalty).
    seen: Option<Tensor<2>>,
}

impl Sampler {
    /// A sampler for `batch` rows. Row `r`'s stream depends only on `(seed, r)`.
    ///
    /// # Errors
    /// [`InferError::InvalidConfig`] for an invalid [`Sampling`].
    pub fn new(sampling: Sampling, seed: u64, batch: usize) -> Result<Self> {
        sampling.validate()?;
        Ok(Self {
            sampling,
            rngs: (0..batch).map(|row| rng(mix(seed, row as u64))).collect(),
            seen: None,
        })
    }

    /// A sampler whose row `r` draws from a stream seeded by `seeds[r]` alone.
    ///
    /// # Errors
    /// [`InferError::InvalidConfig`] for an invalid [`Sampling`].
    pub fn with_row_seeds(sampling: Sampling, seeds: &[u64]) -> Result<Self> {
        sampling.validate()?;
        Ok(Self {
            sampling,
            rngs: seeds.iter().map(|&s| rng(mix(s, 0))).collect(),
            seen: None,
        })
    }

    /// The sampling configuration.
    pub fn sampling(&self) -> &Sampling {
        &self.sampling
    }

    /// Rows currently sampled for.
    pub fn batch(&self) -> usize {
        self.rngs.len()
    }

    /// Records each row's prompt for the repetition penalty (no-op without one).
    ///
    /// # Errors
    /// [`InferError::Batch`] if `prompts` does not have one entry per row;
    /// [`InferError::TokenOutOfVocabulary`] for an id ≥ `vocab`.
    pub fn observe_prompts(
        &mut self,
        prompts: &[Vec<u32>],
        vocab: usize,
        device: &Device,
    ) -> Result<()> {
        if self.sampling.repetition_penalty == 1.0 {
            return Ok(());
        }
        if prompts.len() != self.batch() {
            return Err(InferError::Batch(format!(
                "{} prompts for a sampler of {} rows",
                prompts.len(),
                self.batch()
            )));
        }
        let mut seen = vec![0f32; prompts.len() * vocab];
        for (row, prompt) in prompts.iter().enumerate() {
            for &id in prompt {
                if id as usize >= vocab {
                    return Err(InferError::TokenOutOfVocabulary { id, vocab });
                }
                seen[row * vocab + id as usize] = 1.0;
            }
        }
        self.seen = Some(Tensor::from_data(
            TensorData::new(seen, [prompts.len(), vocab]),
            device,
        ));
        Ok(())
    }

    /// Keeps only the listed rows (their random streams and seen sets), in that order.
    ///
    /// # Errors
    /// [`InferError::Batch`] for a row outside the batch or listed twice.
    pub fn retain_rows(&mut self, rows: &[usize]) -> Result<()> {
        // Checked before anything changes: a refused call leaves the sampler as it was.
        let mut listed = vec![false; self.batch()];
        for &row in rows {
            match listed.get_mut(row) {
                Some(seen) if !*seen => *seen = true,
                _ => {
                    return Err(InferError::Batch(format!(
                        "cannot retain rows {rows:?} of a batch of {}",
                        self.batch()
                    )));
                }
            }
        }
        let mut taken: Vec<Option<Rng>> = self.rngs.drain(..).map(Some).collect();
        self.rngs = rows
            .iter()
            .filter_map(|&row| taken.get_mut(row).and_then(Option::take))
            .collect();
        if let Some(seen) = self.seen.take() {
            let index: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
            let device = seen.device();
            let index = Tensor::<1, Int>::from_data(TensorData::new(index, [rows.len()]), &device);
            self.seen = Some(seen.select(0, index));
        }
        Ok(())
    }

    /// Chooses one token per row of `logits` (`[batch, vocab]`) on the device; see the module
    /// docs. Draws one uniform number per row from the host streams (also for greedy, so that
    /// switching strategy mid-way keeps the streams aligned).
    ///
    /// # Errors
    /// [`InferError::Batch`] if the batch differs from the sampler's; [`InferError::EmptyVocabulary`].
    pub fn draw(&mut self, logits: Tensor<2>) -> Result<Draw> {
        let logits = to_f32(logits)?;
        let batch = logits.dims()[0];
        if batch != self.batch() {
            return Err(InferError::Batch(format!(
                "logits have {batch} rows, the sampler {}",
                self.batch()
            )));
        }
        if let Some(seen) = &self.seen
            && seen.dims() != logits.dims()
        {
            return Err(InferError::Batch(format!(
                "logits are {:?}, the prompts were observed over {:?}",
                logits.dims(),
                seen.dims()
            )));
        }
        let device = logits.device();
        // 24 random bits: u ∈ [0, 1 − 2⁻²⁴], exact in f32.
        let uniforms: Vec<f32> = self
            .rngs
            .iter_mut()
            .map(|rng| (rng.random::<u32>() >> 8) as f32 / (1u32 << 24) as f32)
            .collect();
        // Plain f32 logits on flex (and a seen set on the host, with a penalty) take the host
        // twin.
        let seen = match &self.seen {
            None => Some(None),
            Some(seen) => em_core::fused::host_rows(seen).map(Some),
        };
        if let (Some(rows), Some(seen)) = (em_core::fused::host_rows(&logits), seen) {
            let settings = Settings::of(&self.sampling, rows.width(), seen.as_ref());
            // Its passes on rayon's workers, which keep polling between them.
            return Ok(em_core::fused::with_pool_awake(|| {
                crate::host_draw::draw(&rows, &settings, &uniforms, &device)
            }));
        }
        let mut z = logits;
        if let Some(seen) = &self.seen {
            z = repetition_penalty(z, seen.clone(), self.sampling.repetition_penalty);
        }
        let Filtered { log_p, weights } = self.sampling.filter(z);
        let s = &self.sampling;
        // H of the kept, renormalised distribution, and its normaliser.
        let em_core::KeptEntropy {
            total,
            log_total,
            entropy: entropies,
        } = em_core::kept_entropy(weights.clone(), log_p.clone());
        let tokens = if s.is_greedy() {
            weights.clone().argmax(1)
        } else {
            let u = Tensor::<1>::from_data(TensorData::new(uniforms, [batch]), &device)
                .unsqueeze_dim::<2>(1);
            inverse_cdf(weights.clone(), u * total)
        };
        let log_probs = log_p.gather(1, tokens.clone()) - log_total;
        Ok(Draw {
            tokens: tokens.float(),
            log_probs,
            entropies,
        })
    }

    /// [`Sampler::draw`] and the read-back of its values.
    ///
    /// # Errors
    /// As [`Sampler::draw`]; [`InferError::Tensor`] if the read-back fails.
    pub fn sample(&mut self, logits: Tensor<2>) -> Result<Sampled> {
        let rows = self.draw(logits)?.read_back(None)?;
        Ok(Sampled {
            tokens: rows.iter().map(|r| r.token).collect(),
            log_probs: rows.iter().map(|r| r.log_prob).collect(),
            entropies: rows.iter().map(|r| r.entropy).collect(),
        })
    }

    /// One decoding step's draw as the [`Generator`](crate::Generator) makes it: the draw from
    /// the processed logits, [`Self::observe`] of its tokens, and one read-back with the entropy
    /// of the model's own logits `model_logits` beside it ([`DrawnRow::extra`]): taken from the
    /// processors when they report one value per row ([`LogitsProcessor::process_step`]),
    /// computed here otherwise. When the processors report it, `model_logits` is read only for
    /// its row count and backend (the generator then passes the processed logits, having
    /// handed the model's over). On the CPU (plain f32 flex logits) its few parallel passes over
    /// the vocabulary (the model's entropy unless reported, the softmax, the kept entropy) run
    /// on one of rayon's workers with the others polling
    /// ([`em_core::fused::with_pool_awake`]): from the caller's thread each pass would wake the
    /// pool again (0.6 ms of a 33 ms f16 decode step of the 0.5B model went to them, mostly
    /// waiting; see #14's note).
    ///
    /// [`LogitsProcessor::process_step`]: crate::LogitsProcessor::process_step
    ///
    /// # Errors
    /// As [`Self::draw`] and [`Draw::read_back`].
    pub fn draw_step(
        &mut self,
        model_logits: Tensor<2>,
        processed: Processed,
    ) -> Result<Vec<DrawnRow>> {
        let on_cpu = em_core::fused::host_rows(&model_logits).is_some();
        let rows = model_logits.dims()[0];
        let known = processed.input_entropy.filter(|h| h.len() == rows);
        let step = move || {
            let model_entropy = known
                .is_none()
                .then(|| em_core::entropy(model_logits).unsqueeze_dim::<2>(1));
            let draw = self.draw(processed.logits)?;
            self.observe(draw.tokens.clone());
            let mut drawn = draw.read_back(model_entropy)?;
            for (row, h) in drawn.iter_mut().zip(known.into_iter().flatten()) {
                row.extra = Some(h);
            }
            Ok(drawn)
        };
        if on_cpu {
            em_core::fused::with_pool_awake(step)
        } else {
            step()
        }
    }

    /// Records the tokens just chosen (`[batch, 1]` ids as f32, e.g. [`Draw::tokens`]) for the
    /// repetition penalty; no-op without one.
    pub fn observe(&mut self, tokens: Tensor<2>) {
        if let Some(seen) = self.seen.take() {
            let ones = tokens.ones_like();
            self.seen = Some(seen.scatter(1, tokens.int(), ones, IndexingUpdateOp::Assign));
        }
    }
}

/// Sampling computes in f32 whatever the logits' dtype (f64 logits gain nothing at the
/// resolution of a draw).
fn to_f32(logits: Tensor<2>) -> Result<Tensor<2>> {
    Ok(compute_rows(logits)?.cast(FloatDType::F32))
}

/// `values` with the entries outside `keep` set to 0.
fn masked(values: Tensor<2>, keep: Option<Tensor<2, Bool>>) -> Tensor<2> {
    match keep {
        Some(keep) => values.mask_fill(keep.bool_not(), 0.0),
        None => values,
    }
}

fn and(a: Option<Tensor<2, Bool>>, b: Tensor<2, Bool>) -> Tensor<2, Bool> {
    match a {
        Some(a) => a.bool_and(b),
        None => b,
    }
}

/// HF's repetition penalty on the entries where `seen` is 1.
fn repetition_penalty(z: Tensor<2>, seen: Tensor<2>, penalty: f64) -> Tensor<2> {
    let positive = z.clone().greater_elem(0.0);
    let penalised = (z.clone() * penalty).mask_where(positive, z.clone() / penalty);
    z.mask_where(seen.greater_elem(0.5), penalised)
}

/// `(blocks, block)`: `⌈√V⌉` entries a block, as many blocks as cover `vocab`.
fn square_blocks(vocab: usize) -> (usize, usize) {
    let block = vocab.isqrt().max(1);
    let block = if block * block < vocab {
        block + 1
    } else {
        block
    };
    (vocab.div_ceil(block), block)
}

/// `[batch, vocab]` as `[batch, blocks, block]` ([`square_blocks`]), the last block padded with
/// `pad`.
fn in_blocks(t: Tensor<2>, pad: f32) -> Tensor<3> {
    let [batch, vocab] = t.dims();
    let (blocks, block) = square_blocks(vocab);
    let t = if blocks * block > vocab {
        let padding = Tensor::<2>::full([batch, blocks * block - vocab], pad, &t.device());
        Tensor::cat(vec![t, padding], 1)
    } else {
        t
    };
    t.reshape([batch, blocks, block])
}

/// Per row, the entries of the `k` blocks (of `⌈√V⌉` entries, the last padded with `f32::MIN`)
/// with the largest maxima, `[batch, k·⌈√V⌉]`; `None` when that would not be much smaller than
/// the row.
///
/// The top-k cut-off (the k-th largest log-prob `c`) and every count the bisection asks for
/// are the same over these candidates as over the row. With `L` the k-th largest block maximum,
/// the k chosen blocks each hold an entry ≥ `L`, so `c ≥ L`; every block whose maximum exceeds
/// `L` is chosen, so every entry above `L` is a candidate. Hence for a threshold `t > L` the
/// entries ≥ `t` are the same in both, and for `t ≤ L` both count at least `k`: the predicate
/// "at least k entries ≥ t" agrees for every `t`, and so does the bisection. The search then
/// costs a pass over `k·√V` entries per halving instead of `V` (7,800 instead of 151,936 for
/// Qwen2.5 at k = 20).
///
/// Returned with the candidates' weights, the same entries of `probs` (padding 0), so that a
/// sum over candidates adds exactly the row's f32 weights.
fn top_k_candidates(
    log_p: &Tensor<2>,
    probs: &Tensor<2>,
    k: usize,
) -> Option<(Tensor<2>, Tensor<2>)> {
    let [batch, vocab] = log_p.dims();
    let (blocks, block) = square_blocks(vocab);
    if 4 * k > blocks {
        return None;
    }
    let grid = in_blocks(log_p.clone(), f32::MIN);
    let maxima = grid.clone().max_dim(2).reshape([batch, blocks]);
    let (_, order) = maxima.sort_descending_with_indices(1);
    let chosen = order
        .slice([0..batch, 0..k])
        .reshape([batch, k, 1])
        .expand([batch, k, block]);
    let candidates = grid.gather(1, chosen.clone()).reshape([batch, k * block]);
    // The same entries of `probs`, gathered from the row itself (a padded copy of the whole
    // row cost 15-20% of a top-k + top-p draw at batch 8): entry `b·block + j` of chosen block
    // `b`, weight 0 where that is past the row's end (padding).
    let offsets = Tensor::<1, Int>::arange(0..block as i64, &log_p.device())
        .reshape([1, 1, block])
        .expand([batch, k, block]);
    let entries = (chosen * block as i64 + offsets).reshape([batch, k * block]);
    let padding = entries.clone().greater_equal_elem(vocab as i64);
    let weights = probs
        .clone()
        .gather(1, entries.clamp_max(vocab as i64 - 1))
        .mask_fill(padding, 0.0);
    Some((candidates, weights))
}

/// The top-k step's result, for a top-p search after it over the candidates only.
struct TopKSearch<'a> {
    /// `[batch, W]` log-probs of the top-k candidates ([`top_k_candidates`]).
    candidates: &'a Tensor<2>,
    /// `[batch, W]` their weights: the row's probabilities at the same entries.
    candidate_probs: &'a Tensor<2>,
    /// `[batch, 1]` top-k cut-off ([`bisect_cutoff`]'s result).
    cut: &'a Tensor<2>,
    /// `[batch, 1]` entries top-k keeps over the whole row.
    kept: Tensor<2>,
    /// `[batch, 1]` their total weight over the whole row.
    total: Tensor<2>,
}

impl TopKSearch<'_> {
    /// The top-p cut-off over the top-k kept set, searched over the candidates: the same
    /// halvings as over the row, each a pass over `W` entries instead of `V`.
    ///
    /// Top-k keeps the entries ≥ its cut-off `c`. A kept entry outside the candidates lies in
    /// `[c, L]` (`L` the k-th largest block maximum, `L ≤ v_k`, the k-th largest value) and so
    /// in `[c, c⁺)`, the last interval of top-k's bisection (`c⁺ > v_k`: fewer than k entries
    /// reach it). Every threshold the top-p bisection tries is a split point of the same
    /// interval tree at depth ≤ [`CUTOFF_HALVINGS`], so never inside that last interval: it is
    /// either ≤ `c`, where all of those outside entries are at or above it, or ≥ `c⁺`, where
    /// none is. Their weight (`extra`, the whole row's kept total minus the candidates',
    /// taken only when the counts say some exist: ties at the cut-off across blocks) is
    /// therefore added whole or not at all, and the head and tail sums are the row's (up to
    /// the order of the f32 additions, as for any blocked sum).
    fn top_p_cutoff(&self, log_p: &Tensor<2>, head: bool, bound: &Tensor<2>) -> Tensor<2> {
        let [batch, width] = self.candidates.dims();
        let kept = self
            .candidates
            .clone()
            .greater_equal(self.cut.clone().expand([batch, width]));
        // The same f32 weights as the row's (padding: 0).
        let weights = masked(self.candidate_probs.clone(), Some(kept.clone()));
        let outside = self.kept.clone() - kept.float().sum_dim(1);
        let extra = (self.total.clone() - em_core::sum_last(weights.clone()))
            .mask_fill(outside.lower_equal_elem(0.5), 0.0);
        bisect_cutoff(log_p, |mid| {
            let at_or_below_cut = mid.clone().lower_equal(self.cut.clone());
            let mid = mid.expand([batch, width]);
            if head {
                let above = self.candidates.clone().greater_equal(mid);
                let ties = extra.clone().mask_fill(at_or_below_cut.bool_not(), 0.0);
                (em_core::sum_last(masked(weights.clone(), Some(above))) + ties)
                    .greater_equal(bound.clone())
            } else {
                let below = self.candidates.clone().lower(mid);
                let ties = extra.clone().mask_fill(at_or_below_cut, 0.0);
                (em_core::sum_last(masked(weights.clone(), Some(below))) + ties)
                    .lower_equal(bound.clone())
            }
        })
    }
}

/// Per row, the largest log-prob cut-off `t ∈ [LOG_PROB_FLOOR, 0]` (to 1e-10) at which
/// `enough(t)` still holds; `enough` must be monotone (true below some point, false above).
/// If it fails even at the floor, the floor is returned (keep every token with p > 0).
fn bisect_cutoff(log_p: &Tensor<2>, enough: impl Fn(Tensor<2>) -> Tensor<2, Bool>) -> Tensor<2> {
    let batch = log_p.dims()[0];
    let device = log_p.device();
    let mut lo = Tensor::<2>::full([batch, 1], LOG_PROB_FLOOR, &device);
    // Strictly above every log-prob (≤ 0 up to rounding), where nothing is kept.
    let mut hi = Tensor::<2>::full([batch, 1], 1e-3, &device);
    for _ in 0..CUTOFF_HALVINGS {
        let mid = (lo.clone() + hi.clone()) * 0.5;
        let ok = enough(mid.clone());
        lo = lo.mask_where(ok.clone(), mid.clone());
        hi = mid.mask_where(ok, hi);
    }
    lo
}

/// Per row, the first index `i` whose prefix mass `Σ_{j ≤ i} w_j` exceeds `target` (`[batch,
/// 1]`, below the row total), in two levels: the vocabulary as `⌈√V⌉` blocks of `⌈√V⌉` entries
/// (zero-padded), the block found by bisection over the block sums, then the entry by
/// bisection inside that block (its entries gathered per row). That is one pass over the
/// vocabulary (the block sums) and `2·⌈log2 √V⌉` masked sums over `√V` entries, where a
/// bisection over the whole vocabulary made `⌈log2 V⌉` full passes (43 ms of a 215 ms batch-8
/// decode step of the 0.5B model on the CPU). Falls back to the row's argmax if rounding at a
/// boundary lands on a zero-weight entry (padding included).
fn inverse_cdf(weights: Tensor<2>, target: Tensor<2>) -> Tensor<2, Int> {
    let [batch, vocab] = weights.dims();
    let (blocks, block) = square_blocks(vocab);
    let grid = in_blocks(weights.clone(), 0.0);
    let sums = grid.clone().sum_dim(2).reshape([batch, blocks]);
    let (b, before) = first_passing(sums, target.clone());
    let index = b
        .clone()
        .int()
        .reshape([batch, 1, 1])
        .expand([batch, 1, block]);
    let inner = grid.gather(1, index).reshape([batch, block]);
    let (j, _) = first_passing(inner, target - before);
    let tokens = (b * block as f64 + j).clamp_max((vocab - 1) as f64).int();
    let chosen = weights.clone().gather(1, tokens.clone());
    tokens.mask_where(chosen.lower_equal_elem(0.0), weights.argmax(1))
}

/// Per row of `w: [batch, n]`, the first index whose prefix mass `Σ_{j ≤ i} w_j` exceeds
/// `target` (`[batch, 1]`), as an exact f32 integer, and the mass before it `Σ_{j < i} w_j`:
/// bisection over the index with masked sums, `⌈log2 n⌉` of them. Index `n - 1` when `target`
/// reaches the row total (rounding).
fn first_passing(w: Tensor<2>, target: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
    let [batch, n] = w.dims();
    let device = w.device();
    let index = Tensor::<1, Int>::arange(0..n as i64, &device)
        .float()
        .unsqueeze_dim::<2>(0)
        .expand([batch, n]);
    let prefix = |end: Tensor<2>| {
        let below = index.clone().lower(end.expand([batch, n]));
        em_core::sum_last(w.clone().mask_fill(below.bool_not(), 0.0))
    };
    // Invariant: prefix(lo) ≤ target < prefix(hi), prefix(e) = Σ_{j < e} w_j.
    let mut lo = Tensor::<2>::zeros([batch, 1], &device);
    let mut hi = Tensor::<2>::full([batch, 1], n as f64, &device);
    let halvings = usize::BITS - (n.max(2) - 1).leading_zeros();
    for _ in 0..halvings {
        let mid = ((lo.clone() + hi.clone()) * 0.5).floor();
        let ok = prefix(mid.clone()).lower_equal(target.clone());
        lo = lo.mask_where(ok.clone(), mid.clone());
        hi = mid.mask_where(ok, hi);
    }
    let lo = lo.clamp_max((n - 1) as f64);
    let before = prefix(lo.clone());
    (lo, before)
}
