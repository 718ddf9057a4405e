//! LoRA on the `*_proj.weight` linears (not the embedding, the norms or the head), through
//! burn's [`burn::module::Lora`] reparameterization: the base weights are frozen, only the
//! adapters train (AdamW's moments are theirs alone), rollouts and validation use a merged
//! inference copy, and checkpoints hold the adapters in PEFT's layout (`adapter_config.json`,
//! `adapter_model.safetensors` with `base_model.model.<module>.lora_A.weight` `[r, in]` and
//! `lora_B.weight` `[out, r]`), plus the merged model when `merge_on_save` is set.
//!
//! Initialisation follows PEFT: `A ~ U(−1/√in, 1/√in)` (kaiming-uniform with a = √5), drawn
//! from the run's seed, and `B = 0`, so the adapted model starts equal to the base.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Lora, Module, ParamGroup};
use burn::tensor::{DType, Tensor, TensorData};
use em_models::{Checkpoint, NamedParam, Qwen2ForCausalLM, named_params, replace_params};

use crate::config::LoraConfig;
use crate::error::{Result, TrainError, io};

/// The linears that get adapters (PEFT's `target_modules`).
pub const TARGET_MODULES: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];
/// The adapter weights inside a checkpoint.
pub const ADAPTER_FILE: &str = "adapter_model.safetensors";
/// The adapter config inside a checkpoint.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
/// PEFT's prefix of the adapter tensor names.
const PEFT_PREFIX: &str = "base_model.model.";

fn is_adapter(p: &NamedParam) -> bool {
    p.name.ends_with(".lora_A.weight") || p.name.ends_with(".lora_B.weight")
}

/// `model` (trainable) with adapters of `config` on every target linear, seeded by `seed`.
pub fn attach(model: Qwen2ForCausalLM, config: &LoraConfig, seed: u64) -> Qwen2ForCausalLM {
    let group = ParamGroup::from_any_predicates(
        TARGET_MODULES
            .iter()
            .map(|m| format!("{m}.weight"))
            .collect::<Vec<_>>(),
    );
    let model = model.apply_lora(Lora::new(config.rank, config.alpha).set_param_group(group));
    let mut values = HashMap::new();
    for (i, p) in named_params(&model)
        .into_iter()
        .filter(|p| p.name.ends_with(".lora_A.weight"))
        .enumerate()
    {
        // burn's a is [in, r]: bound 1/√in.
        let bound = 1.0 / (p.shape[0] as f64).sqrt();
        let mut rng = em_core::rng::rng(em_core::rng::mix(seed, i as u64));
        let data: Vec<f32> = (0..p.numel())
            .map(|_| ((2.0 * em_core::rng::uniform(&mut rng) - 1.0) * bound) as f32)
            .collect();
        let device = p.flat.device();
        let t = Tensor::<1>::from_data(TensorData::new(data, [p.numel()]), &device)
            .cast(p.flat.dtype())
            .inner();
        values.insert(p.id, t);
    }
    replace_params(model, values)
}

/// Writes the adapters of `model` to `dir` in PEFT's layout.
///
/// # Errors
/// I/O and safetensors errors.
pub fn save(model: &Qwen2ForCausalLM, config: &LoraConfig, base: &Path, dir: &Path) -> Result<()> {
    let tensors: Vec<NamedParam> = named_params(model)
        .into_iter()
        .filter(is_adapter)
        .map(|p| NamedParam {
            name: format!("{PEFT_PREFIX}{}", p.name),
            ..p
        })
        .collect();
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    em_models::write_safetensors(&dir.join(ADAPTER_FILE), tensors, DType::F32, metadata)?;
    let adapter_config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": config.rank,
        "lora_alpha": config.alpha,
        "lora_dropout": 0.0,
        "target_modules": TARGET_MODULES,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "init_lora_weights": true,
        "modules_to_save": null,
        "base_model_name_or_path": base.display().to_string(),
    });
    let path = dir.join(ADAPTER_CONFIG_FILE);
    let text = serde_json::to_vec_pretty(&adapter_config).map_err(|source| TrainError::Json {
        path: path.clone(),
        source,
    })?;
    std::fs::write(&path, text).map_err(io(&path))
}

/// `model` (with adapters attached) with the adapter values of a checkpoint directory.
///
/// # Errors
/// [`TrainError::Model`] for a missing or mis-shaped adapter tensor.
pub fn load(model: Qwen2ForCausalLM, dir: &Path) -> Result<Qwen2ForCausalLM> {
    let file = Checkpoint::open_file(dir.join(ADAPTER_FILE))?;
    let mut values = HashMap::new();
    for p in named_params(&model).into_iter().filter(is_adapter) {
        let hf = p.hf_shape();
        let data = file.read_f32(&format!("{PEFT_PREFIX}{}", p.name), &hf)?;
        let device = p.flat.device();
        let t = Tensor::<1>::from_data(TensorData::new(data, [p.numel()]), &device)
            .reshape([hf[0], hf[1]])
            .transpose()
            .reshape([p.numel()])
            .cast(p.flat.dtype())
            .inner();
        values.insert(p.id, t);
    }
    Ok(replace_params(model, values))
}

/// The inference view of `model` generation and validation use: adapters merged into their
/// weights once (a no-op without adapters), so decoding does not rebuild them per token.
pub fn inference_view(model: &Qwen2ForCausalLM) -> Qwen2ForCausalLM {
    model.valid().materialize()
}
