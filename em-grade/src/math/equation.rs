//! The equation stage: two equations are the same equation when `lhs − rhs` of one is a
//! non-zero constant multiple of `lhs − rhs` of the other (`0 = x^2+4x+20` and `x^2+4x+20=0`,
//! `y = 2x+3` and `2x - y + 3 = 0`, `\log_2 x = -1` and `-1 = \log_2 x`). Checked numerically:
//! both differences are evaluated at random points of their variables, the constant is taken
//! from one point and must hold at every other.

use std::collections::BTreeMap;
use std::time::Instant;

use super::expr::{self, Expr};
use super::normalize::is_variable;

/// Relative tolerance of the proportionality check (per point).
const TOLERANCE: f64 = 1e-6;
/// Points where both differences are defined and non-zero that must agree.
const NEEDED: usize = 3;

/// The two sides of `s` when it is a single equation: exactly one `=`, outside brackets, and no
/// inequality or `\pm`.
pub(crate) fn split_equation(s: &str) -> Option<(&str, &str)> {
    const NOT_AN_EQUATION: [&str; 9] = [
        "<", ">", "\\le", "\\ge", "\\ne", "\\approx", "\\in", "\\pm", "\\mp",
    ];
    if s.matches('=').count() != 1 || NOT_AN_EQUATION.iter().any(|m| s.contains(m)) {
        return None;
    }
    let at = s.find('=')?;
    let (lhs, rhs) = (&s[..at], &s[at + 1..]);
    let depth = lhs.chars().fold(0i32, |d, c| match c {
        '(' | '[' | '{' => d + 1,
        ')' | ']' | '}' => d - 1,
        _ => d,
    });
    (depth == 0 && !lhs.is_empty() && !rhs.is_empty()).then_some((lhs, rhs))
}

/// `x = 3`, `f(x) = \frac{\pi}{2}`, `3 = x`: a variable given a constant value. Such answers
/// are compared by their value (the `x = 3` rule of normalisation), not as equations: `2x = 6`
/// is not the answer `x = 3`.
fn is_assignment(lhs: &str, rhs: &str) -> bool {
    let constant = |s: &str| expr::parse(s).is_some_and(|e| e.variables().is_empty());
    (is_variable(lhs) && constant(rhs)) || (is_variable(rhs) && constant(lhs))
}

/// Whether `p` and `r` (normalised, equations kept whole) are both single equations, neither a
/// variable assignment, and the same equation up to a non-zero constant factor.
pub(crate) fn equations_match(p: &str, r: &str, deadline: Instant) -> bool {
    let (Some((pl, pr)), Some((rl, rr))) = (split_equation(p), split_equation(r)) else {
        return false;
    };
    if is_assignment(pl, pr) || is_assignment(rl, rr) {
        return false;
    }
    let parse = |s: &str| expr::parse(s);
    let (Some(pl), Some(pr), Some(rl), Some(rr)) = (parse(pl), parse(pr), parse(rl), parse(rr))
    else {
        return false;
    };
    let mut vars: Vec<String> = [&pl, &pr, &rl, &rr]
        .iter()
        .flat_map(|e| e.variables())
        .collect();
    vars.sort();
    vars.dedup();
    if vars.is_empty() {
        return false;
    }
    let mut ratio: Option<f64> = None;
    let mut agreed = 0;
    // Points in [0.5, 2.5], then, for equations undefined there, in [-10, 10].
    for k in 0..32 {
        if Instant::now() > deadline {
            return false;
        }
        if k == 16 && agreed >= NEEDED {
            break;
        }
        let (low, width) = if k < 16 { (0.5, 2.0) } else { (-10.0, 20.0) };
        let values: BTreeMap<String, f64> = vars
            .iter()
            .enumerate()
            .map(|(i, v)| (v.clone(), low + width * super::points::unit(k, i)))
            .collect();
        match (difference(&pl, &pr, &values), difference(&rl, &rr, &values)) {
            (None, None) => continue,
            (Some(a), Some(b)) => match (a, b) {
                // Both sides hold at this point: no information.
                (None, None) => continue,
                (Some(a), Some(b)) => {
                    let c = *ratio.get_or_insert(a / b);
                    if !c.is_finite() || c == 0.0 {
                        return false;
                    }
                    let scaled = c * b;
                    if (a - scaled).abs() > TOLERANCE * a.abs().max(scaled.abs()) {
                        return false;
                    }
                    agreed += 1;
                }
                _ => return false,
            },
            _ => return false,
        }
    }
    agreed >= NEEDED
}

/// `lhs − rhs` at `values`: `None` where undefined, `Some(None)` where it is zero (relative to
/// the sides' size), `Some(Some(d))` otherwise.
fn difference(lhs: &Expr, rhs: &Expr, values: &BTreeMap<String, f64>) -> Option<Option<f64>> {
    let (l, r) = (lhs.eval(values)?, rhs.eval(values)?);
    let d = l - r;
    Some((d.abs() > 1e-9 * l.abs().max(r.abs()).max(1e-300)).then_some(d))
}
