//! Finding the final answer in a model's output (`../shared/docs/method.md` §4): the last
//! `\boxed{..}` / `\fbox{..}` (braces matched, `\boxed 5` too), then "The answer is", "final
//! answer is" (which covers Minerva's "Final Answer: The final answer is X. I hope it is
//! correct."), then the last number in the text.

/// How an answer was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtractionMethod {
    /// The last `\boxed{..}` or `\fbox{..}`.
    Boxed,
    /// After "The answer is" / "The answer is:".
    AnswerIs,
    /// After "final answer is" (Minerva's pattern included).
    FinalAnswerIs,
    /// The last number in the text.
    LastNumber,
}

/// An answer found in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The answer, as written (not normalised).
    pub answer: String,
    /// Which rule found it.
    pub method: ExtractionMethod,
}

/// The content of the last `\boxed{..}` or `\fbox{..}` in `text` (nested braces matched;
/// `\boxed 5` takes the next whitespace-delimited word). `None` if there is none or its braces
/// never close.
pub fn last_boxed(text: &str) -> Option<String> {
    let start = ["\\boxed", "\\fbox"]
        .iter()
        .filter_map(|cmd| text.rfind(cmd).map(|at| (at, at + cmd.len())))
        .max_by_key(|(at, _)| *at)?;
    let rest = &text[start.1..];
    let trimmed = rest.trim_start();
    if let Some(inner) = trimmed.strip_prefix('{') {
        return matching_brace(inner).map(|end| inner[..end].to_string());
    }
    if rest.starts_with(|c: char| c.is_whitespace()) {
        // `\boxed 5`: the next word, without a closing `$` or sentence punctuation.
        let word: String = trimmed
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '$')
            .collect();
        let word = word.trim_end_matches(['.', ',']);
        return (!word.is_empty()).then(|| word.to_string());
    }
    None
}

/// Byte index of the `}` closing a group whose `{` precedes `s`.
pub(crate) fn matching_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The final answer of a solution text, by the rules in the module docs.
pub fn extract_answer(text: &str) -> Option<Extracted> {
    if let Some(answer) = last_boxed(text) {
        return Some(Extracted {
            answer,
            method: ExtractionMethod::Boxed,
        });
    }
    let lower = text.to_ascii_lowercase();
    for (needle, method) in [
        ("final answer is", ExtractionMethod::FinalAnswerIs),
        ("the answer is", ExtractionMethod::AnswerIs),
    ] {
        if let Some(at) = lower.rfind(needle) {
            // ASCII lower-casing keeps byte offsets, so `at` indexes `text` too.
            let tail = text.get(at + needle.len()..).unwrap_or_default();
            if let Some(answer) = answer_after(tail) {
                return Some(Extracted { answer, method });
            }
        }
    }
    last_number(text).map(|answer| Extracted {
        answer,
        method: ExtractionMethod::LastNumber,
    })
}

/// The answer following "the answer is": up to the end of the line or the sentence, with
/// Minerva's "I hope it is correct" and surrounding `$` / `:` removed.
fn answer_after(tail: &str) -> Option<String> {
    let tail = tail.trim_start().trim_start_matches(':').trim_start();
    let line = tail.lines().next().unwrap_or_default();
    let line = line
        .split("I hope it is correct")
        .next()
        .unwrap_or_default();
    let mut answer = line.trim();
    // A sentence end: a '.' followed by a space or the end, outside `$..$` and not a decimal.
    let mut in_math = false;
    let bytes: Vec<char> = answer.chars().collect();
    let mut cut = answer.len();
    let mut offset = 0;
    for (i, c) in bytes.iter().enumerate() {
        if *c == '$' {
            in_math = !in_math;
        }
        if *c == '.' && !in_math {
            let next = bytes.get(i + 1);
            if next.is_none_or(|n| n.is_whitespace()) {
                cut = offset;
                break;
            }
        }
        offset += c.len_utf8();
    }
    answer = answer[..cut].trim();
    let answer = answer.trim_matches('$').trim();
    (!answer.is_empty()).then(|| answer.to_string())
}

/// The last number in `text` (integers, decimals, thousands separators, a leading minus sign,
/// simple fractions `a/b`).
pub fn last_number(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut best: Option<String> = None;
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            let start = if i > 0 && chars[i - 1] == '-' {
                i - 1
            } else {
                i
            };
            let mut j = i;
            while j < chars.len()
                && (chars[j].is_ascii_digit()
                    || ((chars[j] == '.' || chars[j] == ',' || chars[j] == '/')
                        && chars.get(j + 1).is_some_and(char::is_ascii_digit)))
            {
                j += 1;
            }
            let number: String = chars[start..j].iter().filter(|c| **c != ',').collect();
            best = Some(number);
            i = j;
        } else {
            i += 1;
        }
    }
    best
}
