//! Answer normalisation: the rewriting every answer goes through before it is compared
//! (`docs/method.md` §4). Each rule is one small function, listed in [`normalize`].

use super::extract::{last_boxed, matching_brace};

/// Normalises an answer string: the result of two equivalent answers is often identical, and is
/// what the later comparison stages parse. Rules, in order:
/// 1. surrounding `$`, `\(..\)`, `\[..\]` and a `\boxed{}` wrapper removed;
/// 2. `\left`, `\right`, `\bigl`, `\Big` and the like, `\displaystyle`, spacing commands (`\!`,
///    `\,`, `\;`, `\:`, `\ `, `~`, `\quad`) removed; `\dfrac`/`\tfrac` → `\frac`, `\lbrace` →
///    `\{`, `\lvert` → `|`, `∞` and `infinity` → `\infty`;
/// 3. degree signs (`^\circ`, `^{\circ}`, `°`), percent signs and dollar signs removed;
/// 4. `\text{..}`-like groups (`\text`, `\textbf`, `\textit`, `\textsf`, `\emph`, `\mbox`,
///    `\mathrm`, `\mathbf`, `\mathit`, `\operatorname`, ...): a unit after a value is dropped
///    (`5\text{ cm}^2` → `5`), anything else is unwrapped (`\text{(C)}` → `(C)`); a plain
///    trailing unit word after a number too (`10 inches` → `10`, but not `-8-2 i`, `3 n`);
/// 5. a number in words (`five`, `Twelve.`, `twenty-one`, `one hundred and five`) → its digits;
/// 6. white space removed; `\frac12` → `\frac{1}{2}`, `\sqrt2` → `\sqrt{2}`;
/// 7. thousands separators removed (`10,000`, `10{,}000`);
/// 8. `x = 3` → `3` when the left side is a single variable or function name (not `\log_2(x)`);
/// 9. a numeral's base subscript removed (`204_5` → `204`);
/// 10. a trailing `.` removed, a leading zero added (`.5` → `0.5`).
pub fn normalize(answer: &str) -> String {
    normalize_with(answer, true)
}

/// [`normalize`] without rule 8: an equation (`y = 2x + 3`) stays whole, for the equation stage.
pub(crate) fn normalize_keeping_equation(answer: &str) -> String {
    normalize_with(answer, false)
}

fn normalize_with(answer: &str, strip_variable: bool) -> String {
    let mut s = answer.trim().to_string();
    s = strip_wrappers(&s);
    s = strip_layout(&s);
    s = strip_marks(&s);
    s = strip_text_groups(&s);
    s = strip_plain_unit(&s);
    if let Some(n) = number_words(&s) {
        return n.to_string();
    }
    s.retain(|c| !c.is_whitespace());
    s = brace_short_arguments(&s);
    s = strip_thousands(&s);
    if strip_variable {
        s = strip_variable_prefix(&s);
    }
    s = strip_base_subscript(&s);
    s = fix_decimal_point(&s);
    s
}

fn strip_wrappers(s: &str) -> String {
    let mut s = s.trim().to_string();
    loop {
        let before = s.clone();
        if let Some(inner) = last_boxed(&s).filter(|_| s.starts_with("\\boxed")) {
            s = inner;
        }
        for (open, close) in [("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")] {
            if s.len() >= open.len() + close.len() && s.starts_with(open) && s.ends_with(close) {
                s = s[open.len()..s.len() - close.len()].trim().to_string();
            }
        }
        if s == before {
            return s;
        }
    }
}

fn strip_layout(s: &str) -> String {
    let mut s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac");
    for (from, to) in [
        ("∞", "\\infty"),
        ("Infinity", "\\infty"),
        ("infinity", "\\infty"),
        ("\\lbrace", "\\{"),
        ("\\rbrace", "\\}"),
        ("\\lvert", "|"),
        ("\\rvert", "|"),
    ] {
        s = s.replace(from, to);
    }
    for cmd in [
        "\\left",
        "\\right",
        "\\displaystyle",
        "\\textstyle",
        "\\bigl",
        "\\bigr",
        "\\Bigl",
        "\\Bigr",
        "\\biggl",
        "\\biggr",
        "\\Biggl",
        "\\Biggr",
        "\\big",
        "\\Big",
        "\\bigg",
        "\\Bigg",
    ] {
        s = remove_command(&s, cmd);
    }
    for spacing in ["\\qquad", "\\quad", "~"] {
        s = s.replace(spacing, " ");
    }
    // `\!`, `\,`, `\;`, `\:`, `\ ` — but not the second backslash of a `\\` line break.
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.peek() {
                Some('\\') => {
                    out.push_str("\\\\");
                    chars.next();
                }
                Some('!' | ',' | ';' | ':' | ' ') => {
                    out.push(' ');
                    chars.next();
                }
                _ => out.push(c),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Removes `cmd` where it is a whole command (not the prefix of a longer one: `\right` but not
/// `\rightarrow`).
fn remove_command(s: &str, cmd: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find(cmd) {
        let after = &rest[at + cmd.len()..];
        out.push_str(&rest[..at]);
        if after.starts_with(|c: char| c.is_ascii_alphabetic()) {
            out.push_str(cmd);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

fn strip_marks(s: &str) -> String {
    let mut s = s.to_string();
    for mark in [
        "^{\\circ}",
        "^\\circ",
        "{}^\\circ",
        "\\circ",
        "°",
        "\\%",
        "%",
        "\\$",
        "$",
    ] {
        s = s.replace(mark, "");
    }
    s
}

const TEXT_COMMANDS: [&str; 15] = [
    "\\textbf",
    "\\textit",
    "\\textrm",
    "\\textsf",
    "\\texttt",
    "\\textnormal",
    "\\textup",
    "\\text",
    "\\emph",
    "\\mbox",
    "\\mathrm",
    "\\mathbf",
    "\\mathit",
    "\\mathsf",
    "\\operatorname",
];

fn strip_text_groups(s: &str) -> String {
    let mut s = s.to_string();
    // Innermost-last: repeat until no text command is left.
    for _ in 0..32 {
        let Some((at, cmd)) = TEXT_COMMANDS
            .iter()
            .filter_map(|cmd| find_command(&s, cmd).map(|at| (at, *cmd)))
            .min_by_key(|(at, _)| *at)
        else {
            break;
        };
        let after = &s[at + cmd.len()..];
        let Some(open) = after.find('{').filter(|o| after[..*o].trim().is_empty()) else {
            // `\text` without a group: drop the command name.
            s = format!("{}{}", &s[..at], after);
            continue;
        };
        let inner_start = at + cmd.len() + open + 1;
        let Some(len) = matching_brace(&s[inner_start..]) else {
            break;
        };
        let content = s[inner_start..inner_start + len].to_string();
        let mut end = inner_start + len + 1;
        let before = s[..at].trim_end();
        let is_unit = !before.is_empty()
            && before.ends_with(|c: char| c.is_ascii_digit() || c == '}' || c == ')')
            && looks_like_unit(&content);
        let replacement = if is_unit {
            // Drop a power on the unit too: `\text{ cm}^2`, `\mathrm{m}^{3}`.
            let rest = &s[end..];
            if let Some(power) = rest.strip_prefix('^') {
                let skip = if let Some(group) = power.strip_prefix('{') {
                    matching_brace(group).map_or(0, |e| e + 2)
                } else {
                    power.chars().next().map_or(0, char::len_utf8)
                };
                end += 1 + skip;
            }
            String::new()
        } else {
            content
        };
        s = format!("{}{}{}", &s[..at], replacement, &s[end..]);
    }
    s
}

/// Position of `cmd` as a whole command in `s`.
fn find_command(s: &str, cmd: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = s[from..].find(cmd) {
        let at = from + at;
        let next = s[at + cmd.len()..].chars().next();
        if !next.is_some_and(|c| c.is_ascii_alphabetic()) {
            return Some(at);
        }
        from = at + cmd.len();
    }
    None
}

/// A unit: letters (and `/`, `^`, digits, `\`, spaces) with at least one letter, e.g.
/// ` cm`, `m/s`, `km^2`, `\mu m`, `degrees`, `inches`.
fn looks_like_unit(content: &str) -> bool {
    let t = content.trim();
    !t.is_empty()
        && t.chars().any(|c| c.is_alphabetic())
        && t.chars()
            .all(|c| c.is_alphabetic() || c.is_ascii_digit() || " /^\\-.{}*".contains(c))
        && !t.starts_with('(')
}

/// `10 inches` → `10`, `3.5 cm` → `3.5`: a number followed only by unit words.
fn strip_plain_unit(s: &str) -> String {
    let t = s.trim();
    let Some(space) = t.find(char::is_whitespace) else {
        return t.to_string();
    };
    let (head, tail) = (&t[..space], t[space..].trim());
    // A number (`-8`, `3.5`, `1,250`), not an expression (`-8-2 i` keeps its `i`).
    let body = head.strip_prefix('-').unwrap_or(head);
    let numeric = body.chars().all(|c| c.is_ascii_digit() || ".,".contains(c))
        && body.chars().any(|c| c.is_ascii_digit())
        && body.matches('.').count() <= 1;
    // Words, but not the imaginary unit, a constant written out or a lone letter that is
    // rather a variable (`3 i`, `2 pi`, `3 n`).
    let words = !matches!(tail, "i" | "pi" | "e" | "n" | "k" | "x" | "y" | "z")
        && tail.split_whitespace().all(|w| {
            w.chars()
                .all(|c| c.is_ascii_alphabetic() || c == '.' || c == '^' || c.is_ascii_digit())
                && w.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        });
    if numeric && words {
        head.to_string()
    } else {
        t.to_string()
    }
}

/// `\frac12` → `\frac{1}{2}`, `\frac1{2}` → `\frac{1}{2}`, `\sqrt2` → `\sqrt{2}`: one-character
/// arguments get braces.
fn brace_short_arguments(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut rest = s;
    loop {
        let next = ["\\frac", "\\sqrt"]
            .iter()
            .filter_map(|cmd| rest.find(cmd).map(|at| (at, *cmd)))
            .min_by_key(|(at, _)| *at);
        let Some((at, cmd)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at + cmd.len()]);
        rest = &rest[at + cmd.len()..];
        let args = if cmd == "\\frac" { 2 } else { 1 };
        for _ in 0..args {
            if rest.starts_with('[') {
                // \sqrt[3]{x}: copy the index
                if let Some(close) = rest.find(']') {
                    out.push_str(&rest[..=close]);
                    rest = &rest[close + 1..];
                }
            }
            if let Some(inner) = rest.strip_prefix('{') {
                match matching_brace(inner) {
                    Some(end) => {
                        out.push('{');
                        out.push_str(&inner[..=end]);
                        rest = &inner[end + 1..];
                    }
                    None => break,
                }
            } else if let Some(c) = rest.chars().next().filter(|c| c.is_ascii_alphanumeric()) {
                out.push('{');
                out.push(c);
                out.push('}');
                rest = &rest[c.len_utf8()..];
            } else {
                break;
            }
        }
    }
}

fn strip_thousands(s: &str) -> String {
    let s = s.replace("{,}", ",");
    let body = s.strip_prefix('-').unwrap_or(&s);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let groups: Vec<&str> = int.split(',').collect();
    let is_grouped = groups.len() > 1
        && (1..=3).contains(&groups[0].len())
        && groups[1..].iter().all(|g| g.len() == 3)
        && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_digit()))
        && frac.chars().all(|c| c.is_ascii_digit());
    if is_grouped { s.replace(',', "") } else { s }
}

/// `x=3` → `3`, `f(x)=x^2` → `x^2`, `3=x` → `3`, `x\in[0,1]` → `[0,1]`: one `=` (or `\in`) with a
/// lone variable or function name on one side.
fn strip_variable_prefix(s: &str) -> String {
    if let Some((lhs, rhs)) = s.split_once("\\in")
        && is_variable(lhs)
        && !rhs.is_empty()
    {
        return rhs.to_string();
    }
    if s.matches('=').count() != 1 || s.contains("\\le") || s.contains("\\ge") {
        return s.to_string();
    }
    let Some((lhs, rhs)) = s.split_once('=') else {
        return s.to_string();
    };
    if is_variable(lhs) && !rhs.is_empty() {
        rhs.to_string()
    } else if is_variable(rhs) && !lhs.is_empty() && !is_variable(lhs) {
        lhs.to_string()
    } else {
        s.to_string()
    }
}

/// A single variable: a letter or a Greek command, optionally subscripted, optionally applied
/// to a parenthesised argument list (`f(x)`, `a_{n}`, `\theta`); not a function the expression
/// parser knows (`\log_2(x)`, `\sin(x)`).
pub(crate) fn is_variable(s: &str) -> bool {
    const FUNCTIONS: [&str; 14] = [
        "sin", "cos", "tan", "sec", "csc", "cot", "arcsin", "arccos", "arctan", "ln", "log", "exp",
        "sqrt", "frac",
    ];
    let s = s.trim();
    let base_end = if let Some(rest) = s.strip_prefix('\\') {
        let name_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        if FUNCTIONS.contains(&&rest[..name_len]) {
            return false;
        }
        1 + name_len
    } else if s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        1
    } else {
        return false;
    };
    let mut rest = &s[base_end..];
    if let Some(sub) = rest.strip_prefix('_') {
        rest = if let Some(inner) = sub.strip_prefix('{') {
            match matching_brace(inner) {
                Some(e) => &inner[e + 1..],
                None => return false,
            }
        } else {
            sub.get(1..).unwrap_or_default()
        };
    }
    if let Some(args) = rest.strip_prefix('(') {
        return args.ends_with(')')
            && args[..args.len() - 1]
                .chars()
                .all(|c| c.is_ascii_alphabetic() || c == ',');
    }
    rest.is_empty()
}

/// `204_5` → `204`, `4343_{6}` → `4343`: a numeral with its base as a subscript (MATH's
/// reference answers give the numeral alone; the base is fixed by the question).
fn strip_base_subscript(s: &str) -> String {
    if let Some((numeral, base)) = s.split_once('_') {
        let base = base.trim_start_matches('{').trim_end_matches('}');
        if !numeral.is_empty()
            && numeral
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
            && numeral.chars().any(|c| c.is_ascii_digit())
            && !base.is_empty()
            && base.chars().all(|c| c.is_ascii_digit())
        {
            return numeral.to_string();
        }
    }
    s.to_string()
}

fn fix_decimal_point(s: &str) -> String {
    let mut s = s.trim_end_matches('.').to_string();
    if s.starts_with('.') {
        s.insert(0, '0');
    }
    if s.starts_with("-.") {
        s.insert(1, '0');
    }
    s
}

/// A number written in words, `zero` to the millions: `five`, `Twelve.`, `twenty-one`,
/// `one hundred and five`, `two thousand twenty-four`. `None` for anything else (`one two`,
/// `hundred`, `none`).
fn number_words(s: &str) -> Option<u64> {
    const UNITS: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 8] = [
        "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    #[derive(PartialEq)]
    enum Last {
        Start,
        Unit,
        Teen,
        Tens,
        Hundred,
        Scale,
    }
    let lower = s.trim().trim_end_matches('.').to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| c.is_whitespace() || c == '-')
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() || words.len() > 12 || words.last() == Some(&"and") {
        return None;
    }
    if words == ["zero"] {
        return Some(0);
    }
    let (mut total, mut current, mut last, mut scale_limit) = (0u64, 0u64, Last::Start, u64::MAX);
    for w in words {
        let open = matches!(last, Last::Start | Last::Hundred | Last::Scale);
        if let Some(n) = UNITS.iter().position(|u| *u == w).filter(|n| *n > 0) {
            let n = n as u64;
            if n < 10 && (open || last == Last::Tens) {
                last = Last::Unit;
            } else if n >= 10 && open {
                last = Last::Teen;
            } else {
                return None;
            }
            current += n;
        } else if let Some(t) = TENS.iter().position(|u| *u == w) {
            if !open {
                return None;
            }
            current += 20 + 10 * t as u64;
            last = Last::Tens;
        } else if w == "hundred" {
            if last != Last::Unit || current % 100 >= 10 || current >= 100 {
                return None;
            }
            current *= 100;
            last = Last::Hundred;
        } else if w == "and" {
            if last != Last::Hundred && last != Last::Scale {
                return None;
            }
        } else {
            let scale = match w {
                "thousand" => 1_000,
                "million" => 1_000_000,
                _ => return None,
            };
            if current == 0 || scale >= scale_limit || last == Last::Start {
                return None;
            }
            total += current * scale;
            current = 0;
            scale_limit = scale;
            last = Last::Scale;
        }
    }
    (last != Last::Start).then_some(total + current)
}
