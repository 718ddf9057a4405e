//! Finding the final answer in a model's output (`docs/method.md` §4), in this order of
//! precedence:
//! 1. the last `\boxed{..}` / `\fbox{..}` (braces matched, `\boxed 5` too);
//! 2. the last explicit statement of the answer, whichever comes last in the text: the phrases
//!    "The answer is" and "final answer is" (which covers Minerva's "Final Answer: The final
//!    answer is X. I hope it is correct."), or a line labelled as the answer (`Answer: X`,
//!    `**Answer:** X`, `Final answer: X`, `**Final Answer:** $X$`, a `### Final Answer` heading
//!    with the answer on the next line), with markdown bold, a trailing period, `$..$`, `\(..\)`
//!    and `\[..\]` removed;
//! 3. the last number in the text.

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
    /// A line labelled as the answer: `Answer: X`, `**Final Answer:** $X$`, or a `Final Answer`
    /// heading followed by the answer.
    AnswerLine,
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
    // The last explicit statement of the answer: a phrase or a labelled line, whichever comes
    // last in the text.
    let lower = text.to_ascii_lowercase();
    let mut best: Option<(usize, Extracted)> = None;
    let mut consider = |at: usize, answer: Option<String>, method| {
        if let Some(answer) = answer
            && best.as_ref().is_none_or(|(b, _)| at >= *b)
        {
            best = Some((at, Extracted { answer, method }));
        }
    };
    for (needle, method) in [
        ("final answer is", ExtractionMethod::FinalAnswerIs),
        ("the answer is", ExtractionMethod::AnswerIs),
    ] {
        // The last occurrence that states an answer (not "the answer is correct"). ASCII
        // lower-casing keeps byte offsets, so `at` indexes `text` too.
        if let Some((at, answer)) = lower.rmatch_indices(needle).find_map(|(at, _)| {
            let tail = text.get(at + needle.len()..).unwrap_or_default();
            answer_after(tail)
                .filter(|a| !is_commentary(a))
                .map(|a| (at, a))
        }) {
            consider(at, Some(answer), method);
        }
    }
    if let Some((at, answer)) = last_answer_line(text) {
        consider(at, Some(answer), ExtractionMethod::AnswerLine);
    }
    if let Some((_, extracted)) = best {
        return Some(extracted);
    }
    last_number(text).map(|answer| Extracted {
        answer,
        method: ExtractionMethod::LastNumber,
    })
}

/// The answer following "the answer is": up to the end of the line or the sentence, with
/// Minerva's "I hope it is correct" and surrounding `$` / `:` / `**` removed.
fn answer_after(tail: &str) -> Option<String> {
    let tail = tail.trim_start_matches([' ', '\t', ':', '*']);
    if tail.split('\n').next().is_none_or(|l| l.trim().is_empty()) {
        // "The final answer is:" with the answer on the next line(s).
        return answer_block(tail).and_then(|b| tidy(&b));
    }
    let line = tail.lines().next().unwrap_or_default();
    let line = line
        .split("I hope it is correct")
        .next()
        .unwrap_or_default();
    tidy(line)
}

/// An answer statement reduced to the answer: its first sentence, without a trailing remark
/// (`, since ...`, `(the number of ways)`), after its last ` is ` (`The area is $12$`), then
/// [`clean_answer`].
fn tidy(statement: &str) -> Option<String> {
    clean_answer(after_is(drop_remarks(first_sentence(statement.trim()))))
}

/// Up to the first sentence end: a '.' followed by white space or the end, outside `$..$` (not
/// a decimal point).
fn first_sentence(s: &str) -> &str {
    let mut in_math = false;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '$' {
            in_math = !in_math;
        }
        if c == '.' && !in_math && chars.peek().is_none_or(|(_, n)| n.is_whitespace()) {
            return &s[..i];
        }
    }
    s
}

/// Without a trailing remark outside math: `42, since ...`, `42 because ...`, `42 (the number of
/// ways)`.
fn drop_remarks(s: &str) -> &str {
    const REMARKS: [&str; 6] = [
        " since ",
        " because ",
        " which ",
        " where ",
        ", so ",
        " as ",
    ];
    let mut in_math = false;
    let mut s = s;
    for (i, c) in s.char_indices() {
        if c == '$' {
            in_math = !in_math;
        } else if !in_math && i > 0 && REMARKS.iter().any(|r| s[i..].starts_with(r)) {
            s = s[..i].trim_end_matches([',', ' ']);
            break;
        }
    }
    // A closing parenthesised remark: prose (a word of four letters or more, not a command).
    if let Some(inner_start) = s
        .strip_suffix(')')
        .filter(|b| !b.ends_with('\\'))
        .and_then(|body| {
            let mut depth = 0i32;
            body.char_indices().rev().find_map(|(i, c)| {
                match c {
                    ')' => depth += 1,
                    '(' if depth == 0 => return Some(i),
                    '(' => depth -= 1,
                    _ => {}
                }
                None
            })
        })
    {
        let inner = &s[inner_start + 1..s.len() - 1];
        let before = s[..inner_start].trim_end_matches('\\').trim_end();
        let prose = inner
            .split(|c: char| !c.is_ascii_alphabetic() && c != '\\')
            .any(|w| w.len() >= 4 && !w.starts_with('\\'));
        if prose && !before.is_empty() && !s[..inner_start].ends_with('\\') {
            return before;
        }
    }
    s
}

/// "the answer is correct because ...": a remark about the answer, not one.
fn is_commentary(answer: &str) -> bool {
    const WORDS: [&str; 12] = [
        "correct",
        "incorrect",
        "wrong",
        "right",
        "indeed",
        "consistent",
        "reasonable",
        "valid",
        "verified",
        "confirmed",
        "that",
        "this",
    ];
    let first = answer
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    WORDS.contains(&first.as_str())
}

/// Labels that open an answer line, lower case, longest first (`answer` last: it is a suffix of
/// the others).
const ANSWER_LABELS: [&str; 8] = [
    "the final answers",
    "the final answer",
    "final answers",
    "final answer",
    "correct answer",
    "the answer",
    "answers",
    "answer",
];

/// The last line labelled as the answer, with the byte offset of the line: `Answer: X`,
/// `**Answer:** X`, `**Final Answer:** $X$`, `Final answer: \(X\)`, `### Final Answer` with the
/// answer on the next line(s); markdown bold, a trailing period and math delimiters removed.
fn last_answer_line(text: &str) -> Option<(usize, String)> {
    let mut best = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        // The label opening the line, or "final answer:" later in it ("Thus, final answer: 5").
        let body = line.trim_start_matches(|c: char| c.is_whitespace() || "#>*_-".contains(c));
        let mut labels: Vec<(usize, &str, bool)> = ANSWER_LABELS
            .iter()
            .find(|l| {
                body.get(..l.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(l))
            })
            .map(|l| (line.len() - body.len(), &body[l.len()..], true))
            .into_iter()
            .collect();
        let lower = line.to_ascii_lowercase();
        labels.extend(
            lower
                .match_indices("final answer")
                .filter(|(at, _)| *at > line.len() - body.len())
                .map(|(at, l)| (at, &line[at + l.len()..], false)),
        );
        for (at, after_label, heading_ok) in labels {
            let Some(content) = label_content(after_label, heading_ok) else {
                continue;
            };
            let content_at = start + line.len() - content.len();
            let tail = text.get(content_at..).unwrap_or_default();
            if let Some(answer) = answer_block(tail).and_then(|b| tidy(&b)) {
                best = Some((start + at, answer));
            }
        }
    }
    best
}

/// What follows an answer label: after a `:` (markdown bold around either), or, for a label
/// alone on its line (`**Final Answer**`, `## Answer`) when `heading_ok`, the next lines. `None`
/// for `Answer the question`, `the answer is` (a phrase, handled elsewhere).
fn label_content(after_label: &str, heading_ok: bool) -> Option<&str> {
    let decoration = |c: char| c == '*' || c == '_' || c == ' ' || c == '\t';
    let rest = after_label.trim_start_matches(decoration);
    if let Some(after) = rest.strip_prefix(':') {
        Some(after.trim_start_matches(decoration))
    } else if heading_ok && rest.trim().is_empty() {
        Some(rest)
    } else {
        None
    }
}

/// The answer text starting at `tail`: the rest of the line or, when that is empty, the next
/// non-empty line; a display block (`$$..$$`, `\[..\]`) is taken whole across lines.
fn answer_block(tail: &str) -> Option<String> {
    let first_line = tail.split('\n').next().unwrap_or_default();
    let tail = if first_line.trim().is_empty() {
        tail.trim_start()
    } else {
        tail.trim_start_matches([' ', '\t'])
    };
    for (open, close) in [("$$", "$$"), ("\\[", "\\]")] {
        if let Some(inner) = tail.strip_prefix(open)
            && let Some(end) = inner.find(close)
        {
            return Some(format!("{open}{}{close}", &inner[..end]));
        }
    }
    let line = tail.split('\n').next().unwrap_or_default();
    let line = line
        .split("I hope it is correct")
        .next()
        .unwrap_or_default();
    (!line.trim().is_empty()).then(|| line.trim().to_string())
}

/// What follows the last ` is ` outside math and brackets in an answer sentence (`The area is
/// $12$` → `$12$`), or the whole text.
fn after_is(s: &str) -> &str {
    let (mut in_math, mut depth, mut cut) = (false, 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '$' => in_math = !in_math,
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            _ if !in_math && depth == 0 && s[i..].starts_with(" is ") => cut = i + " is ".len(),
            _ => {}
        }
    }
    &s[cut..]
}

/// Removes what surrounds an answer in prose: markdown bold, trailing sentence punctuation,
/// `$..$` / `$$..$$` / `\(..\)` / `\[..\]`, and words around a single math segment
/// (`$12$ square units` → `12`).
fn clean_answer(answer: &str) -> Option<String> {
    let mut s = answer.trim().to_string();
    for _ in 0..8 {
        let before = s.clone();
        s = s
            .trim_end_matches(['.', ',', ';'])
            .trim()
            .trim_start_matches("**")
            .trim_end_matches("**")
            .trim()
            .to_string();
        if let Some(segment) = single_math_segment(&s) {
            s = segment;
        }
        if s == before {
            break;
        }
    }
    (!s.is_empty()).then_some(s)
}

/// The inside of the only math segment of `s` when the text around it is words or
/// punctuation (no digits or operators): `$12$ square units`, `is $\frac12$`, `\(x+1\)`.
fn single_math_segment(s: &str) -> Option<String> {
    for (open, close) in [("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$")] {
        let Some(start) = s.find(open) else {
            continue;
        };
        let after = &s[start + open.len()..];
        let Some(len) = after.find(close) else {
            continue;
        };
        let (before, inner, rest) = (&s[..start], &after[..len], &after[len + close.len()..]);
        let prose = |t: &str| {
            !t.contains('$')
                && !t.contains('\\')
                && t.chars()
                    .all(|c| c.is_alphabetic() || c.is_whitespace() || ".,;:!'*".contains(c))
        };
        if prose(before) && prose(rest) && !inner.trim().is_empty() {
            return Some(inner.trim().to_string());
        }
        return None;
    }
    None
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
