//! Every shipped benchmark loads with its documented size; malformed files give errors that
//! name the file, the line and the field.
#![allow(clippy::unwrap_used)]

use em_grade::GradeError;
use em_grade::problems::{Benchmark, JsonlFields, Task, data_dir, load_jsonl};

#[test]
fn every_benchmark_loads_with_its_size() {
    let sizes = [
        (Benchmark::Math500, 500),
        (Benchmark::Aime, 90),
        (Benchmark::Amc, 83),
        (Benchmark::Minerva, 272),
        (Benchmark::OlympiadBench, 675),
        (Benchmark::LeetCode, 180),
        (Benchmark::HumanEval, 164),
        (Benchmark::Mbpp, 399),
    ];
    for (b, n) in sizes {
        let problems = b.load(&data_dir()).unwrap();
        assert_eq!(problems.len(), n, "{}", b.name());
        assert!(
            problems
                .iter()
                .all(|p| p.benchmark == b.name() && !p.question.is_empty())
        );
        assert_eq!(b.is_code(), matches!(problems[0].task, Task::Code { .. }));
        assert_eq!(Benchmark::from_name(b.name()), Some(b));
    }
    // Spot checks of conversions: AMC's float answers, Minerva's boxed answers, OlympiadBench lists.
    let amc = Benchmark::Amc.load(&data_dir()).unwrap();
    assert_eq!(
        amc[0].task,
        Task::Math {
            answer: "142".into()
        }
    );
    let minerva = Benchmark::Minerva.load(&data_dir()).unwrap();
    assert_eq!(
        minerva[0].task,
        Task::Math {
            answer: "1.6".into()
        }
    );
    let math = Benchmark::Math500.load(&data_dir()).unwrap();
    assert_eq!(math[0].id, "test/algebra/4.json");
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn malformed_files_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let fields = JsonlFields {
        id: "id",
        question: "q",
        answer: "a",
    };
    let ok = write(
        &dir,
        "ok.jsonl",
        "{\"id\": 1, \"q\": \"1+1\", \"a\": 2}\n\n{\"id\": \"x\", \"q\": \"2+2\", \"a\": \"4\"}\n",
    );
    let problems = load_jsonl(&ok, "mine", &fields).unwrap();
    assert_eq!(problems.len(), 2);
    assert_eq!(problems[0].id, "1");
    assert_eq!(problems[0].task, Task::Math { answer: "2".into() });

    let cases = [
        (
            "{\"id\": 1, \"q\": \"x\", \"a\": 2}\n{\"id\": 2, \"q\": \"y\"\n",
            "line 2",
            "invalid JSON",
        ),
        (
            "{\"id\": 1, \"q\": \"x\", \"a\": 2}\n{\"id\": 2, \"a\": 3}\n",
            "line 2",
            "field `q`: missing",
        ),
        (
            "{\"id\": 1, \"q\": 5, \"a\": 2}\n",
            "line 1",
            "field `q`: expected a string",
        ),
        (
            "{\"id\": [1], \"q\": \"x\", \"a\": 2}\n",
            "line 1",
            "field `id`",
        ),
        (
            "{\"id\": 1, \"q\": \"x\", \"a\": 2}\n{\"id\": 1, \"q\": \"y\", \"a\": 3}\n",
            "duplicate id `1`",
            "",
        ),
    ];
    for (i, (text, where_, what)) in cases.iter().enumerate() {
        let path = write(&dir, &format!("bad{i}.jsonl"), text);
        let err = load_jsonl(&path, "mine", &fields).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("bad{i}.jsonl")) && msg.contains(where_) && msg.contains(what),
            "{msg}"
        );
    }
    let err = load_jsonl(&dir.path().join("absent.jsonl"), "mine", &fields).unwrap_err();
    assert!(matches!(err, GradeError::Io { .. }));

    // The shipped formats, damaged.
    let data = tempfile::tempdir().unwrap();
    for b in Benchmark::ALL {
        let target = data.path().join(b.file());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(data_dir().join(b.file()), &target).unwrap();
    }
    std::fs::write(
        data.path().join(Benchmark::Math500.file()),
        r#"{"problem": {"0": "x"}, "expected_answer": {"0": 3}, "id": {"0": "a"}}"#,
    )
    .unwrap();
    let msg = Benchmark::Math500
        .load(data.path())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("math_test_cleaned.json") && msg.contains("expected_answer"),
        "{msg}"
    );
    std::fs::write(
        data.path().join(Benchmark::Mbpp.file()),
        r#"[{"task_id": 1, "prompt": "p", "test_list": "assert f()"}]"#,
    )
    .unwrap();
    let msg = Benchmark::Mbpp.load(data.path()).unwrap_err().to_string();
    assert!(
        msg.contains("new_mbpp.json") && msg.contains("line 1") && msg.contains("test_list"),
        "{msg}"
    );
    std::fs::write(
        data.path().join(Benchmark::Minerva.file()),
        "{\"problem\": \"p\", \"solution\": \"no box\", \"idx\": 0}\n",
    )
    .unwrap();
    let msg = Benchmark::Minerva
        .load(data.path())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("solution") && msg.contains("boxed"), "{msg}");
    std::fs::write(data.path().join(Benchmark::HumanEval.file()), b"not gzip").unwrap();
    assert!(Benchmark::HumanEval.load(data.path()).is_err());
}
