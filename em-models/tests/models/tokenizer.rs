//! The tokenizer against HF `tokenizers` (Python) ids and the chat template against `jinja2`,
//! both recorded in `tests/fixtures/golden.json` by `gen_fixtures.py`.

use em_models::{Message, ModelError, Tokenizer};

use crate::common::*;

fn tokenizer() -> Tokenizer {
    Tokenizer::from_dir(fixture("qwen2-tied"), Some(320)).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn encode_matches_python_tokenizers_and_round_trips() {
    let tok = tokenizer();
    let golden = golden();
    for case in golden["encode"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let got = tok.encode(text, false).unwrap();
        assert_eq!(got, ids(&case["ids"]), "{text:?}");
        assert_eq!(tok.decode(&got, false).unwrap(), text);
    }
}

#[test]
fn chat_template_matches_jinja2() {
    let tok = tokenizer();
    let golden = golden();
    let chat = &golden["chat"];
    let messages: Vec<Message> = chat["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    let text = tok.apply_chat_template(&messages, true).unwrap();
    assert_eq!(text, chat["text"].as_str().unwrap());
    assert_eq!(tok.encode(&text, false).unwrap(), ids(&chat["ids"]));
    // special tokens are single ids
    let im_start = tok.token_to_id("<|im_start|>").unwrap();
    assert_eq!(tok.encode("<|im_start|>", false).unwrap(), vec![im_start]);
    // default system prompt, no generation prompt
    let text = tok.apply_chat_template(&messages[1..], false).unwrap();
    assert_eq!(
        text,
        chat["user_only_no_generation_prompt"].as_str().unwrap()
    );
    // skip_special_tokens drops the markers
    let plain = tok
        .decode(
            &tok.encode("<|im_start|>user\nhi<|im_end|>", false).unwrap(),
            true,
        )
        .unwrap();
    assert_eq!(plain, "user\nhi");
}

#[test]
fn special_ids_from_generation_and_tokenizer_config() {
    let tok = tokenizer();
    // generation_config.json eos [2, 0], config.json eos 2, tokenizer_config eos "<|im_end|>" = 2
    assert_eq!(tok.eos_ids(), &[2, 0]);
    assert_eq!(tok.pad_id(), Some(0));
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(2));
}

#[test]
fn tokenizer_larger_than_model_vocab_is_rejected() {
    let err = Tokenizer::from_dir(fixture("qwen2-tied"), Some(100)).unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::TokenizerVocab {
                vocab_size: 100,
                ..
            }
        ),
        "{err}"
    );
    // a larger embedding than the tokenizer (Qwen2.5's padding rows) is fine
    Tokenizer::from_dir(fixture("qwen2-tied"), Some(320)).unwrap();
}

#[test]
fn missing_or_malformed_tokenizer_files() {
    let dir = scratch_copy("qwen2-tied");
    std::fs::write(dir.path().join("tokenizer_config.json"), "{ nope").unwrap();
    let err = Tokenizer::from_dir(dir.path(), None).unwrap_err();
    assert!(matches!(err, ModelError::Json { .. }), "{err}");
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let err = Tokenizer::from_dir(dir.path(), None).unwrap_err();
    assert!(
        matches!(err, ModelError::Tokenizer { .. }) && err.to_string().contains("tokenizer.json"),
        "{err}"
    );
}

#[test]
fn no_or_broken_chat_template() {
    let dir = scratch_copy("qwen2-tied");
    std::fs::write(dir.path().join("tokenizer_config.json"), "{}").unwrap();
    let tok = Tokenizer::from_dir(dir.path(), None).unwrap();
    let err = tok
        .apply_chat_template(&[Message::user("x")], true)
        .unwrap_err();
    assert!(matches!(err, ModelError::NoChatTemplate { .. }), "{err}");
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"chat_template": "{% for %}"}"#,
    )
    .unwrap();
    let tok = Tokenizer::from_dir(dir.path(), None).unwrap();
    let err = tok
        .apply_chat_template(&[Message::user("x")], true)
        .unwrap_err();
    assert!(matches!(err, ModelError::Template { .. }), "{err}");
}
