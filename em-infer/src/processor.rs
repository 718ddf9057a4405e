//! Logits processors: transformations of a whole `[batch, vocab]` logits tensor on the device,
//! applied in order before sampling. EM-INF and adaptive temperature are processors; so is any
//! closure `FnMut(Tensor<2>, &StepContext) -> Result<Tensor<2>>`.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use em_infer::{EmInfConfig, EmInfProcessor, InferError, LogitsProcessor, ProcessorChain, StepContext};
//!
//! let mut chain = ProcessorChain::new()
//!     .with(EmInfProcessor::new(EmInfConfig::default())?)
//!     // a closure: sharpen every row (temperature 1/2)
//!     .with(|logits: Tensor<2>, _ctx: &StepContext<'_>| Ok::<_, InferError>(logits * 2.0));
//! let logits = Tensor::<2>::from_floats([[2.0, 1.0, 0.5]], &Device::default());
//! let out = chain.process(logits, &StepContext::new(0, &[0], &[&[]]))?;
//! assert_eq!(out.dims(), [1, 3]);
//! # Ok::<(), em_infer::InferError>(())
//! ```

use burn::tensor::Tensor;

use crate::adaptive_temperature::{AdaptiveTemperatureConfig, adaptive_temperature_reporting};
use crate::em_inf::{EmInfConfig, em_inf_reporting};
use crate::error::Result;

/// What a processor knows about the decoding step besides the logits.
#[derive(Debug, Clone, Copy)]
pub struct StepContext<'a> {
    /// Decoding step: 0 for the first generated token.
    pub step: usize,
    /// For each logits row, the index of its sequence in the original batch (rows that finished
    /// are dropped, so row `i` of the logits is sequence `rows[i]`).
    pub rows: &'a [usize],
    /// For each logits row, the tokens generated so far.
    pub generated: &'a [&'a [u32]],
}

impl<'a> StepContext<'a> {
    /// A context for `step` with the given row map and histories.
    pub fn new(step: usize, rows: &'a [usize], generated: &'a [&'a [u32]]) -> Self {
        Self {
            step,
            rows,
            generated,
        }
    }
}

/// A transformation of next-token logits `[batch, vocab]`, applied on the device.
pub trait LogitsProcessor {
    /// Returns the processed logits, same shape.
    ///
    /// # Errors
    /// Whatever the processor reports, e.g. [`crate::InferError::NonFiniteLogits`].
    fn process(&mut self, logits: Tensor<2>, ctx: &StepContext<'_>) -> Result<Tensor<2>>;

    /// [`Self::process`], also handing back the entropy of the logits it was given when it
    /// computed that on the way ([`Processed::input_entropy`]). The generator calls this
    /// method (after [`Self::reports_input_entropy`]), never [`Self::process`]: it reports the
    /// model's entropy at every step and takes it from here rather than making another pass
    /// over the vocabulary (0.5 ms of a decode step at 8 rows of Qwen2.5's vocabulary on flex).
    /// An override must return the logits [`Self::process`] returns. The default processes and
    /// reports nothing; EM-INF (on its host path: flex, f32/f16/bf16 logits), adaptive
    /// temperature and a chain whose first processor reports override it.
    ///
    /// # Errors
    /// As [`Self::process`].
    fn process_step(&mut self, logits: Tensor<2>, ctx: &StepContext<'_>) -> Result<Processed> {
        Ok(Processed {
            logits: self.process(logits, ctx)?,
            input_entropy: None,
        })
    }

    /// Whether [`Self::process_step`] reports the entropy of these `logits`
    /// ([`Processed::input_entropy`]) whenever it succeeds. The generator then hands its logits
    /// over without keeping a clone for the model's entropy, so the processor may update their
    /// storage in place (EM-INF's host path does: it saves a copy of `[batch, vocab]` per step).
    /// A processor that answers `true` and then reports nothing fails the step with
    /// [`crate::InferError::Processor`] ([`process_for_draw`], the generator's way). The
    /// default answers `false`; EM-INF answers `true` for plain f32 logits on flex, and a chain
    /// gives its first processor's answer.
    fn reports_input_entropy(&self, logits: &Tensor<2>) -> bool {
        let _ = logits;
        false
    }

    /// A short name for logs and reports.
    fn name(&self) -> &str {
        "closure"
    }
}

/// What [`LogitsProcessor::process_step`] returns.
#[derive(Debug, Clone)]
pub struct Processed {
    /// The processed logits.
    pub logits: Tensor<2>,
    /// Each row's entropy of the logits the processor was given, exactly the values
    /// [`em_core::entropy()`] returns for them (read as f64), when the processor computed them
    /// anyway; `None` otherwise. A processor that reports anything else here makes the
    /// generator report wrong model entropies. A report with another number of rows than the
    /// logits is ignored (the generator computes the entropy itself) when the processor did
    /// not claim it ([`LogitsProcessor::reports_input_entropy`]), and fails the step with
    /// [`crate::InferError::Processor`] when it did (the logits are gone then).
    pub input_entropy: Option<Vec<f64>>,
}

/// One step's processing as the generator does it, returning [`crate::Sampler::draw_step`]'s
/// two arguments: the processed logits and the model's logits for their entropy. When
/// `processor` [reports the input's entropy](LogitsProcessor::reports_input_entropy) the
/// logits are handed over without a clone (EM-INF then updates them in place) and the
/// processed logits stand in for the model's (`draw_step` reads only their shape and backend
/// then); otherwise a clone is kept for `draw_step`'s own entropy pass.
///
/// # Errors
/// `processor`'s own; [`crate::InferError::Processor`] when it claimed the report and did not
/// make it with one value per row (the model's logits are gone then).
pub fn process_for_draw<P: LogitsProcessor + ?Sized>(
    processor: &mut P,
    logits: Tensor<2>,
    ctx: &StepContext<'_>,
) -> Result<(Processed, Tensor<2>)> {
    let rows = logits.dims()[0];
    let kept = (!processor.reports_input_entropy(&logits)).then(|| logits.clone());
    let processed = processor.process_step(logits, ctx)?;
    let model_logits = match kept {
        Some(logits) => logits,
        None if processed
            .input_entropy
            .as_ref()
            .is_some_and(|h| h.len() == rows) =>
        {
            processed.logits.clone()
        }
        None => {
            return Err(crate::InferError::Processor {
                name: processor.name().to_string(),
                step: ctx.step,
                message: format!(
                    "said it reports the entropy of its {rows} input rows, reported {:?} values",
                    processed.input_entropy.as_ref().map(Vec::len)
                ),
            });
        }
    };
    Ok((processed, model_logits))
}

impl<F> LogitsProcessor for F
where
    F: FnMut(Tensor<2>, &StepContext<'_>) -> Result<Tensor<2>>,
{
    fn process(&mut self, logits: Tensor<2>, ctx: &StepContext<'_>) -> Result<Tensor<2>> {
        self(logits, ctx)
    }
}

/// Processors applied one after the other.
#[derive(Default)]
pub struct ProcessorChain<'a> {
    processors: Vec<Box<dyn LogitsProcessor + 'a>>,
}

impl std::fmt::Debug for ProcessorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.processors.iter().map(|p| p.name().to_string()))
            .finish()
    }
}

impl<'a> ProcessorChain<'a> {
    /// An empty chain (the identity).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a processor.
    pub fn with(mut self, processor: impl LogitsProcessor + 'a) -> Self {
        self.push(processor);
        self
    }

    /// Appends a processor.
    pub fn push(&mut self, processor: impl LogitsProcessor + 'a) {
        self.processors.push(Box::new(processor));
    }

    /// Number of processors.
    pub fn len(&self) -> usize {
        self.processors.len()
    }

    /// Whether the chain is the identity.
    pub fn is_empty(&self) -> bool {
        self.processors.is_empty()
    }
}

impl LogitsProcessor for ProcessorChain<'_> {
    fn process(&mut self, logits: Tensor<2>, ctx: &StepContext<'_>) -> Result<Tensor<2>> {
        self.process_step(logits, ctx).map(|out| out.logits)
    }

    /// The first processor's [`LogitsProcessor::process_step`] (the chain's input is its
    /// input), then the others' [`LogitsProcessor::process`].
    fn process_step(&mut self, logits: Tensor<2>, ctx: &StepContext<'_>) -> Result<Processed> {
        let mut processors = self.processors.iter_mut();
        let mut out = match processors.next() {
            Some(first) => first.process_step(logits, ctx)?,
            None => Processed {
                logits,
                input_entropy: None,
            },
        };
        for processor in processors {
            out.logits = processor.process(out.logits, ctx)?;
        }
        Ok(out)
    }

    /// The first processor's answer (`false` for an empty chain).
    fn reports_input_entropy(&self, logits: &Tensor<2>) -> bool {
        self.processors
            .first()
            .is_some_and(|first| first.reports_input_entropy(logits))
    }

    fn name(&self) -> &str {
        "chain"
    }
}

/// Counters a processor keeps across the steps it has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessorStats {
    /// Logits rows processed (one per sequence per step).
    pub rows: usize,
    /// Rows that were changed (EM-INF: took ≥ 1 Adam step; adaptive temperature: τ < 1).
    pub adjusted_rows: usize,
    /// EM-INF: Adam steps taken, summed over rows. Adaptive temperature: 0.
    pub grad_steps: usize,
}

/// EM-INF ([`em_inf`](crate::em_inf())) as a processor, with counters.
#[derive(Debug, Clone)]
pub struct EmInfProcessor {
    config: EmInfConfig,
    /// What it has done so far.
    pub stats: ProcessorStats,
}

impl EmInfProcessor {
    /// Validates `config` up front.
    ///
    /// # Errors
    /// [`crate::InferError::InvalidConfig`].
    pub fn new(config: EmInfConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            stats: ProcessorStats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EmInfConfig {
        &self.config
    }
}

impl LogitsProcessor for EmInfProcessor {
    fn process(&mut self, logits: Tensor<2>, ctx: &StepContext<'_>) -> Result<Tensor<2>> {
        self.process_step(logits, ctx).map(|out| out.logits)
    }

    /// Reports the input's entropy on the host path (flex; f32 logits, or f16/bf16 ones
    /// widened to f32), where the initial softmax's sums give it
    /// ([`crate::em_inf`](mod@crate::em_inf)'s module docs); not on the burn-op path.
    fn process_step(&mut self, logits: Tensor<2>, ctx: &StepContext<'_>) -> Result<Processed> {
        let (out, input_entropy) = em_inf_reporting(logits, &self.config, ctx.step)?;
        self.stats.rows += out.steps.len();
        self.stats.adjusted_rows += out.steps.iter().filter(|s| **s > 0).count();
        self.stats.grad_steps += out.steps.iter().sum::<usize>();
        Ok(Processed {
            logits: out.logits,
            input_entropy,
        })
    }

    /// `true` for plain f32 logits on flex, which take the host path (the logits' storage is
    /// then updated in place when the caller handed it over); `false` for the rest, where the
    /// path may not report.
    fn reports_input_entropy(&self, logits: &Tensor<2>) -> bool {
        crate::em_inf::reports_input_entropy(logits)
    }

    fn name(&self) -> &str {
        "em-inf"
    }
}

/// Adaptive temperature ([`adaptive_temperature`](crate::adaptive_temperature())) as a processor,
/// with counters.
#[derive(Debug, Clone)]
pub struct AdaptiveTemperatureProcessor {
    config: AdaptiveTemperatureConfig,
    /// What it has done so far.
    pub stats: ProcessorStats,
}

impl AdaptiveTemperatureProcessor {
    /// Validates `config` up front.
    ///
    /// # Errors
    /// [`crate::InferError::InvalidConfig`].
    pub fn new(config: AdaptiveTemperatureConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            stats: ProcessorStats::default(),
        })
    }
}

impl LogitsProcessor for AdaptiveTemperatureProcessor {
    fn process(&mut self, logits: Tensor<2>, ctx: &StepContext<'_>) -> Result<Tensor<2>> {
        self.process_step(logits, ctx).map(|out| out.logits)
    }

    /// Reports the input's entropy: the `H0` its search starts from is [`em_core::entropy()`]'s.
    fn process_step(&mut self, logits: Tensor<2>, ctx: &StepContext<'_>) -> Result<Processed> {
        let (out, h0) = adaptive_temperature_reporting(logits, &self.config, ctx.step)?;
        self.stats.rows += out.temperatures.len();
        self.stats.adjusted_rows += out.temperatures.iter().filter(|t| **t < 1.0).count();
        Ok(Processed {
            logits: out.logits,
            input_entropy: Some(h0),
        })
    }

    fn name(&self) -> &str {
        "adaptive-temperature"
    }
}
