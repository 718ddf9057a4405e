//! Samples and prompt files (typed errors naming the line), and the step → batch order.

use std::collections::BTreeSet;

use em_train::TrainError;
use em_train::data::{batch_indices, cursor, permutation, read_prompts, read_samples};

fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.jsonl");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn samples_read_ids_and_bad_lines_are_named() {
    let (_d, path) = write(
        "{\"prompt_ids\": [1, 2], \"response_ids\": [3]}\n\n{\"prompt_ids\": [4], \"response_ids\": [5, 6]}\n",
    );
    let s = read_samples(&path, None, 10).unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s[1].response_ids, vec![5, 6]);

    for (text, line, needle) in [
        (
            "{\"prompt_ids\": [1], \"response_ids\": [2]}\nnot json\n",
            2,
            "invalid JSON",
        ),
        ("[1, 2]\n", 1, "object"),
        ("{\"prompt_ids\": [1]}\n", 1, "response_ids"),
        (
            "{\"prompt_ids\": [1], \"response_ids\": [10]}\n",
            1,
            "vocabulary",
        ),
        (
            "{\"prompt_ids\": [1], \"response_ids\": [-1]}\n",
            1,
            "not a token id",
        ),
        ("{\"prompt_ids\": [1], \"response_ids\": []}\n", 1, "empty"),
        (
            "{\"prompt_ids\": [], \"response_ids\": [1]}\n",
            1,
            "prompt is empty",
        ),
        ("{\"question\": \"x\"}\n", 1, "expected"),
    ] {
        let (_d, path) = write(text);
        match read_samples(&path, None, 10) {
            Err(TrainError::Data {
                line: l, message, ..
            }) => {
                assert_eq!(l, line, "{text}");
                assert!(message.contains(needle), "{text}: {message}");
            }
            other => panic!("{text}: {other:?}"),
        }
    }
    let (_d, path) = write("{\"prompt\": \"a\", \"response\": \"b\"}\n");
    assert!(matches!(
        read_samples(&path, None, 10),
        Err(TrainError::NeedsTokenizer(_))
    ));
    let (_d, path) = write("\n");
    assert!(matches!(
        read_samples(&path, None, 10),
        Err(TrainError::NoData(_))
    ));
}

#[test]
fn text_samples_encode_without_special_tokens_or_eos() {
    let device = burn::tensor::Device::default();
    let tiny = em_models::testing::tiny_pretrained(em_models::testing::Tiny::Qwen2Tied, &device, 1)
        .unwrap();
    let tok = &tiny.pretrained.tokenizer;
    let (_d, path) = write("{\"prompt\": \"What is 12 + 30?\", \"response\": \" 42\"}\n");
    let s = read_samples(&path, Some(tok), 320).unwrap();
    assert_eq!(
        s[0].prompt_ids,
        tok.encode("What is 12 + 30?", false).unwrap()
    );
    assert_eq!(s[0].response_ids, tok.encode(" 42", false).unwrap());
    assert!(
        !s[0]
            .response_ids
            .iter()
            .any(|id| tok.eos_ids().contains(id))
    );
}

#[test]
fn prompts_file_reads_the_field() {
    let (_d, path) = write("{\"problem\": \"a\"}\n{\"problem\": \"b\", \"x\": 1}\n");
    let read = read_prompts(&path, "problem", None).unwrap();
    assert_eq!(read, vec![("a".to_string(), None), ("b".to_string(), None)]);
    let (_d, path) =
        write("{\"problem\": \"a\", \"answer\": 4.5}\n{\"problem\": \"b\", \"answer\": \"x\"}\n");
    let read = read_prompts(&path, "problem", Some("answer")).unwrap();
    assert_eq!(read[0].1.as_deref(), Some("4.5"));
    assert_eq!(read[1].1.as_deref(), Some("x"));
    let (_d, path) = write("{\"problem\": \"a\"}\n{\"question\": \"b\"}\n");
    assert!(matches!(
        read_prompts(&path, "problem", None),
        Err(TrainError::Data { line: 2, .. })
    ));
}

#[test]
fn batches_walk_epochs_in_order_or_shuffled() {
    // 5 items, batches of 2: file order wraps around.
    assert_eq!(batch_indices(5, 2, 1, None), vec![0, 1]);
    assert_eq!(batch_indices(5, 2, 3, None), vec![4, 0]);
    assert_eq!(batch_indices(5, 2, 4, None), vec![1, 2]);
    assert_eq!(cursor(5, 2, 3), (1, 1));
    // Shuffled: every epoch is a permutation, epochs differ, and a step's batch depends only
    // on the step (what exact resume relies on).
    let p0 = permutation(7, 9, 0);
    let p1 = permutation(7, 9, 1);
    assert_eq!(p0.iter().copied().collect::<BTreeSet<_>>().len(), 7);
    assert_ne!(p0, p1);
    let all: Vec<usize> = (1..=7)
        .flat_map(|s| batch_indices(7, 2, s, Some(9)))
        .collect();
    assert_eq!(&all[..7], &p0[..]);
    assert_eq!(&all[7..14], &p1[..]);
    assert_eq!(batch_indices(7, 2, 5, Some(9)), all[8..10].to_vec());
}
