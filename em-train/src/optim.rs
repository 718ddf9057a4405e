//! AdamW as torch (and so verl) runs it, with global grad-norm clipping, on the model's
//! parameters keyed by their Hugging Face names: the moments survive a save and a reload (burn
//! keys its optimiser records by [`burn::module::ParamId`], which a reload changes), and burn's
//! own clipping, which is per tensor, is not used.
//!
//! One step with gradients `g` (the sum over micro-batches), learning rate `lr` and
//! `t` = the number of steps taken so far + 1:
//! 1. `n = √(Σ_params Σ g²)` (reported as `grad_norm`); `g ← g · min(1, C / (n + 1e-6))`.
//! 2. For every parameter with a gradient: `p ← p·(1 − lr·wd)`; `m ← β1·m + (1−β1)·g`;
//!    `v ← β2·v + (1−β2)·g²`; `p ← p − (lr / (1−β1^t)) · m / (√v / √(1−β2^t) + ε)` (torch's
//!    arithmetic). A parameter without a gradient is left alone, as torch does.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::Module;
use burn::tensor::{DType, Tensor, TensorData};
use em_models::{Checkpoint, NamedParam, ParamGrads, named_params, replace_params};

use crate::config::OptimizerConfig;
use crate::error::{Result, TrainError};

/// What one optimiser step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Update {
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// The factor the gradients were multiplied by (1 when not clipped).
    pub clip_scale: f64,
    /// The learning rate used.
    pub lr: f64,
}

/// First and second moments of one parameter (flattened, burn's layout, f32).
#[derive(Debug, Clone)]
struct Moments {
    m: Tensor<1>,
    v: Tensor<1>,
}

/// AdamW's hyperparameters and state.
#[derive(Debug, Clone)]
pub struct AdamW {
    config: OptimizerConfig,
    /// Steps taken.
    steps: u64,
    moments: BTreeMap<String, Moments>,
}

/// The optimiser state file inside a checkpoint.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

impl AdamW {
    /// A fresh optimiser (no steps, zero moments).
    pub fn new(config: OptimizerConfig) -> Self {
        Self {
            config,
            steps: 0,
            moments: BTreeMap::new(),
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The global norm of the gradients attached to `params`.
    ///
    /// # Errors
    /// [`TrainError::Tensor`] when the sums cannot be read back.
    pub fn grad_norm(params: &[NamedParam]) -> Result<f64> {
        let sums: Vec<Tensor<1>> = params
            .iter()
            .filter_map(|p| p.grad.clone())
            // Per-tensor sums in the gradient's dtype (f64 is not on every backend), added up
            // in f64 on the host.
            .map(|g| (g.clone() * g).sum())
            .collect();
        if sums.is_empty() {
            return Ok(0.0);
        }
        let total: f64 = Tensor::cat(sums, 0)
            .into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .map_err(TrainError::Tensor)?
            .iter()
            .sum();
        Ok(total.sqrt())
    }

    /// One step on `model` with `grads` (summed over the batch) at learning rate `lr`; returns
    /// the updated model. `step` names the step in errors.
    ///
    /// # Errors
    /// [`TrainError::NonFinite`] when the gradient norm is NaN or infinite (nothing changes).
    pub fn step<M: Module>(
        &mut self,
        model: M,
        grads: &ParamGrads,
        lr: f64,
        step: usize,
    ) -> Result<(M, Update)> {
        let params = grads.named(&model);
        let grad_norm = Self::grad_norm(&params)?;
        if !grad_norm.is_finite() {
            return Err(TrainError::NonFinite {
                step,
                what: "grad_norm",
                value: grad_norm,
            });
        }
        let clip_scale = match self.config.max_grad_norm {
            Some(c) => (c / (grad_norm + 1e-6)).min(1.0),
            None => 1.0,
        };
        let c = &self.config;
        let t = (self.steps + 1) as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        let mut updated = HashMap::new();
        for p in params {
            let Some(g) = p.grad else { continue };
            let g = if clip_scale < 1.0 { g * clip_scale } else { g };
            let value = p.flat.inner();
            let moments = self.moments.remove(&p.name).unwrap_or_else(|| Moments {
                m: value.zeros_like(),
                v: value.zeros_like(),
            });
            let m = moments.m * c.beta1 + g.clone() * (1.0 - c.beta1);
            let v = moments.v * c.beta2 + g.clone() * g * (1.0 - c.beta2);
            let denom = v.clone().sqrt() / bc2.sqrt() + c.eps;
            let decayed = if c.weight_decay > 0.0 {
                value * (1.0 - lr * c.weight_decay)
            } else {
                value
            };
            let new = decayed - m.clone() / denom * (lr / bc1);
            updated.insert(p.id, new);
            self.moments.insert(p.name, Moments { m, v });
        }
        self.steps += 1;
        Ok((
            replace_params(model, updated),
            Update {
                grad_norm,
                clip_scale,
                lr,
            },
        ))
    }

    /// Writes the moments to `path` (safetensors, f32, HF layout): `<name>.exp_avg` and
    /// `<name>.exp_avg_sq` per parameter of `model` that has them.
    ///
    /// # Errors
    /// [`TrainError::Model`] for a failed write.
    pub fn save<M: Module>(&self, model: &M, path: &Path) -> Result<()> {
        let mut tensors = Vec::new();
        for p in named_params(model) {
            let Some(moments) = self.moments.get(&p.name) else {
                continue;
            };
            for (suffix, value) in [("exp_avg", &moments.m), ("exp_avg_sq", &moments.v)] {
                tensors.push(NamedParam {
                    name: format!("{}.{suffix}", p.name),
                    flat: value.clone(),
                    grad: None,
                    ..p.clone()
                });
            }
        }
        // One metadata key: safetensors writes a map's keys in hash order, and a checkpoint's
        // bytes should depend on its contents only (the step count is in trainer_state.json).
        let metadata = HashMap::from([("format".to_string(), "em-train-adamw".to_string())]);
        em_models::write_safetensors(path, tensors, DType::F32, metadata)?;
        Ok(())
    }

    /// Restores the state [`AdamW::save`] wrote for `model` (same parameter names and shapes),
    /// `steps` steps in.
    ///
    /// # Errors
    /// [`TrainError::Model`] for a corrupt or mis-shaped tensor; [`TrainError::Checkpoint`]
    /// naming a parameter without both moments.
    pub fn load<M: Module>(
        config: OptimizerConfig,
        model: &M,
        path: &Path,
        steps: u64,
    ) -> Result<Self> {
        let mut out = Self::new(config);
        out.steps = steps;
        if steps == 0 {
            return Ok(out);
        }
        let file = Checkpoint::open_file(path)?;
        // Frozen parameters (a LoRA model's base weights) have no moments.
        for p in named_params(model).into_iter().filter(|p| p.trainable) {
            let (m_name, v_name) = (
                format!("{}.exp_avg", p.name),
                format!("{}.exp_avg_sq", p.name),
            );
            if !file.contains(&m_name) || !file.contains(&v_name) {
                // Every parameter gets a gradient in em-train's objectives, so after a step
                // every parameter has moments: a missing one is a damaged file, and zeros in
                // its place would silently change the run.
                return Err(TrainError::Checkpoint {
                    path: path.to_path_buf(),
                    message: format!("no optimiser moments for {}", p.name),
                });
            }
            let read = |name: &str| -> Result<Tensor<1>> {
                let hf = p.hf_shape();
                let data = file.read_f32(name, &hf)?;
                let device = p.flat.device();
                let t = Tensor::<1>::from_data(TensorData::new(data, [p.numel()]), &device).inner();
                Ok(if p.transposed {
                    t.reshape([hf[0], hf[1]]).transpose().reshape([p.numel()])
                } else {
                    t
                })
            };
            out.moments.insert(
                p.name.clone(),
                Moments {
                    m: read(&m_name)?,
                    v: read(&v_name)?,
                },
            );
        }
        Ok(out)
    }
}
