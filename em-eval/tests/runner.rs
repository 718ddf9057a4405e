//! The runner on em-models' tiny seeded model (`em_models::testing`): records as it goes, resume after an interruption
//! (and after a half-written line, as a kill leaves it) gives the uninterrupted run's report,
//! grading of existing outputs, strategies, and the report files.
#![allow(clippy::unwrap_used)]

use std::ops::ControlFlow;

use burn::tensor::Device;
use em_eval::problems::{Benchmark, Task, data_dir};
use em_eval::records::{read_records, records_path};
use em_eval::{EvalError, evaluate};
use em_eval::{EvalOptions, EvalRecord, Strategy, grade_outputs};
use em_infer::Generator;
use em_models::{Qwen2ForCausalLM, Tokenizer};

/// em-models' tiny seeded Qwen2 and its tokenizer.
fn tiny() -> (Qwen2ForCausalLM, Tokenizer) {
    let tiny = em_models::testing::tiny_pretrained(
        em_models::testing::Tiny::Qwen2Tied,
        &Device::default(),
        3,
    )
    .unwrap();
    (tiny.pretrained.model, tiny.pretrained.tokenizer)
}

fn options(out: &std::path::Path) -> EvalOptions {
    EvalOptions {
        limit: Some(5),
        max_new_tokens: 6,
        batch_size: 2,
        temperature: 1.0,
        // The fixture's context is 64 tokens: no chat template or system prompt.
        chat: false,
        math_system_prompt: String::new(),
        out_dir: out.to_path_buf(),
        ..EvalOptions::default()
    }
}

/// Records without their wall times, for comparing runs.
fn timeless(mut records: Vec<EvalRecord>) -> Vec<EvalRecord> {
    records.sort_by(|a, b| a.id.cmp(&b.id));
    for r in &mut records {
        r.seconds = 0.0;
        // A row's logits differ in the last f32 bits with its batch's padding.
        r.mean_entropy = (r.mean_entropy * 1e4).round();
    }
    records
}

fn short_problems() -> Vec<em_eval::Problem> {
    // Short MATH500 questions, so prompt + output fit the fixture's 64 positions.
    Benchmark::Math500
        .load(&data_dir())
        .unwrap()
        .into_iter()
        .filter(|p| p.question.len() < 60)
        .collect()
}

#[test]
fn an_interrupted_run_resumes_to_the_same_report() {
    let (model, tok) = tiny();
    let generator = Generator::new(&model, &tok);
    let problems = short_problems();
    let whole = tempfile::tempdir().unwrap();
    let report = evaluate(
        &generator,
        "math500",
        &problems,
        &Strategy::Sampling,
        &options(whole.path()),
        |_| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(report.problems, 5);
    let expected =
        timeless(read_records(&records_path(whole.path(), "math500", "sampling")).unwrap());
    assert_eq!(expected.len(), 5);

    let split = tempfile::tempdir().unwrap();
    let mut seen = 0;
    let err = evaluate(
        &generator,
        "math500",
        &problems,
        &Strategy::Sampling,
        &options(split.path()),
        |_| {
            seen += 1;
            if seen == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    )
    .unwrap_err();
    assert!(matches!(err, EvalError::Interrupted));
    let path = records_path(split.path(), "math500", "sampling");
    assert_eq!(read_records(&path).unwrap().len(), 3);
    // A kill in the middle of a write leaves a partial line.
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"id\": \"test/alg")
        .unwrap();
    let mut resumed = Vec::new();
    let again = evaluate(
        &generator,
        "math500",
        &problems,
        &Strategy::Sampling,
        &options(split.path()),
        |r| {
            resumed.push(r.id.clone());
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    assert_eq!(resumed.len(), 2, "only the unfinished problems run again");
    assert_eq!(timeless(read_records(&path).unwrap()), expected);
    assert_eq!(
        (again.problems, again.correct, again.tokens, &again.stages),
        (
            report.problems,
            report.correct,
            report.tokens,
            &report.stages
        )
    );
    // A finished run does nothing more.
    let mut more = 0;
    evaluate(
        &generator,
        "math500",
        &problems,
        &Strategy::Sampling,
        &options(split.path()),
        |_| {
            more += 1;
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    assert_eq!(more, 0);
    // Summary and table, written atomically next to the records.
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(split.path().join("math500.sampling.json")).unwrap())
            .unwrap();
    assert_eq!(summary["problems"], 5);
    let md = std::fs::read_to_string(split.path().join("report.md")).unwrap();
    assert!(md.contains("| math500 | sampling |"), "{md}");
}

#[test]
fn existing_outputs_are_graded_without_a_model() {
    let problems = Benchmark::Math500.load(&data_dir()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let outputs = dir.path().join("outputs.jsonl");
    let mut text = String::new();
    for (i, p) in problems.iter().take(5).enumerate() {
        let Task::Math { answer } = &p.task else {
            panic!()
        };
        let output = if i == 4 {
            "The answer is 123456789.".to_string()
        } else {
            format!("so it is $\\boxed{{{answer}}}$")
        };
        text.push_str(&serde_json::json!({"id": p.id, "output": output}).to_string());
        text.push('\n');
    }
    std::fs::write(&outputs, &text).unwrap();
    let out = dir.path().join("graded");
    let report = grade_outputs(&outputs, "math500", &problems, "imported", &options(&out)).unwrap();
    assert_eq!((report.problems, report.correct), (5, 4));
    assert_eq!(report.stages.get("string"), Some(&4));
    // A directory of output files works the same.
    let several = dir.path().join("several");
    std::fs::create_dir_all(&several).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(several.join("a.jsonl"), lines[..2].join("\n")).unwrap();
    std::fs::write(several.join("b.jsonl"), lines[2..].join("\n")).unwrap();
    std::fs::write(several.join("notes.txt"), "not read").unwrap();
    let again = grade_outputs(&several, "math500", &problems, "imported", &options(&out)).unwrap();
    assert_eq!((again.problems, again.correct), (5, 4));
    std::fs::write(&outputs, "{\"id\": \"nope\", \"output\": \"1\"}\n").unwrap();
    assert!(matches!(
        grade_outputs(&outputs, "math500", &problems, "x", &options(&out)),
        Err(EvalError::UnknownProblem { .. })
    ));
    std::fs::write(&outputs, "{\"output\": \"1\"}\n").unwrap();
    let err = grade_outputs(&outputs, "math500", &problems, "x", &options(&out)).unwrap_err();
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn strategies_parse_and_misfits_are_refused() {
    for (name, want) in [
        ("sampling", Strategy::Sampling),
        ("greedy", Strategy::Greedy),
        ("self-consistency", Strategy::SelfConsistency { n: 4 }),
        ("self-consistency-8", Strategy::SelfConsistency { n: 8 }),
        ("refinement", Strategy::Refinement { rounds: 3 }),
        ("refinement-2", Strategy::Refinement { rounds: 2 }),
    ] {
        assert_eq!(Strategy::from_name(name).unwrap(), want);
        assert_eq!(Strategy::from_name(&want.name()).unwrap(), want);
    }
    assert!(matches!(
        Strategy::from_name("em-inf").unwrap(),
        Strategy::EmInf(_)
    ));
    for bad in ["beam", "self-consistency-0", "refinement-x", ""] {
        assert!(
            matches!(Strategy::from_name(bad), Err(EvalError::Strategy(_))),
            "{bad}"
        );
    }
    let (model, tok) = tiny();
    let generator = Generator::new(&model, &tok);
    let dir = tempfile::tempdir().unwrap();
    let code = Benchmark::HumanEval.load(&data_dir()).unwrap();
    let err = evaluate(
        &generator,
        "humaneval",
        &code,
        &Strategy::SelfConsistency { n: 2 },
        &options(dir.path()),
        |_| ControlFlow::Continue(()),
    )
    .unwrap_err();
    assert!(matches!(err, EvalError::Strategy(_)));
    let zero = EvalOptions {
        batch_size: 0,
        ..options(dir.path())
    };
    assert!(matches!(
        evaluate(
            &generator,
            "math500",
            &short_problems(),
            &Strategy::Greedy,
            &zero,
            |_| ControlFlow::Continue(())
        ),
        Err(EvalError::InvalidOption(_))
    ));
}

#[test]
fn every_strategy_runs_end_to_end() {
    let (model, tok) = tiny();
    let generator = Generator::new(&model, &tok);
    let dir = tempfile::tempdir().unwrap();
    let problems = short_problems();
    let opts = EvalOptions {
        limit: Some(2),
        max_new_tokens: 4,
        ..options(dir.path())
    };
    for strategy in [
        Strategy::Greedy,
        Strategy::from_name("em-inf").unwrap(),
        Strategy::from_name("adaptive-temperature").unwrap(),
        Strategy::SelfConsistency { n: 3 },
        Strategy::Refinement { rounds: 2 },
    ] {
        // Refinement's second prompt holds the first prompt, its output and the question again.
        let problems: Vec<_> = match strategy {
            Strategy::Refinement { .. } => problems
                .iter()
                .filter(|p| p.question.len() < 25)
                .cloned()
                .collect(),
            _ => problems.clone(),
        };
        let report = evaluate(&generator, "math500", &problems, &strategy, &opts, |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(report.problems, 2, "{}", strategy.name());
        let records = read_records(&records_path(dir.path(), "math500", &strategy.name())).unwrap();
        let expected_tokens = match strategy {
            Strategy::SelfConsistency { n } => 4 * n,
            Strategy::Refinement { rounds } => 4 * rounds,
            _ => 4,
        };
        assert!(
            records
                .iter()
                .all(|r| r.tokens <= expected_tokens && r.tokens > 0),
            "{}: {records:?}",
            strategy.name()
        );
    }
    // A code problem (short enough for the fixture's context): graded in the sandbox, and the
    // tiny model's output does not pass.
    let code = vec![em_eval::Problem {
        id: "double".into(),
        benchmark: "mine".into(),
        question: "def double(x):".into(),
        task: Task::Code {
            harness: em_eval::problems::CodeHarness::Mbpp {
                test_imports: vec![],
                tests: vec!["assert double(2) == 4".into()],
            },
            reference_cpu_seconds: None,
        },
    }];
    let opts = EvalOptions {
        code_instruction: String::new(),
        ..opts
    };
    let report = evaluate(&generator, "mine", &code, &Strategy::Greedy, &opts, |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!((report.problems, report.correct), (1, 0), "{report:?}");
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert_eq!(md.lines().count(), 2 + 5 + 1, "{md}");
}

/// Run identity: resuming into a directory whose run was made with another strategy
/// configuration or model is refused with the differing field named; asked for, it becomes a new
/// run beside the old one, and each later resume finds its own run again.
#[test]
fn a_resume_with_another_configuration_is_refused_or_becomes_a_new_run() {
    let (model, tok) = tiny();
    let generator = Generator::new(&model, &tok);
    let dir = tempfile::tempdir().unwrap();
    let problems = short_problems();
    let opts = EvalOptions {
        limit: Some(1),
        max_new_tokens: 2,
        model: "tiny".into(),
        ..options(dir.path())
    };
    let em_inf = |kl_weight| {
        Strategy::EmInf(em_infer::EmInfConfig {
            kl_weight,
            ..Default::default()
        })
    };
    let run = |strategy: &Strategy, opts: &EvalOptions| {
        evaluate(&generator, "math500", &problems, strategy, opts, |_| {
            ControlFlow::Continue(())
        })
    };
    let first = run(&em_inf(0.05), &opts).unwrap();
    assert_eq!(first.problems, 1);
    let manifest = dir.path().join("math500.em-inf.manifest.json");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    assert_eq!(written["strategy"]["kl_weight"], 0.05);
    assert_eq!(written["model"], "tiny");

    // Another KL weight: refused, naming the field and both values.
    let err = run(&em_inf(0.01), &opts).unwrap_err();
    let EvalError::ManifestMismatch { difference, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(difference.field, "strategy.kl_weight");
    assert_eq!(
        (difference.existing.as_str(), difference.requested.as_str()),
        ("0.05", "0.01")
    );
    // Another model, or another token limit: refused too.
    let other_model = EvalOptions {
        model: "other".into(),
        ..opts.clone()
    };
    let err = run(&em_inf(0.05), &other_model).unwrap_err();
    assert!(
        matches!(&err, EvalError::ManifestMismatch { difference, .. } if difference.field == "model"),
        "{err}"
    );
    // A larger limit is the same run: it resumes.
    let more = EvalOptions {
        limit: Some(2),
        ..opts.clone()
    };
    assert_eq!(run(&em_inf(0.05), &more).unwrap().problems, 2);

    // Asked for, the other configuration becomes run `em-inf-2`, and resumes there.
    let new_run = EvalOptions {
        on_mismatch: em_eval::OnMismatch::NewRun,
        ..opts.clone()
    };
    let second = run(&em_inf(0.01), &new_run).unwrap();
    assert_eq!(second.strategy, "em-inf-2");
    assert!(dir.path().join("math500.em-inf-2.jsonl").exists());
    assert_eq!(
        read_records(&records_path(dir.path(), "math500", "em-inf"))
            .unwrap()
            .len(),
        2
    );
    let again = run(&em_inf(0.01), &new_run).unwrap();
    assert_eq!((again.strategy.as_str(), again.problems), ("em-inf-2", 1));
    // Records without a manifest are not adopted.
    std::fs::write(dir.path().join("math500.greedy.jsonl"), "{}\n").unwrap();
    let err = run(&Strategy::Greedy, &opts).unwrap_err();
    assert!(matches!(err, EvalError::ManifestMissing { .. }), "{err}");
}
