//! A small parser and evaluator for LaTeX / plain math expressions: numbers, variables
//! (`x`, `a_1`, `\theta`), `+ - * / ^ !`, implicit multiplication (`2x`, `3\sqrt{2}`, `xy`),
//! `\frac{a}{b}`, `\sqrt{x}`, `\sqrt[n]{x}`, `\cdot`, `\times`, `\div`, `|x|`, `\pi`, `e`,
//! `\infty`, and the functions `\sin \cos \tan \sec \csc \cot \arcsin \arccos \arctan \ln \log
//! \exp` (with `\sin^2 x` powers, and `\log_b x`). Used by the numeric, equation and symbolic
//! comparison stages; evaluation (real, and complex for the imaginary unit) is in `eval.rs`.

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A number.
    Num(f64),
    /// A variable by name.
    Var(String),
    /// `-x`.
    Neg(Box<Expr>),
    /// `a + b`.
    Add(Box<Expr>, Box<Expr>),
    /// `a - b`.
    Sub(Box<Expr>, Box<Expr>),
    /// `a · b`.
    Mul(Box<Expr>, Box<Expr>),
    /// `a / b`.
    Div(Box<Expr>, Box<Expr>),
    /// `a ^ b`.
    Pow(Box<Expr>, Box<Expr>),
    /// A function of one argument.
    Func(Func, Box<Expr>),
}

/// The functions [`Expr`] knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Func {
    Sin,
    Cos,
    Tan,
    Sec,
    Csc,
    Cot,
    Asin,
    Acos,
    Atan,
    Ln,
    Log10,
    Exp,
    Sqrt,
    Abs,
    Factorial,
    Floor,
    Ceil,
}

impl Expr {
    /// The variables it mentions.
    pub fn variables(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out.sort();
        out.dedup();
        out
    }

    fn collect(&self, out: &mut Vec<String>) {
        match self {
            Expr::Num(_) => {}
            Expr::Var(v) => out.push(v.clone()),
            Expr::Neg(a) | Expr::Func(_, a) => a.collect(out),
            Expr::Add(a, b)
            | Expr::Sub(a, b)
            | Expr::Mul(a, b)
            | Expr::Div(a, b)
            | Expr::Pow(a, b) => {
                a.collect(out);
                b.collect(out);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Ident(String),
    Cmd(String),
    Sym(char),
}

fn tokenize(s: &str) -> Option<Vec<Tok>> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            out.push(Tok::Num(text.parse().ok()?));
        } else if c == '\\' {
            let start = i + 1;
            i += 1;
            while i < chars.len() && chars[i].is_ascii_alphabetic() {
                i += 1;
            }
            if i == start {
                // `\{`, `\|` and the like: a symbol.
                out.push(Tok::Sym(*chars.get(i)?));
                i += 1;
            } else {
                let name: String = chars[start..i].iter().collect();
                // `\ln x` and `\theta x` lose their space in normalisation: `\lnx` is `\ln x`.
                match known_prefix(&name).filter(|p| p.len() < name.len()) {
                    Some(known) => {
                        out.push(Tok::Cmd(known.to_string()));
                        out.extend(
                            name[known.len()..]
                                .chars()
                                .map(|c| Tok::Ident(c.to_string())),
                        );
                    }
                    None => out.push(Tok::Cmd(name)),
                }
            }
        } else if c.is_ascii_alphabetic() {
            // Letters are single-letter variables (xy = x·y), except known function names.
            let start = i;
            while i < chars.len() && chars[i].is_ascii_alphabetic() {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if matches!(
                word.as_str(),
                "sin"
                    | "cos"
                    | "tan"
                    | "sec"
                    | "csc"
                    | "cot"
                    | "ln"
                    | "log"
                    | "exp"
                    | "sqrt"
                    | "arcsin"
                    | "arccos"
                    | "arctan"
                    | "pi"
            ) {
                out.push(Tok::Cmd(word));
            } else {
                for ch in word.chars() {
                    out.push(Tok::Ident(ch.to_string()));
                }
            }
        } else if "+-*/^()[]{}|!_,=<>'".contains(c) {
            out.push(Tok::Sym(c));
            i += 1;
        } else {
            return None;
        }
    }
    Some(out)
}

/// Parses `s`; `None` if it is not an expression this parser understands.
pub fn parse(s: &str) -> Option<Expr> {
    let tokens = tokenize(s)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        depth: 0,
    };
    let e = p.expr()?;
    (p.pos == p.tokens.len()).then_some(e)
}

struct Parser {
    tokens: Vec<Tok>,
    pos: usize,
    depth: usize,
}

const MAX_DEPTH: usize = 200;

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Sym(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Option<Expr> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        let mut left = self.term()?;
        loop {
            if self.eat('+') {
                left = Expr::Add(Box::new(left), Box::new(self.term()?));
            } else if self.eat('-') {
                left = Expr::Sub(Box::new(left), Box::new(self.term()?));
            } else {
                break;
            }
        }
        self.depth -= 1;
        Some(left)
    }

    fn term(&mut self) -> Option<Expr> {
        let mut left = self.unary()?;
        loop {
            if self.eat('*') || self.eat_cmd(&["cdot", "times"]) {
                left = Expr::Mul(Box::new(left), Box::new(self.unary()?));
            } else if self.eat('/') || self.eat_cmd(&["div"]) {
                left = Expr::Div(Box::new(left), Box::new(self.unary()?));
            } else if self.starts_primary() {
                // Implicit multiplication binds like `*` (2x/3 = (2x)/3).
                left = Expr::Mul(Box::new(left), Box::new(self.power()?));
            } else {
                break;
            }
        }
        Some(left)
    }

    fn eat_cmd(&mut self, names: &[&str]) -> bool {
        if let Some(Tok::Cmd(c)) = self.peek()
            && names.contains(&c.as_str())
        {
            self.pos += 1;
            return true;
        }
        false
    }

    fn starts_primary(&self) -> bool {
        match self.peek() {
            Some(Tok::Num(_)) | Some(Tok::Ident(_)) => true,
            Some(Tok::Sym(c)) => matches!(c, '(' | '{' | '['),
            Some(Tok::Cmd(c)) => {
                !matches!(c.as_str(), "cdot" | "times" | "div" | "rfloor" | "rceil")
            }
            None => false,
        }
    }

    fn unary(&mut self) -> Option<Expr> {
        if self.eat('-') {
            return Some(Expr::Neg(Box::new(self.unary()?)));
        }
        if self.eat('+') {
            return self.unary();
        }
        self.power()
    }

    fn power(&mut self) -> Option<Expr> {
        let base = self.postfix()?;
        if self.eat('^') {
            let exponent = self.exponent()?;
            return Some(Expr::Pow(Box::new(base), Box::new(exponent)));
        }
        Some(base)
    }

    /// An exponent: a braced group, or a single (signed) primary: `x^2y` = `x^2·y`.
    fn exponent(&mut self) -> Option<Expr> {
        if self.eat('-') {
            return Some(Expr::Neg(Box::new(self.exponent()?)));
        }
        if let Some(Tok::Num(x)) = self.peek().cloned() {
            // `x^23` in LaTeX means x^2·3 only with braces missing; take the whole number.
            self.pos += 1;
            return Some(Expr::Num(x));
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Option<Expr> {
        let mut e = self.primary()?;
        while self.eat('!') {
            e = Expr::Func(Func::Factorial, Box::new(e));
        }
        Some(e)
    }

    fn group(&mut self) -> Option<Expr> {
        if !self.eat('{') {
            return None;
        }
        let e = self.expr()?;
        self.eat('}').then_some(e)
    }

    /// A braced group or, LaTeX-style, a single token.
    fn argument(&mut self) -> Option<Expr> {
        if self.peek() == Some(&Tok::Sym('{')) {
            return self.group();
        }
        match self.tokens.get(self.pos).cloned()? {
            Tok::Num(x) => {
                self.pos += 1;
                Some(Expr::Num(x))
            }
            Tok::Ident(v) => {
                self.pos += 1;
                Some(Expr::Var(v))
            }
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> Option<Expr> {
        let tok = self.tokens.get(self.pos).cloned()?;
        self.pos += 1;
        match tok {
            Tok::Num(x) => Some(Expr::Num(x)),
            Tok::Ident(v) => {
                if v == "e" {
                    return Some(Expr::Num(std::f64::consts::E));
                }
                Some(Expr::Var(self.subscript(v)?))
            }
            Tok::Sym('(') | Tok::Sym('[') => {
                let e = self.expr()?;
                (self.eat(')') || self.eat(']')).then_some(e)
            }
            Tok::Sym('{') => {
                let e = self.expr()?;
                self.eat('}').then_some(e)
            }
            Tok::Sym('|') => {
                let e = self.expr()?;
                self.eat('|').then(|| Expr::Func(Func::Abs, Box::new(e)))
            }
            Tok::Cmd(c) => self.command(&c),
            Tok::Sym(_) => None,
        }
    }

    /// `a_1`, `a_{12}`, `x_n` → one variable name.
    fn subscript(&mut self, base: String) -> Option<String> {
        if !self.eat('_') {
            return Some(base);
        }
        let sub = match self.tokens.get(self.pos).cloned()? {
            Tok::Num(x) => {
                self.pos += 1;
                format!("{x}")
            }
            Tok::Ident(v) => {
                self.pos += 1;
                v
            }
            Tok::Sym('{') => {
                self.pos += 1;
                let mut name = String::new();
                while let Some(t) = self.tokens.get(self.pos).cloned() {
                    self.pos += 1;
                    match t {
                        Tok::Sym('}') => break,
                        Tok::Num(x) => name.push_str(&format!("{x}")),
                        Tok::Ident(v) | Tok::Cmd(v) => name.push_str(&v),
                        Tok::Sym(c) => name.push(c),
                    }
                }
                name
            }
            _ => return None,
        };
        Some(format!("{base}_{sub}"))
    }

    fn command(&mut self, name: &str) -> Option<Expr> {
        let func = match name {
            "frac" | "dfrac" | "tfrac" => {
                let num = self.argument()?;
                let den = self.argument()?;
                return Some(Expr::Div(Box::new(num), Box::new(den)));
            }
            "sqrt" => {
                let index = if self.eat('[') {
                    let e = self.expr()?;
                    self.eat(']').then_some(e)?
                } else {
                    Expr::Num(2.0)
                };
                let radicand = self.argument()?;
                return Some(Expr::Pow(
                    Box::new(radicand),
                    Box::new(Expr::Div(Box::new(Expr::Num(1.0)), Box::new(index))),
                ));
            }
            "pi" => return Some(Expr::Num(std::f64::consts::PI)),
            "binom" | "dbinom" | "tbinom" => {
                // C(n, k) = n! / (k! (n − k)!): defined at integer points only.
                let n = self.argument()?;
                let k = self.argument()?;
                let fact = |e: Expr| Expr::Func(Func::Factorial, Box::new(e));
                let n_minus_k = Expr::Sub(Box::new(n.clone()), Box::new(k.clone()));
                return Some(Expr::Div(
                    Box::new(fact(n)),
                    Box::new(Expr::Mul(Box::new(fact(k)), Box::new(fact(n_minus_k)))),
                ));
            }
            "lfloor" | "lceil" => {
                let e = self.expr()?;
                let close = if name == "lfloor" { "rfloor" } else { "rceil" };
                if !self.eat_cmd(&[close]) {
                    return None;
                }
                let f = if name == "lfloor" {
                    Func::Floor
                } else {
                    Func::Ceil
                };
                return Some(Expr::Func(f, Box::new(e)));
            }
            "infty" => return Some(Expr::Num(f64::INFINITY)),
            "sin" => Func::Sin,
            "cos" => Func::Cos,
            "tan" => Func::Tan,
            "sec" => Func::Sec,
            "csc" => Func::Csc,
            "cot" => Func::Cot,
            "arcsin" => Func::Asin,
            "arccos" => Func::Acos,
            "arctan" => Func::Atan,
            "ln" => Func::Ln,
            "log" if self.eat('_') => {
                // `\log_2 x`, `\log_{b}(x)` = ln x / ln b; `\log_28` (`\log_2 8` without its
                // space) is log base 2 of 8, as in LaTeX.
                if let Some(Tok::Num(x)) = self.peek().cloned()
                    && x.fract() == 0.0
                    && (10.0..1e15).contains(&x)
                {
                    let digits = format!("{x}");
                    let (first, rest) = digits.split_at(1);
                    self.tokens[self.pos] = Tok::Num(rest.parse().ok()?);
                    self.tokens.insert(self.pos, Tok::Num(first.parse().ok()?));
                }
                let base = self.argument()?;
                let power = self.function_power()?;
                let ln = Expr::Func(Func::Ln, Box::new(self.function_argument()?));
                let log = Expr::Div(Box::new(ln), Box::new(Expr::Func(Func::Ln, Box::new(base))));
                return Some(match power {
                    Some(p) => Expr::Pow(Box::new(log), Box::new(p)),
                    None => log,
                });
            }
            "log" => Func::Log10,
            "exp" => Func::Exp,
            greek if is_greek(greek) => {
                return Some(Expr::Var(self.subscript(format!("\\{greek}"))?));
            }
            _ => return None,
        };
        self.apply(func)
    }

    /// A function applied to what follows: `\sin x`, `\sin(2x)`, `\sin^2 x` = (sin x)^2.
    fn apply(&mut self, func: Func) -> Option<Expr> {
        let power = self.function_power()?;
        let applied = Expr::Func(func, Box::new(self.function_argument()?));
        Some(match power {
            Some(p) => Expr::Pow(Box::new(applied), Box::new(p)),
            None => applied,
        })
    }
}

impl Parser {
    /// The power written on a function name (`\sin^2`): `Some(None)` when there is none.
    fn function_power(&mut self) -> Option<Option<Expr>> {
        if self.eat('^') {
            Some(Some(self.exponent()?))
        } else {
            Some(None)
        }
    }

    /// A function's argument: a bracketed group, or `x`, `2`, `2x` (`\sin 2x` = sin(2x), as
    /// usually meant).
    fn function_argument(&mut self) -> Option<Expr> {
        if matches!(self.peek(), Some(Tok::Sym('(' | '{' | '['))) {
            return self.primary();
        }
        let mut a = self.postfix()?;
        while matches!(self.peek(), Some(Tok::Ident(_))) {
            a = Expr::Mul(Box::new(a), Box::new(self.postfix()?));
        }
        Some(a)
    }
}

/// The commands the parser knows, other than Greek letters.
const COMMANDS: [&str; 28] = [
    "frac", "dfrac", "tfrac", "sqrt", "pi", "binom", "dbinom", "tbinom", "lfloor", "lceil",
    "rfloor", "rceil", "infty", "sin", "cos", "tan", "sec", "csc", "cot", "arcsin", "arccos",
    "arctan", "ln", "log", "exp", "cdot", "times", "div",
];

/// `name` itself when the parser knows it, else a known command followed by one letter (`lnx`,
/// `thetax`), if it is one; not `sinh`, `cdots` and the like, which are other commands.
fn known_prefix(name: &str) -> Option<&'static str> {
    if matches!(
        name,
        "sinh" | "cosh" | "tanh" | "coth" | "sech" | "csch" | "cdots"
    ) {
        return None;
    }
    COMMANDS
        .iter()
        .copied()
        .chain(GREEK)
        .filter(|c| name == *c || (name.starts_with(c) && name.len() == c.len() + 1))
        .max_by_key(|c| c.len())
}

fn is_greek(name: &str) -> bool {
    GREEK.contains(&name)
}

const GREEK: [&str; 32] = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "varepsilon",
    "zeta",
    "eta",
    "theta",
    "vartheta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "rho",
    "sigma",
    "tau",
    "phi",
    "varphi",
    "chi",
    "psi",
    "omega",
    "Gamma",
    "Delta",
    "Theta",
    "Lambda",
    "Sigma",
    "Phi",
    "Psi",
    "Omega",
];
