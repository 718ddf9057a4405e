//! LoRA: only the adapters train; the gradient of B at initialisation in closed form
//! (`∂L/∂b = s·aᵀ·∂L/∂W` with `∂L/∂W` from the plain model); the PEFT layout of the saved
//! adapters; the merged checkpoint equal to `W + s·B·A` recomputed on the host; exact resume.

use std::ops::ControlFlow;

use burn::module::Module;
use burn::tensor::Device;
use em_train::data::Sample;
use em_train::{
    EmFtLoss, Event, LoraConfig, Reduction, RunConfig, TrainError, em_ft_grads, run_em_ft,
};

use crate::common::{copy_oracle_model, json, oracle_dir, oracle_samples_run, tensors};

fn device() -> Device {
    Device::flex()
}

fn host(t: burn::tensor::Tensor<1>) -> Vec<f64> {
    t.into_data().convert::<f64>().try_to_vec::<f64>().unwrap()
}

fn run(model: std::path::PathBuf, lora: LoraConfig) -> RunConfig {
    RunConfig {
        checkpoint_every: 1,
        keep_last: 5,
        lora: Some(lora),
        ..oracle_samples_run(model, 2, 3)
    }
}

#[test]
fn b_gradient_at_init_is_scaled_a_transpose_times_the_weight_gradient() {
    let plain = em_models::Qwen2ForCausalLM::from_dir(
        oracle_dir(),
        &device(),
        &em_models::LoadOptions::default(),
    )
    .unwrap()
    .train();
    let config = LoraConfig {
        rank: 3,
        alpha: 6.0,
        merge_on_save: false,
    };
    let adapted = em_train::lora::attach(plain.clone(), &config, 9);
    let samples: Vec<Sample> =
        em_train::data::read_samples(&oracle_dir().join("samples.jsonl"), None, 96)
            .unwrap()
            .into_iter()
            .take(3)
            .collect();
    let loss = EmFtLoss {
        reduction: Reduction::TokenMean,
        micro_batch: 2,
        chunk: 4,
        kl_coef: 0.0,
    };
    let (g_plain, s_plain) = em_ft_grads(&plain, None, &samples, &loss, 1).unwrap();
    let (g_lora, s_lora) = em_ft_grads(&adapted, None, &samples, &loss, 1).unwrap();
    assert!(
        (s_plain.loss - s_lora.loss).abs() < 1e-6,
        "B = 0: same model"
    );
    let plain_named = g_plain.named(&plain);
    let lora_named = g_lora.named(&adapted);
    // Only adapters have gradients.
    for p in &lora_named {
        assert_eq!(p.grad.is_some(), p.name.contains(".lora_"), "{}", p.name);
    }
    let s = config.alpha / config.rank as f64;
    for module in [
        "model.layers.0.self_attn.k_proj",
        "model.layers.1.mlp.down_proj",
    ] {
        let find = |set: &[em_models::NamedParam], name: String| {
            set.iter().find(|p| p.name == name).unwrap().clone()
        };
        let w = find(&plain_named, format!("{module}.weight"));
        let (d_in, d_out) = (w.shape[0], w.shape[1]);
        let g = host(w.grad.unwrap()); // [in, out]
        let a = host(find(&lora_named, format!("{module}.lora_A.weight")).flat); // [in, r]
        let b = find(&lora_named, format!("{module}.lora_B.weight"));
        assert_eq!(
            b.hf_shape(),
            vec![d_out, config.rank],
            "PEFT's lora_B is [out, r]"
        );
        let gb = host(b.grad.unwrap()); // [r, out]
        let ga = host(
            find(&lora_named, format!("{module}.lora_A.weight"))
                .grad
                .unwrap(),
        );
        assert!(
            ga.iter().all(|v| v.abs() < 1e-12),
            "∂L/∂a = s·G·bᵀ = 0 at b = 0"
        );
        for k in 0..config.rank {
            for o in 0..d_out {
                let want: f64 = (0..d_in)
                    .map(|i| a[i * config.rank + k] * g[i * d_out + o])
                    .sum::<f64>()
                    * s;
                let got = gb[k * d_out + o];
                assert!(
                    (got - want).abs() < 1e-5 * (1.0 + want.abs()),
                    "{module} [{k},{o}]: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn adapters_train_alone_and_save_in_peft_layout_with_the_merged_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_oracle_model(dir.path());
    let config = LoraConfig {
        rank: 4,
        alpha: 8.0,
        merge_on_save: true,
    };
    let out = dir.path().join("out");
    run_em_ft(&run(model.clone(), config), &out, false, &device(), |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    let ckpt = out.join("checkpoint-2");
    let adapter_config = json(&ckpt.join("adapter_config.json"));
    assert_eq!(adapter_config["r"], 4);
    assert_eq!(adapter_config["lora_alpha"], 8.0);
    assert_eq!(adapter_config["peft_type"], "LORA");
    let adapters: std::collections::HashMap<String, Vec<f64>> =
        tensors(&ckpt.join("adapter_model.safetensors"))
            .into_iter()
            .collect();
    assert_eq!(
        adapters.len(),
        2 * 7 * 2,
        "A and B for 7 linears × 2 layers"
    );
    let file = em_models::Checkpoint::open_file(ckpt.join("adapter_model.safetensors")).unwrap();
    assert_eq!(
        file.shape("base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"),
        Some(vec![4, 16])
    );
    assert_eq!(
        file.shape("base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight"),
        Some(vec![8, 4])
    );
    let base: std::collections::HashMap<String, Vec<f64>> =
        tensors(&model.join("model.safetensors"))
            .into_iter()
            .collect();
    let merged = em_models::Checkpoint::open(&ckpt).unwrap();
    let s = 8.0 / 4.0;
    let mut changed = 0;
    for (name, w0) in &base {
        let shape = merged.shape(name).unwrap();
        let got: Vec<f64> = merged
            .read_f32(name, &shape)
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect();
        let module = name.strip_suffix(".weight").unwrap_or(name);
        match adapters.get(&format!("base_model.model.{module}.lora_A.weight")) {
            None => assert!(got == *w0, "{name}: not a target, must stay the base's"),
            Some(a) => {
                let b = &adapters[&format!("base_model.model.{module}.lora_B.weight")];
                let (d_out, d_in) = (shape[0], shape[1]);
                for o in 0..d_out {
                    for i in 0..d_in {
                        let delta: f64 = (0..4).map(|k| b[o * 4 + k] * a[k * d_in + i]).sum();
                        let want = w0[o * d_in + i] + s * delta;
                        assert!((got[o * d_in + i] - want).abs() < 1e-5, "{name} [{o},{i}]");
                    }
                }
                changed += 1;
            }
        }
    }
    assert_eq!(changed, 14);
    let moments = tensors(&ckpt.join("optimizer.safetensors"));
    assert!(
        moments.iter().all(|(n, _)| n.contains(".lora_")),
        "moments of adapters only"
    );
    // The merged checkpoint loads as a plain model.
    em_models::Qwen2ForCausalLM::from_dir(&ckpt, &device(), &em_models::LoadOptions::default())
        .unwrap();
}

#[test]
fn lora_run_resumes_bit_for_bit_from_adapters() {
    let dir = tempfile::tempdir().unwrap();
    let model = copy_oracle_model(dir.path());
    let config = LoraConfig {
        rank: 2,
        alpha: 4.0,
        merge_on_save: false,
    };
    let r = run(model, config);
    let whole = dir.path().join("whole");
    run_em_ft(&r, &whole, false, &device(), |_| ControlFlow::Continue(())).unwrap();
    assert!(
        !whole.join("checkpoint-2/model.safetensors").exists(),
        "adapters only"
    );
    let killed = dir.path().join("killed");
    let stopped = run_em_ft(&r, &killed, false, &device(), |e| match e {
        Event::Checkpoint(_) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
    assert!(matches!(stopped, Err(TrainError::Interrupted { step: 1 })));
    run_em_ft(&r, &killed, true, &device(), |_| ControlFlow::Continue(())).unwrap();
    for file in ["adapter_model.safetensors", "optimizer.safetensors"] {
        assert!(
            std::fs::read(whole.join("checkpoint-2").join(file)).unwrap()
                == std::fs::read(killed.join("checkpoint-2").join(file)).unwrap(),
            "{file}"
        );
    }
}
