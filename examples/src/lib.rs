//! Library side of the em examples: each example binary parses its arguments and calls one
//! function here, so the examples' logic is tested with the rest of the workspace.
#![warn(missing_docs)]

pub mod train_args;

use std::fmt::{self, Write as _};

use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use em_core::{entropy, entropy_grad};
use em_infer::{
    EmInfConfig, EmInfProcessor, GenerateConfig, Generation, Generator, InferError,
    LogitsProcessor, ProcessorChain, ProcessorStats, TokenEvent,
};
use em_models::CausalLm;

/// One step of the `entropy` example.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoStep {
    /// The logits before the step.
    pub logits: Vec<f32>,
    /// `softmax(logits)`.
    pub probs: Vec<f32>,
    /// The entropy in nats.
    pub entropy: f32,
    /// The closed-form gradient `−p ⊙ (log p + H)`.
    pub grad: Vec<f32>,
    /// burn's autodiff gradient of the same entropy.
    pub autodiff_grad: Vec<f32>,
}

/// What the `entropy` example prints.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoReport {
    /// The device's description.
    pub device: String,
    /// Every step, then the final state (whose gradient is not applied).
    pub steps: Vec<DemoStep>,
    /// The learning rate used.
    pub learning_rate: f32,
}

/// Errors of the examples' library functions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// No logits were given.
    #[error("at least one logit is needed")]
    NoLogits,
    /// A logit is NaN or infinite.
    #[error("logit {index} is {value}: logits must be finite")]
    NonFinite {
        /// Its position.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// The learning rate is negative or not finite.
    #[error("the learning rate must be finite and ≥ 0, got {0}")]
    LearningRate(f32),
    /// Reading a tensor back failed.
    #[error("reading a tensor back from the device failed: {0:?}")]
    Data(burn::tensor::DataError),
}

fn to_vec<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>, DemoError> {
    tensor
        .into_data()
        .try_into_vec_as::<f32>()
        .map_err(DemoError::Data)
}

/// Computes the entropy of `softmax(logits)`, its gradient (closed form and autodiff), and takes
/// `steps` gradient-descent steps of size `learning_rate` on the logits.
///
/// # Errors
/// Empty or non-finite logits, a negative or non-finite learning rate.
pub fn entropy_demo(
    logits: &[f32],
    learning_rate: f32,
    steps: usize,
    device: &Device,
) -> Result<DemoReport, DemoError> {
    if logits.is_empty() {
        return Err(DemoError::NoLogits);
    }
    if let Some((index, &value)) = logits.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(DemoError::NonFinite { index, value });
    }
    if !(learning_rate.is_finite() && learning_rate >= 0.0) {
        return Err(DemoError::LearningRate(learning_rate));
    }
    let vocab = logits.len();
    let mut z = Tensor::<2>::from_data(TensorData::new(logits.to_vec(), [1, vocab]), device);
    let mut out = Vec::with_capacity(steps + 1);
    for step in 0..=steps {
        let tracked = z.clone().autodiff().require_grad();
        let grads = entropy(tracked.clone()).sum().backward();
        let autodiff_grad = tracked
            .grad(&grads)
            .map(to_vec)
            .transpose()?
            .unwrap_or_default();
        let grad = entropy_grad(z.clone());
        out.push(DemoStep {
            logits: to_vec(z.clone())?,
            probs: to_vec(burn::tensor::activation::softmax(z.clone(), 1))?,
            entropy: to_vec(entropy(z.clone()))?[0],
            grad: to_vec(grad.clone())?,
            autodiff_grad,
        });
        if step < steps {
            z = z - grad * learning_rate;
        }
    }
    Ok(DemoReport {
        device: format!("{device:?}"),
        steps: out,
        learning_rate,
    })
}

fn list(values: &[f32]) -> String {
    let parts: Vec<String> = values.iter().map(|v| format!("{v:+.4}")).collect();
    format!("[{}]", parts.join(", "))
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "device: {}", self.device)?;
        let Some(first) = self.steps.first() else {
            return Ok(());
        };
        let max = (first.logits.len() as f32).ln();
        writeln!(f, "logits z          {}", list(&first.logits))?;
        writeln!(f, "p = softmax(z)    {}", list(&first.probs))?;
        writeln!(
            f,
            "H(p)              {:.6} nats (max ln V = {max:.6})",
            first.entropy
        )?;
        writeln!(f, "dH/dz closed form {}", list(&first.grad))?;
        writeln!(f, "dH/dz autodiff    {}", list(&first.autodiff_grad))?;
        let mut line = String::new();
        for (i, step) in self.steps.iter().enumerate() {
            let _ = write!(
                line,
                "{}step {i}: H = {:.6}",
                if i == 0 { "" } else { "\n" },
                step.entropy
            );
        }
        writeln!(
            f,
            "gradient descent on z, learning rate {}:",
            self.learning_rate
        )?;
        writeln!(f, "{line}")?;
        if let Some(last) = self.steps.last() {
            writeln!(f, "final p           {}", list(&last.probs))?;
        }
        Ok(())
    }
}

/// The device of the backend this build enabled: `cuda` if compiled in, else `wgpu`, else
/// `flex`. The backend is a cargo feature of the binary, never a runtime switch of the library.
pub fn device() -> Device {
    #[cfg(feature = "cuda")]
    return Device::cuda(0);
    #[cfg(all(feature = "wgpu", not(feature = "cuda")))]
    return Device::wgpu(burn::tensor::DeviceKind::DefaultDevice);
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    return Device::flex();
}

/// The name of the backend [`device`] returns.
pub fn backend_name() -> &'static str {
    if cfg!(feature = "cuda") {
        "cuda"
    } else if cfg!(feature = "wgpu") {
        "wgpu"
    } else {
        "flex"
    }
}

/// Loads a checkpoint directory (or, with em-models' `hub` feature, a hub id) on this build's
/// [`device`] with weights in `dtype` (`f32`, `bf16`, `f16` or `f64`; see
/// [`em_models::parse_dtype`]); returns it with the load time in seconds.
///
/// # Errors
/// An unknown dtype, or any loading error (with the directory named).
pub fn load_pretrained(model: &str, dtype: &str) -> anyhow::Result<(em_models::Pretrained, f64)> {
    use anyhow::Context;
    let dtype = em_models::parse_dtype(dtype)?;
    let started = Instant::now();
    let pretrained =
        em_models::from_pretrained(model, &device(), &em_models::LoadOptions { dtype })
            .with_context(|| format!("loading {model}"))?;
    Ok((pretrained, started.elapsed().as_secs_f64()))
}

/// One generation run of [`compare_em_inf`], timed.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// `"plain"` or `"em-inf"`.
    pub label: &'static str,
    /// The output.
    pub generation: Generation,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Wall time to the first token (prefill + first step), seconds.
    pub first_token_seconds: f64,
    /// Wall time of the whole generation, seconds.
    pub seconds: f64,
    /// EM-INF's counters (`None` for the plain run).
    pub em_inf: Option<ProcessorStats>,
}

impl RunReport {
    /// Tokens per second after the first token (the decode speed).
    pub fn decode_tokens_per_second(&self) -> f64 {
        let n = self.generation.tokens.len().saturating_sub(1);
        n as f64 / (self.seconds - self.first_token_seconds).max(1e-9)
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.generation;
        write!(
            f,
            "{:>6}: {} tokens, stop {:?} | prefill {} tokens {:.1} tok/s | decode {:.2} tok/s | \
             mean entropy {:.4} nats sampled-from, {:.4} model",
            self.label,
            g.tokens.len(),
            g.stop,
            self.prompt_tokens,
            self.prompt_tokens as f64 / self.first_token_seconds.max(1e-9),
            self.decode_tokens_per_second(),
            g.mean_entropy(),
            g.mean_model_entropy(),
        )?;
        if let Some(s) = &self.em_inf {
            write!(
                f,
                " | EM-INF adjusted {}/{} steps, {:.2} Adam steps each",
                s.adjusted_rows,
                s.rows,
                s.grad_steps as f64 / s.adjusted_rows.max(1) as f64
            )?;
        }
        Ok(())
    }
}

/// Generates from `prompt` twice with the same config and seed: plain, then with EM-INF in
/// front of the sampler. `on_token(label, event)` sees every token of both runs.
///
/// # Errors
/// Anything [`Generator::generate`] returns; an invalid `em_inf` config.
pub fn compare_em_inf<M: CausalLm + ?Sized>(
    generator: &Generator<'_, M>,
    prompt: &[u32],
    config: &GenerateConfig,
    em_inf: EmInfConfig,
    mut on_token: impl FnMut(&'static str, &TokenEvent<'_>),
) -> Result<[RunReport; 2], InferError> {
    let mut run = |label: &'static str,
                   processor: &mut dyn LogitsProcessor|
     -> Result<RunReport, InferError> {
        let started = Instant::now();
        let mut first = None;
        let generation = generator
            .generate(&[prompt.to_vec()], config, processor, |e| {
                first.get_or_insert_with(|| started.elapsed().as_secs_f64());
                on_token(label, e);
            })?
            .remove(0);
        let seconds = started.elapsed().as_secs_f64();
        Ok(RunReport {
            label,
            generation,
            prompt_tokens: prompt.len(),
            first_token_seconds: first.unwrap_or(seconds),
            seconds,
            em_inf: None,
        })
    };
    let plain = run("plain", &mut ProcessorChain::new())?;
    let mut processor = EmInfProcessor::new(em_inf)?;
    let mut adjusted = run("em-inf", &mut processor)?;
    adjusted.em_inf = Some(processor.stats);
    Ok([plain, adjusted])
}

/// One training step of the `train_step` example: the mean token entropy of the model's own
/// next-token distributions over `batch` rows of `seq` seeded random tokens, its gradients for
/// every parameter (layer-checkpointed, chunked head), and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// The loss (mean token entropy, nats).
    pub entropy: f64,
    /// Global L2 norm of the gradients.
    pub grad_norm: f64,
    /// Parameters that received a gradient.
    pub params_with_grad: usize,
    /// Wall time of the step, seconds.
    pub seconds: f64,
}

/// Runs one EM-FT-style step (see [`StepReport`]) on a trainable `model`: with
/// `checkpoint`, [`em_models::Qwen2ForCausalLM::loss_and_grads`] (one layer's activations at a
/// time); without, one backward through `forward_hidden` + `head_loss` (every layer's
/// activations kept), for comparison.
///
/// # Errors
/// Any model error (context overflow, ...).
pub fn entropy_step(
    model: &em_models::Qwen2ForCausalLM,
    batch: usize,
    seq: usize,
    chunk: usize,
    seed: u64,
    checkpoint: bool,
) -> Result<StepReport, em_models::ModelError> {
    use em_models::{BatchLayout, HeadOptions, HeadStats};
    let mut rng = em_core::rng::rng(seed);
    let vocab = model.vocab_size.min(150_000) as f64;
    let rows: Vec<Vec<u32>> = (0..batch)
        .map(|_| {
            (0..seq)
                .map(|_| (em_core::rng::uniform(&mut rng) * vocab) as u32)
                .collect()
        })
        .collect();
    let next_ids: Vec<Vec<u32>> = rows
        .iter()
        .map(|r| r.iter().skip(1).copied().chain([0]).collect())
        .collect();
    let positions = vec![0..seq - 1; batch];
    let device = model.device();
    let flat: Vec<i64> = rows.iter().flatten().map(|&t| i64::from(t)).collect();
    let ids =
        Tensor::<2, burn::tensor::Int>::from_data(TensorData::new(flat, [batch, seq]), &device);
    let started = Instant::now();
    let layout = BatchLayout::right_padded(&vec![seq; batch]);
    let options = HeadOptions {
        chunk,
        temperature: 1.0,
    };
    let loss = |s: &HeadStats| (s.entropy.clone() * s.mask.clone()).sum() / s.mask.clone().sum();
    let (value, named) = if checkpoint {
        let step = model.loss_and_grads(ids, &layout, &next_ids, &positions, &options, loss)?;
        (step.value, step.grads.named(model))
    } else {
        let hidden = model.forward_hidden(ids, &layout)?;
        let out = model.head_loss(hidden, &next_ids, &positions, &options, loss)?;
        (out.value, em_models::named_grads(model, &out.grads))
    };
    let mut square = 0.0;
    let mut params_with_grad = 0;
    for p in named {
        if let Some(g) = p.grad {
            params_with_grad += 1;
            let g = g.cast(burn::tensor::DType::F64);
            square += g.clone().mul(g).sum().into_scalar::<f64>();
        }
    }
    Ok(StepReport {
        entropy: value,
        grad_norm: square.sqrt(),
        params_with_grad,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// [`peak_rss`] in GiB, NaN where it is unknown (for reports).
pub fn peak_rss_gib() -> f64 {
    peak_rss().map_or(f64::NAN, |b| b as f64 / (1u64 << 30) as f64)
}

/// Peak resident memory of this process so far (`VmHWM` of `/proc/self/status`), in bytes;
/// `None` where that file does not exist.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn demo_lowers_entropy_and_keeps_the_argmax() {
        let device = Device::default();
        let report = entropy_demo(&[2.0, 1.0, 0.5, 0.0, -1.0], 1.0, 3, &device).unwrap();
        let h: Vec<f32> = report.steps.iter().map(|s| s.entropy).collect();
        assert!(
            h.windows(2).all(|w| w[1] < w[0]),
            "entropy must fall: {h:?}"
        );
        for step in &report.steps {
            for (a, c) in step.autodiff_grad.iter().zip(&step.grad) {
                assert!((a - c).abs() <= 1e-6 + 1e-4 * c.abs(), "{a} vs {c}");
            }
            let argmax = step
                .probs
                .iter()
                .enumerate()
                .fold(0, |m, (i, p)| if *p > step.probs[m] { i } else { m });
            assert_eq!(argmax, 0);
        }
        // The first entropy against the closed form of this 5-point distribution.
        let z = [2.0f64, 1.0, 0.5, 0.0, -1.0];
        let s: f64 = z.iter().map(|v| v.exp()).sum();
        let want: f64 = z
            .iter()
            .map(|v| {
                let p = v.exp() / s;
                -p * p.ln()
            })
            .sum();
        assert!((f64::from(h[0]) - want).abs() < 1e-6);
        assert!(report.to_string().contains("step 3: H ="));
    }

    #[test]
    fn bad_arguments_are_typed_errors() {
        let device = Device::default();
        assert!(matches!(
            entropy_demo(&[], 1.0, 1, &device),
            Err(DemoError::NoLogits)
        ));
        assert!(matches!(
            entropy_demo(&[1.0, f32::NAN], 1.0, 1, &device),
            Err(DemoError::NonFinite { index: 1, .. })
        ));
        assert!(matches!(
            entropy_demo(&[1.0], -1.0, 1, &device),
            Err(DemoError::LearningRate(_))
        ));
    }

    #[test]
    fn em_inf_comparison_shares_the_seed_and_lowers_entropy() {
        let device = Device::default();
        let tiny =
            em_models::testing::tiny_pretrained(em_models::testing::Tiny::Qwen2Tied, &device, 3)
                .unwrap();
        let (model, tok) = (tiny.pretrained.model, tiny.pretrained.tokenizer);
        let generator = Generator::new(&model, &tok);
        let prompt = tok
            // The fixture's context is 64 tokens: no chat template (its system prompt is long).
            .encode(&tok.prompt_text("2 + 2 = ?", false, None).unwrap(), false)
            .unwrap();
        // Greedy: EM-INF keeps the argmax, so both runs give the same tokens.
        let config = GenerateConfig {
            max_new_tokens: 6,
            sampling: em_infer::Sampling::greedy(),
            eos_ids: Some(vec![]),
            ..GenerateConfig::default()
        };
        let mut seen = [0usize; 2];
        let [plain, adjusted] = compare_em_inf(
            &generator,
            &prompt,
            &config,
            EmInfConfig::default(),
            |l, _| {
                seen[usize::from(l == "em-inf")] += 1;
            },
        )
        .unwrap();
        assert_eq!(seen, [6, 6]);
        assert_eq!(plain.generation.tokens, adjusted.generation.tokens);
        assert!(adjusted.generation.mean_entropy() < plain.generation.mean_entropy());
        let stats = adjusted.em_inf.unwrap();
        assert_eq!(stats.rows, 6);
        assert!(plain.em_inf.is_none());
        let line = adjusted.to_string();
        assert!(
            line.contains("em-inf: 6 tokens") && line.contains("EM-INF adjusted"),
            "{line}"
        );
        assert!(plain.decode_tokens_per_second() > 0.0);
    }

    #[test]
    fn entropy_step_reaches_every_parameter() {
        use burn::module::Module;
        let model = em_models::testing::tiny_model(
            em_models::testing::Tiny::Qwen2Tied,
            &Device::flex(),
            burn::tensor::DType::F32,
            1,
        )
        .unwrap()
        .train();
        let report = entropy_step(&model, 2, 12, 5, 1, true).unwrap();
        let params = em_models::named_params(&model).len();
        assert_eq!(report.params_with_grad, params);
        let plain = entropy_step(&model, 2, 12, 5, 1, false).unwrap();
        assert!((plain.entropy - report.entropy).abs() < 1e-6);
        assert!((plain.grad_norm - report.grad_norm).abs() < 1e-4 * report.grad_norm);
        // The tiny model is peaked (initializer range 0.5): well below uniform's ln 320.
        assert!(report.entropy > 0.0 && report.entropy < (320f64).ln() - 0.1);
        assert!(report.grad_norm > 0.0 && report.grad_norm.is_finite());
        #[cfg(target_os = "linux")]
        assert!(peak_rss().is_some_and(|b| b > 0) && peak_rss_gib() > 0.0);
    }

    #[test]
    fn dtype_names_parse() {
        assert_eq!(
            em_models::parse_dtype("bf16").unwrap(),
            burn::tensor::DType::BF16
        );
        assert!(
            em_models::parse_dtype("f8")
                .unwrap_err()
                .to_string()
                .contains("f8")
        );
    }
}
