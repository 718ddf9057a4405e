//! Deciding whether a predicted answer equals the reference: normalised string match, then
//! numbers, then structures (tuples, intervals, sets, matrices, lists) element by element, then
//! a symbolic stage that compares expressions numerically at random points.
//!
//! Deliberate choices where the reference Python graders are wrong (each has a test in
//! `tests/math_grading.rs`):
//! - **accepted** although the Python graders reject them: units (`5\text{ cm}`, `10 inches`),
//!   degree signs, `x = 3` against `3`, swapped equation sides (`3 = x`), reordered factors and
//!   terms (`(x+1)(x-1)` vs `(x-1)(x+1)`, decided symbolically), reordered unordered lists
//!   (`1, 2` vs `2, 1`; sets `\{..\}` likewise);
//! - **rejected** although the Python graders accept them: an open bracket against a closed one
//!   (`(0, 1]` vs `[0, 1]`: different sets), a list missing an element, and integers that differ
//!   at all (`123456789` vs `123456790` lies within 1e-4 relative, but integers are compared
//!   exactly); percentages still match their fraction (`50` vs `0.5`) as the graders do.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::expr::{self, Expr};
use super::normalize::normalize;

/// Which comparison stage decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Normalised strings are equal.
    String,
    /// Both are numbers (or constant expressions) within relative tolerance 1e-4, or the
    /// reference ×100 / ÷100; integers exactly.
    Numeric,
    /// Tuples, intervals, sets, matrices or lists, element by element.
    Structure,
    /// Expressions equal at several random points.
    Symbolic,
    /// No stage matched (the answer is wrong, or unreadable).
    NoMatch,
    /// There was no predicted answer.
    NoAnswer,
}

/// The outcome of [`answers_match`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    /// Whether the answers are equivalent.
    pub correct: bool,
    /// The stage that decided (for a wrong answer: [`Stage::NoMatch`] or [`Stage::NoAnswer`]).
    pub stage: Stage,
}

/// Relative tolerance of the numeric stage.
pub const NUMERIC_TOLERANCE: f64 = 1e-4;
/// Relative tolerance of the symbolic stage (per evaluation point).
pub const SYMBOLIC_TOLERANCE: f64 = 1e-6;
/// Time budget of the structure and symbolic stages, each.
pub const STAGE_BUDGET: Duration = Duration::from_millis(200);
/// Longest normalised answer the parsing stages look at.
const MAX_PARSE_LEN: usize = 2000;

/// Whether `prediction` and `reference` are the same mathematical answer; see the module docs.
pub fn answers_match(prediction: &str, reference: &str) -> Verdict {
    let verdict = |correct, stage| Verdict { correct, stage };
    if prediction.trim().is_empty() {
        return verdict(false, Stage::NoAnswer);
    }
    let (p, r) = (normalize(prediction), normalize(reference));
    if p == r || (is_plain_text(&p) && p.eq_ignore_ascii_case(&r)) {
        return verdict(true, Stage::String);
    }
    if p.len() > MAX_PARSE_LEN || r.len() > MAX_PARSE_LEN {
        return verdict(false, Stage::NoMatch);
    }
    if let Some(ok) = numbers_match(&p, &r) {
        return verdict(ok, if ok { Stage::Numeric } else { Stage::NoMatch });
    }
    let deadline = Instant::now() + STAGE_BUDGET;
    if let Some(ok) = structures_match(&p, &r, deadline) {
        return verdict(ok, if ok { Stage::Structure } else { Stage::NoMatch });
    }
    let deadline = Instant::now() + STAGE_BUDGET;
    if symbolic_match(&p, &r, deadline) {
        return verdict(true, Stage::Symbolic);
    }
    verdict(false, Stage::NoMatch)
}

fn is_plain_text(s: &str) -> bool {
    s.len() > 1
        && s.chars()
            .all(|c| c.is_ascii_alphabetic() || c == '(' || c == ')')
}

/// A plain number literal: `-12`, `3.5`, `1e3` is not (treated as an expression).
fn literal(s: &str) -> Option<f64> {
    let body = s.strip_prefix('-').unwrap_or(s);
    (!body.is_empty()
        && body.chars().all(|c| c.is_ascii_digit() || c == '.')
        && body.matches('.').count() <= 1)
        .then(|| s.parse().ok())
        .flatten()
}

fn is_integer_literal(s: &str) -> bool {
    let body = s.strip_prefix('-').unwrap_or(s);
    !body.is_empty() && body.chars().all(|c| c.is_ascii_digit())
}

/// A constant expression's value (no variables).
fn constant(s: &str) -> Option<f64> {
    literal(s).or_else(|| {
        let e = expr::parse(s)?;
        e.variables()
            .is_empty()
            .then(|| e.eval(&BTreeMap::new()))
            .flatten()
    })
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    if a == b {
        return true;
    }
    (a - b).abs() <= tolerance * a.abs().max(b.abs())
}

/// `Some(verdict)` when both sides are numbers/constant expressions, `None` otherwise.
fn numbers_match(p: &str, r: &str) -> Option<bool> {
    let (a, b) = (constant(p)?, constant(r)?);
    if is_integer_literal(p) && is_integer_literal(r) {
        // Integers exactly, without the ×100 rule: the ×100 rule exists for percentages and
        // would accept 100 against 1.
        return Some(
            p.trim_start_matches('-').trim_start_matches('0')
                == r.trim_start_matches('-').trim_start_matches('0')
                && p.starts_with('-') == r.starts_with('-'),
        );
    }
    Some(
        close(a, b, NUMERIC_TOLERANCE)
            || close(a, b * 100.0, NUMERIC_TOLERANCE)
            || close(a, b / 100.0, NUMERIC_TOLERANCE),
    )
}

/// A structured answer: its brackets and elements.
#[derive(Debug, Clone, PartialEq)]
struct Structure {
    open: char,
    close: char,
    items: Vec<String>,
    /// Rows of a matrix (`items` is then empty).
    rows: Vec<Vec<String>>,
}

fn parse_structure(s: &str) -> Option<Structure> {
    for env in ["pmatrix", "bmatrix", "matrix", "vmatrix"] {
        let begin = format!("\\begin{{{env}}}");
        let end = format!("\\end{{{env}}}");
        if let Some(inner) = s.strip_prefix(&begin).and_then(|x| x.strip_suffix(&end)) {
            let rows = inner
                .split("\\\\")
                .filter(|r| !r.is_empty())
                .map(|r| r.split('&').map(str::to_string).collect())
                .collect();
            return Some(Structure {
                open: 'm',
                close: 'm',
                items: Vec::new(),
                rows,
            });
        }
    }
    let (open, close, inner) =
        if let Some(inner) = s.strip_prefix("\\{").and_then(|x| x.strip_suffix("\\}")) {
            ('{', '}', inner)
        } else {
            let first = s.chars().next()?;
            let last = s.chars().last()?;
            if "([".contains(first) && ")]".contains(last) && s.len() >= 2 {
                (first, last, &s[1..s.len() - 1])
            } else {
                (' ', ' ', s)
            }
        };
    let items = split_top_level(inner);
    if open != ' ' && items.len() == 1 && !s.contains(',') {
        // A parenthesised single expression, not a structure.
        return None;
    }
    if open == ' ' && items.len() < 2 {
        return None;
    }
    Some(Structure {
        open,
        close,
        items,
        rows: Vec::new(),
    })
}

/// Splits at commas (and `\text{and}`-less semicolons) outside brackets.
fn split_top_level(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut current = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            '\\' => {
                current.push(c);
                if let Some(n) = chars.next() {
                    current.push(n);
                }
                continue;
            }
            ',' | ';' if depth == 0 => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    out.push(current);
    out.into_iter().filter(|x| !x.is_empty()).collect()
}

fn element_match(a: &str, b: &str, deadline: Instant) -> bool {
    if Instant::now() > deadline {
        return false;
    }
    a == b
        || numbers_match(a, b).unwrap_or(false)
        || structures_match(a, b, deadline).unwrap_or(false)
        || symbolic_match(a, b, deadline)
}

/// `Some(verdict)` when at least one side is a structure.
fn structures_match(p: &str, r: &str, deadline: Instant) -> Option<bool> {
    let (a, b) = (parse_structure(p), parse_structure(r));
    let (a, b) = match (a, b) {
        (Some(a), Some(b)) => (a, b),
        (None, None) => return None,
        _ => return Some(false),
    };
    if !a.rows.is_empty() || !b.rows.is_empty() {
        return Some(
            a.rows.len() == b.rows.len()
                && a.rows.iter().zip(&b.rows).all(|(x, y)| {
                    x.len() == y.len()
                        && x.iter().zip(y).all(|(u, v)| element_match(u, v, deadline))
                }),
        );
    }
    if a.items.len() != b.items.len() {
        return Some(false);
    }
    let unordered = |s: &Structure| s.open == '{' || s.open == ' ';
    if unordered(&a) && unordered(&b) {
        // Multiset matching: each reference element used once.
        let mut used = vec![false; b.items.len()];
        for x in &a.items {
            match (0..b.items.len()).find(|j| !used[*j] && element_match(x, &b.items[*j], deadline))
            {
                Some(j) => used[j] = true,
                None => return Some(false),
            }
        }
        return Some(true);
    }
    // Tuples and intervals: brackets must agree (an open end is not a closed one).
    Some(
        a.open == b.open
            && a.close == b.close
            && a.items
                .iter()
                .zip(&b.items)
                .all(|(x, y)| element_match(x, y, deadline)),
    )
}

/// Both sides parse as expressions and agree at several points: variables drawn in [0.5, 2.5]
/// from a fixed-seed sequence, then, for expressions defined only at integers (factorials,
/// binomials), the integer points 1..=8. Points where both sides are undefined are skipped; at
/// least 3 must be defined (1 without variables), and one side defined where the other is not
/// is a mismatch.
fn symbolic_match(p: &str, r: &str, deadline: Instant) -> bool {
    let (Some(a), Some(b)) = (expr::parse(p), expr::parse(r)) else {
        return false;
    };
    let mut vars = a.variables();
    vars.extend(b.variables());
    vars.sort();
    vars.dedup();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut real = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        0.5 + 2.0 * ((state >> 11) as f64 / (1u64 << 53) as f64)
    };
    let needed = if vars.is_empty() { 1 } else { 3 };
    // Some(true): both defined and equal; Some(false): both undefined; None: a mismatch.
    let compare = |values: BTreeMap<String, f64>| -> Option<bool> {
        match (a.eval(&values), b.eval(&values)) {
            (Some(x), Some(y)) => {
                (close(x, y, SYMBOLIC_TOLERANCE) || (x - y).abs() <= 1e-9).then_some(true)
            }
            (None, None) => Some(false),
            _ => None,
        }
    };
    let mut agreed = 0;
    for _ in 0..if vars.is_empty() { 1 } else { 12 } {
        if Instant::now() > deadline {
            return false;
        }
        match compare(vars.iter().map(|v| (v.clone(), real())).collect()) {
            Some(defined) => agreed += usize::from(defined),
            None => return false,
        }
    }
    if agreed < needed {
        for k in 1..=8u32 {
            let values = vars
                .iter()
                .enumerate()
                .map(|(i, v)| (v.clone(), f64::from(1 + (k + i as u32 * 3) % 8)))
                .collect();
            match compare(values) {
                Some(defined) => agreed += usize::from(defined),
                None => return false,
            }
        }
    }
    agreed >= needed
}

/// Parses an expression for callers that want the AST (e.g. reports).
pub fn parse_expression(s: &str) -> Option<Expr> {
    expr::parse(&normalize(s))
}
