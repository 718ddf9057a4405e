//! Deciding whether a predicted answer equals the reference: normalised string match (and
//! multiple-choice letters), then numbers, then structures (tuples, intervals, sets, matrices,
//! lists) element by element, then equations as equations (`equation.rs`), then a symbolic stage
//! that compares expressions numerically at random points (over the complex numbers when an
//! answer mentions `i`).
//!
//! Deliberate choices where the reference Python graders (Qwen2.5-Math's and PRIME's, on sympy's
//! `parse_latex` / latex2sympy; "Qwen" below is Qwen2.5-Math's `grader.py` / `parser.py`) are
//! wrong; each has a test in `tests/math_grading.rs`:
//! - **accepted** although the Python graders reject them: units (`5\text{ cm}`, `10 inches`),
//!   degree signs, `x = 3` against `3`, swapped equation sides (`3 = x`), reordered factors and
//!   terms (`(x+1)(x-1)` vs `(x-1)(x+1)`, decided symbolically), reordered unordered lists
//!   (`1, 2` vs `2, 1`; sets `\{..\}` likewise);
//!   - an answer stated on a last `Answer: X` / `**Final Answer:** $X$` line without `\boxed`
//!     (extraction, `extract.rs`; Qwen's `extract_answer` takes the last number there);
//!   - the same equation rearranged or scaled (`0 = x^2+4x+20` vs `x^2+4x+20=0`, `y = 2x+3` vs
//!     `2x - y + 3 = 0` or `2y = 4x + 6`): Qwen first strips a left side of at most two
//!     characters (`0 =`, `y =`) and compares two equations' `lhs - rhs` only up to sign;
//!   - complex numbers with `i` the imaginary unit (`(1+i)^2` vs `2i`, `\sqrt{-4}` vs `2i`,
//!     `\frac{1}{1+i}` vs `\frac{1-i}{2}`): sympy's `parse_latex` reads `i` as a plain symbol;
//!   - a choice letter however it is dressed (`\textbf{(A)}`, `(A) 12`) against the reference
//!     `(A)`: Qwen matches choices only against a bare `A`..`E` and unwraps only `\text{}`;
//!   - mixed numbers (`137\frac{1}{2}` = 137.5), which a LaTeX parser reads as a product (68.5);
//! - **rejected** although the Python graders accept them: an open bracket against a closed one
//!   (`(0, 1]` vs `[0, 1]`: different sets), a list missing an element, and integers that differ
//!   at all (`123456789` vs `123456790` lies within 1e-4 relative, but integers are compared
//!   exactly); percentages still match their fraction (`50` vs `0.5`) as the graders do;
//!   - words of four letters or more are text, not products of their letters (`listen` vs
//!     `silent`, which sympy finds equal).
//!
//! Two different equations are never equal however they are written (`x^2+4x+20=0` vs
//! `x^2+4x+21=0`), and `2x = 6` is not the answer `x = 3`: an assignment is compared by its value.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::equation::equations_match;
use super::eval::{Complex, eval_complex};
use super::expr::{self, Expr};
use super::normalize::{normalize, normalize_keeping_equation};

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
    /// Two equations, the same up to a non-zero constant factor (`y = 2x+3` vs `2x-y+3=0`).
    Equation,
    /// Expressions equal at several random points.
    Symbolic,
    /// No stage matched (the answer is wrong, or unreadable).
    NoMatch,
    /// There was no predicted answer.
    NoAnswer,
}

impl Stage {
    /// The snake-case name (`string`, `numeric`, ..., `no_answer`), as serialised.
    pub fn name(self) -> &'static str {
        match self {
            Stage::String => "string",
            Stage::Numeric => "numeric",
            Stage::Structure => "structure",
            Stage::Equation => "equation",
            Stage::Symbolic => "symbolic",
            Stage::NoMatch => "no_match",
            Stage::NoAnswer => "no_answer",
        }
    }
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
    if let Some(ok) = choices_match(&p, &r) {
        return verdict(ok, if ok { Stage::String } else { Stage::NoMatch });
    }
    if let Some((_, text)) = labelled_option(&p) {
        // `(C) 15` against the value `15`: the option's text is the answer.
        return answers_match(text, reference);
    }
    if p.len() > MAX_PARSE_LEN || r.len() > MAX_PARSE_LEN || is_word(&p) || is_word(&r) {
        // Words are not products of their letters (`listen` is not `silent`).
        return verdict(false, Stage::NoMatch);
    }
    if let Some(ok) = numbers_match(&p, &r) {
        return verdict(ok, if ok { Stage::Numeric } else { Stage::NoMatch });
    }
    let deadline = Instant::now() + STAGE_BUDGET;
    if let Some(ok) = structures_match(&p, &r, deadline) {
        return verdict(ok, if ok { Stage::Structure } else { Stage::NoMatch });
    }
    // Normalisation never adds a `=`: only a pair that has one on each side can be two
    // equations, so the second normalisation is skipped for every other pair.
    if prediction.contains('=') && reference.contains('=') {
        let deadline = Instant::now() + STAGE_BUDGET;
        let (pe, re) = (
            normalize_keeping_equation(prediction),
            normalize_keeping_equation(reference),
        );
        if pe.len() <= MAX_PARSE_LEN
            && re.len() <= MAX_PARSE_LEN
            && equations_match(&pe, &re, deadline)
        {
            return verdict(true, Stage::Equation);
        }
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

/// A word of text (`diverges`, `Evelyn`, `east`): four letters or more, none of them a
/// function name the expression parser knows (`cotx` is `\cot x`).
fn is_word(s: &str) -> bool {
    const FUNCTIONS: [&str; 10] = [
        "sin", "cos", "tan", "sec", "csc", "cot", "log", "exp", "sqrt", "ln",
    ];
    let lower = s.to_ascii_lowercase();
    s.len() >= 4
        && s.chars().all(|c| c.is_ascii_alphabetic())
        && !FUNCTIONS.iter().any(|f| lower.contains(f))
}

/// A multiple-choice letter: `C` or `(C)` (`\text{(C)}`, `\textbf{(C)}` once normalised).
fn choice(s: &str) -> Option<char> {
    let inner = s
        .strip_prefix('(')
        .and_then(|x| x.strip_suffix(')'))
        .unwrap_or(s);
    let mut chars = inner.chars();
    let c = chars.next()?;
    (c.is_ascii_uppercase() && chars.next().is_none()).then_some(c)
}

/// Against a reference that is a choice letter: `Some(verdict)` when the prediction is one too,
/// or a labelled option (`(C) 12`).
fn choices_match(p: &str, r: &str) -> Option<bool> {
    let wanted = choice(r)?;
    let given = choice(p).or_else(|| labelled_option(p).map(|(c, _)| c))?;
    Some(given == wanted)
}

/// `(C) 12` → (`C`, `12`): a choice letter in brackets followed by the option's text, naming no
/// other option (`(A)(C)` is not an answer).
fn labelled_option(p: &str) -> Option<(char, &str)> {
    let bracketed = |t: &str| t.get(..3).filter(|h| h.starts_with('(')).and_then(choice);
    let c = bracketed(p)?;
    let text = p.get(3..).filter(|t| !t.is_empty())?;
    let several = text
        .char_indices()
        .any(|(i, _)| bracketed(&text[i..]).is_some());
    (!several).then_some((c, text))
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

/// A mixed number, `137\frac{1}{2}` = 137.5 (MATH writes some answers so; read as a product
/// it would be 68.5, which nobody means).
fn mixed_number(s: &str) -> Option<f64> {
    let (whole, fraction) = s.split_once("\\frac{")?;
    let (num, den) = fraction.strip_suffix('}')?.split_once("}{")?;
    let digits = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit());
    let body = whole.strip_prefix('-').unwrap_or(whole);
    if !(digits(body) && digits(num) && digits(den)) {
        return None;
    }
    let (w, n, d): (f64, f64, f64) = (body.parse().ok()?, num.parse().ok()?, den.parse().ok()?);
    if d == 0.0 || n >= d {
        return None;
    }
    let value = w + n / d;
    Some(if whole.starts_with('-') {
        -value
    } else {
        value
    })
}

/// A constant expression's value (no variables).
fn constant(s: &str) -> Option<f64> {
    literal(s).or_else(|| mixed_number(s)).or_else(|| {
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
/// is a mismatch. When that fails and an answer mentions `i`, the same is tried with `i` the
/// imaginary unit (`-8-2i` vs `-2i-8`, `(1+i)^2` vs `2i`, `\sqrt{-4}` vs `2i`).
fn symbolic_match(p: &str, r: &str, deadline: Instant) -> bool {
    let (Some(a), Some(b)) = (expr::parse(p), expr::parse(r)) else {
        return false;
    };
    let mut vars = a.variables();
    vars.extend(b.variables());
    vars.sort();
    vars.dedup();
    let real = |e: &Expr, v: &BTreeMap<String, f64>| e.eval(v).map(|re| Complex { re, im: 0.0 });
    if agree_at_points(&vars, deadline, |v| (real(&a, v), real(&b, v))) {
        return true;
    }
    if !vars.iter().any(|v| v == "i") {
        return false;
    }
    vars.retain(|v| v != "i");
    agree_at_points(&vars, deadline, |v| {
        (eval_complex(&a, v), eval_complex(&b, v))
    })
}

/// The point loop of [`symbolic_match`]: `values` gives both sides at a point.
fn agree_at_points(
    vars: &[String],
    deadline: Instant,
    values: impl Fn(&BTreeMap<String, f64>) -> (Option<Complex>, Option<Complex>),
) -> bool {
    let real = |k: usize, i: usize| 0.5 + 2.0 * super::points::unit(k, i);
    let needed = if vars.is_empty() { 1 } else { 3 };
    // Some(true): both defined and equal; Some(false): both undefined; None: a mismatch.
    let compare = |point: BTreeMap<String, f64>| -> Option<bool> {
        match values(&point) {
            (Some(x), Some(y)) => close_complex(x, y).then_some(true),
            (None, None) => Some(false),
            _ => None,
        }
    };
    let mut agreed = 0;
    for k in 0..if vars.is_empty() { 1 } else { 12 } {
        if Instant::now() > deadline {
            return false;
        }
        match compare(
            vars.iter()
                .enumerate()
                .map(|(i, v)| (v.clone(), real(k, i)))
                .collect(),
        ) {
            Some(defined) => agreed += usize::from(defined),
            None => return false,
        }
    }
    if agreed < needed {
        for k in 1..=8u32 {
            let point = vars
                .iter()
                .enumerate()
                .map(|(i, v)| (v.clone(), f64::from(1 + (k + i as u32 * 3) % 8)))
                .collect();
            match compare(point) {
                Some(defined) => agreed += usize::from(defined),
                None => return false,
            }
        }
    }
    if agreed < needed {
        return false;
    }
    // Wider points, negative ones included: where both sides are defined they must agree
    // (`\lfloor n/5 \rfloor` is not 0, `|x|` is not `x`); a point where only one side is
    // defined is skipped (`\ln(x^2)` and `2\ln x`).
    for k in 0..if vars.is_empty() { 0 } else { 12 } {
        if Instant::now() > deadline {
            return false;
        }
        let point = vars
            .iter()
            .enumerate()
            .map(|(i, v)| (v.clone(), 5.0 * real(12 + k, i) - 12.5))
            .collect();
        if let (Some(x), Some(y)) = values(&point)
            && !close_complex(x, y)
        {
            return false;
        }
    }
    true
}

fn close_complex(x: Complex, y: Complex) -> bool {
    let diff = Complex {
        re: x.re - y.re,
        im: x.im - y.im,
    }
    .abs();
    diff <= SYMBOLIC_TOLERANCE * x.abs().max(y.abs()) || diff <= 1e-9
}

/// Parses an expression for callers that want the AST (e.g. reports).
pub fn parse_expression(s: &str) -> Option<Expr> {
    expr::parse(&normalize(s))
}
