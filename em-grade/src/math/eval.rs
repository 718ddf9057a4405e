//! Evaluating an [`Expr`]: over the reals ([`Expr::eval`], what the numeric, equation and
//! symbolic stages use), and over the complex numbers with `i` as the imaginary unit
//! ([`eval_complex`], what the symbolic stage uses when an answer mentions `i`: `-8-2i`,
//! `(1+i)^2`, `\sqrt{-2}`, `e^{i\pi/3}`).

use std::collections::BTreeMap;

use super::expr::{Expr, Func};

impl Expr {
    /// Evaluates with the given variable values; `None` for an unknown variable or a result
    /// that is not a finite real number.
    pub fn eval(&self, vars: &BTreeMap<String, f64>) -> Option<f64> {
        let v = match self {
            Expr::Num(x) => *x,
            Expr::Var(name) => *vars.get(name)?,
            Expr::Neg(a) => -a.eval(vars)?,
            Expr::Add(a, b) => a.eval(vars)? + b.eval(vars)?,
            Expr::Sub(a, b) => a.eval(vars)? - b.eval(vars)?,
            Expr::Mul(a, b) => a.eval(vars)? * b.eval(vars)?,
            Expr::Div(a, b) => a.eval(vars)? / b.eval(vars)?,
            Expr::Pow(a, b) => real_pow(a.eval(vars)?, b.eval(vars)?)?,
            Expr::Func(f, a) => real_func(*f, a.eval(vars)?)?,
        };
        v.is_finite().then_some(v)
    }
}

/// `base^exp` over the reals: odd roots of negatives (`x^(1/3)`) are real, other non-integer
/// powers of negatives are undefined.
fn real_pow(base: f64, exp: f64) -> Option<f64> {
    if base < 0.0 && exp.fract() != 0.0 {
        let inverse = 1.0 / exp;
        if (inverse - inverse.round()).abs() < 1e-9 && inverse.round() as i64 % 2 != 0 {
            Some(-(-base).powf(exp))
        } else {
            None
        }
    } else {
        Some(base.powf(exp))
    }
}

fn real_func(f: Func, x: f64) -> Option<f64> {
    let v = match f {
        Func::Sin => x.sin(),
        Func::Cos => x.cos(),
        Func::Tan => x.tan(),
        Func::Sec => 1.0 / x.cos(),
        Func::Csc => 1.0 / x.sin(),
        Func::Cot => 1.0 / x.tan(),
        Func::Asin => x.asin(),
        Func::Acos => x.acos(),
        Func::Atan => x.atan(),
        Func::Ln => x.ln(),
        Func::Log10 => x.log10(),
        Func::Exp => x.exp(),
        Func::Sqrt => x.sqrt(),
        Func::Abs => x.abs(),
        Func::Floor => x.floor(),
        Func::Ceil => x.ceil(),
        Func::Factorial => {
            if x < 0.0 || x.fract() != 0.0 || x > 170.0 {
                return None;
            }
            (1..=x as u64).map(|k| k as f64).product()
        }
    };
    v.is_finite().then_some(v)
}

/// A complex number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Complex {
    /// Real part.
    pub re: f64,
    /// Imaginary part.
    pub im: f64,
}

impl Complex {
    const I: Complex = Complex { re: 0.0, im: 1.0 };

    fn real(re: f64) -> Self {
        Complex { re, im: 0.0 }
    }

    fn is_real(self) -> bool {
        self.im == 0.0
    }

    fn add(self, o: Self) -> Self {
        Complex {
            re: self.re + o.re,
            im: self.im + o.im,
        }
    }

    fn sub(self, o: Self) -> Self {
        Complex {
            re: self.re - o.re,
            im: self.im - o.im,
        }
    }

    fn mul(self, o: Self) -> Self {
        Complex {
            re: self.re * o.re - self.im * o.im,
            im: self.re * o.im + self.im * o.re,
        }
    }

    fn div(self, o: Self) -> Option<Self> {
        let d = o.re * o.re + o.im * o.im;
        (d != 0.0).then(|| Complex {
            re: (self.re * o.re + self.im * o.im) / d,
            im: (self.im * o.re - self.re * o.im) / d,
        })
    }

    /// The modulus.
    pub fn abs(self) -> f64 {
        self.re.hypot(self.im)
    }

    fn exp(self) -> Self {
        let m = self.re.exp();
        Complex {
            re: m * self.im.cos(),
            im: m * self.im.sin(),
        }
    }

    /// The principal logarithm.
    fn ln(self) -> Option<Self> {
        (self.abs() != 0.0).then(|| Complex {
            re: self.abs().ln(),
            im: self.im.atan2(self.re),
        })
    }

    fn sin(self) -> Self {
        Complex {
            re: self.re.sin() * self.im.cosh(),
            im: self.re.cos() * self.im.sinh(),
        }
    }

    fn cos(self) -> Self {
        Complex {
            re: self.re.cos() * self.im.cosh(),
            im: -self.re.sin() * self.im.sinh(),
        }
    }

    /// `self^n` by repeated squaring (exact for `i^2 = -1`).
    fn powi(self, n: i64) -> Option<Self> {
        let (mut base, mut k, mut acc) = (self, n.unsigned_abs(), Complex::real(1.0));
        while k > 0 {
            if k & 1 == 1 {
                acc = acc.mul(base);
            }
            base = base.mul(base);
            k >>= 1;
        }
        if n < 0 {
            Complex::real(1.0).div(acc)
        } else {
            Some(acc)
        }
    }

    /// The principal power; real bases and exponents keep their real meaning ([`Expr::eval`])
    /// where it is defined, so `\sqrt[3]{-8} = -2` but `\sqrt{-4} = 2i`.
    fn pow(self, e: Self) -> Option<Self> {
        if self.is_real()
            && e.is_real()
            && let Some(v) = real_pow(self.re, e.re).filter(|v| v.is_finite())
        {
            return Some(Complex::real(v));
        }
        if e.is_real() && e.re.fract() == 0.0 && e.re.abs() <= 1024.0 {
            return self.powi(e.re as i64);
        }
        if self.abs() == 0.0 {
            return (e.re > 0.0).then_some(Complex::real(0.0));
        }
        Some(e.mul(self.ln()?).exp())
    }

    fn func(self, f: Func) -> Option<Self> {
        if self.is_real()
            && let Some(v) = real_func(f, self.re)
        {
            return Some(Complex::real(v));
        }
        let one = Complex::real(1.0);
        match f {
            Func::Sin => Some(self.sin()),
            Func::Cos => Some(self.cos()),
            Func::Tan => self.sin().div(self.cos()),
            Func::Sec => one.div(self.cos()),
            Func::Csc => one.div(self.sin()),
            Func::Cot => self.cos().div(self.sin()),
            Func::Exp => Some(self.exp()),
            Func::Ln => self.ln(),
            Func::Log10 => self.ln()?.div(Complex::real(std::f64::consts::LN_10)),
            Func::Sqrt => self.pow(Complex::real(0.5)),
            Func::Abs => Some(Complex::real(self.abs())),
            // Defined here for real arguments only.
            Func::Asin | Func::Acos | Func::Atan | Func::Floor | Func::Ceil | Func::Factorial => {
                None
            }
        }
    }
}

/// Evaluates `e` over the complex numbers, the variable `i` being the imaginary unit and every
/// other variable taking its (real) value from `vars`; `None` where undefined or not finite.
pub fn eval_complex(e: &Expr, vars: &BTreeMap<String, f64>) -> Option<Complex> {
    let v = match e {
        Expr::Num(x) => Complex::real(*x),
        Expr::Var(name) if name == "i" => Complex::I,
        Expr::Var(name) => Complex::real(*vars.get(name)?),
        Expr::Neg(a) => Complex::real(0.0).sub(eval_complex(a, vars)?),
        Expr::Add(a, b) => eval_complex(a, vars)?.add(eval_complex(b, vars)?),
        Expr::Sub(a, b) => eval_complex(a, vars)?.sub(eval_complex(b, vars)?),
        Expr::Mul(a, b) => eval_complex(a, vars)?.mul(eval_complex(b, vars)?),
        Expr::Div(a, b) => eval_complex(a, vars)?.div(eval_complex(b, vars)?)?,
        Expr::Pow(a, b) => eval_complex(a, vars)?.pow(eval_complex(b, vars)?)?,
        Expr::Func(f, a) => eval_complex(a, vars)?.func(*f)?,
    };
    (v.re.is_finite() && v.im.is_finite()).then_some(v)
}
