//! Run-config validation and parsing: each bad value is a typed error naming the field.

use em_train::{DataSource, RunConfig, Schedule, TrainError};

fn valid() -> RunConfig {
    RunConfig {
        model: "some/dir".into(),
        ..RunConfig::default()
    }
}

fn field_of(result: em_train::Result<()>) -> String {
    match result {
        Err(TrainError::InvalidConfig { field, .. }) => field,
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

#[test]
fn defaults_are_valid_and_bad_values_name_their_field() {
    valid().validate().unwrap();
    type Edit = Box<dyn Fn(&mut RunConfig)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("model", Box::new(|c| c.model = "".into())),
        ("steps", Box::new(|c| c.steps = 0)),
        ("batch_size", Box::new(|c| c.batch_size = 0)),
        (
            "micro_batch_size",
            Box::new(|c| c.micro_batch_size = Some(0)),
        ),
        (
            "micro_batch_size",
            Box::new(|c| c.micro_batch_size = Some(99)),
        ),
        ("num_samples", Box::new(|c| c.num_samples = 0)),
        ("temperature", Box::new(|c| c.temperature = 0.0)),
        ("temperature", Box::new(|c| c.temperature = f64::NAN)),
        ("top_p", Box::new(|c| c.top_p = 1.5)),
        ("max_new_tokens", Box::new(|c| c.max_new_tokens = 0)),
        ("optimizer.lr", Box::new(|c| c.optimizer.lr = 0.0)),
        ("optimizer.lr", Box::new(|c| c.optimizer.lr = -1e-5)),
        (
            "optimizer.weight_decay",
            Box::new(|c| c.optimizer.weight_decay = -0.1),
        ),
        ("optimizer.beta1", Box::new(|c| c.optimizer.beta1 = 1.0)),
        ("optimizer.eps", Box::new(|c| c.optimizer.eps = 0.0)),
        (
            "optimizer.max_grad_norm",
            Box::new(|c| c.optimizer.max_grad_norm = Some(0.0)),
        ),
        ("kl_coef", Box::new(|c| c.kl_coef = -1.0)),
        ("keep_last", Box::new(|c| c.keep_last = 0)),
        (
            "reference_dtype",
            Box::new(|c| c.reference_dtype = "int8".into()),
        ),
        ("chunk", Box::new(|c| c.chunk = 0)),
        (
            "schedule.warmup_steps",
            Box::new(|c| {
                c.schedule = Schedule::WarmupCosine {
                    warmup_steps: 99,
                    min_lr: 0.0,
                }
            }),
        ),
        (
            "schedule.min_lr",
            Box::new(|c| {
                c.schedule = Schedule::WarmupCosine {
                    warmup_steps: 1,
                    min_lr: 1.0,
                }
            }),
        ),
        (
            "data.name",
            Box::new(|c| {
                c.data = DataSource::Bench {
                    name: "nope".into(),
                }
            }),
        ),
        (
            "validation.every",
            Box::new(|c| {
                c.validation = Some(em_train::ValidationConfig {
                    every: 0,
                    ..Default::default()
                })
            }),
        ),
    ];
    for (field, edit) in cases {
        let mut c = valid();
        edit(&mut c);
        assert_eq!(field_of(c.validate()), field);
    }
}

#[test]
fn schedule_closed_form() {
    let lr = 1e-3;
    assert_eq!(Schedule::Constant.lr(lr, 7, 10), lr);
    let s = Schedule::WarmupCosine {
        warmup_steps: 4,
        min_lr: 1e-4,
    };
    assert!((s.lr(lr, 1, 12) - lr / 4.0).abs() < 1e-15);
    assert!((s.lr(lr, 4, 12) - lr).abs() < 1e-15);
    // Halfway through the cosine: the mean of lr and min_lr.
    assert!((s.lr(lr, 8, 12) - (lr + 1e-4) / 2.0).abs() < 1e-15);
    assert!((s.lr(lr, 12, 12) - 1e-4).abs() < 1e-15);
}

#[test]
fn toml_and_json_files_parse_and_bad_files_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("run.toml");
    std::fs::write(
        &toml,
        r#"
model = "m"
steps = 3
reduction = "sequence-mean"
[data]
kind = "samples"
path = "s.jsonl"
[optimizer]
lr = 1e-3
max_grad_norm = 0.5
[schedule]
kind = "warmup_cosine"
warmup_steps = 1
min_lr = 0.0
"#,
    )
    .unwrap();
    let c = RunConfig::from_file(&toml).unwrap();
    assert_eq!(c.steps, 3);
    assert_eq!(c.optimizer.lr, 1e-3);
    assert_eq!(
        c.optimizer.weight_decay, 0.01,
        "unset fields keep their defaults"
    );
    assert_eq!(c.reduction, em_train::Reduction::SequenceMean);
    c.validate().unwrap();
    let json = dir.path().join("run.json");
    std::fs::write(&json, serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(RunConfig::from_file(&json).unwrap(), c, "JSON round trip");

    for (text, needle) in [
        ("stepz = 3", "stepz"),
        ("steps = \"three\"", "steps"),
        ("[optimizer]\nlearning_rate = 1", "learning_rate"),
        ("[data]\nkind = \"samples\"", "path"),
    ] {
        std::fs::write(&toml, text).unwrap();
        match RunConfig::from_file(&toml) {
            Err(TrainError::ConfigFile { message, .. }) => {
                assert!(message.contains(needle), "{text}: {message}")
            }
            other => panic!("{text}: {other:?}"),
        }
    }
    assert!(matches!(
        RunConfig::from_file(dir.path().join("missing.toml")),
        Err(TrainError::Io { .. })
    ));
}
