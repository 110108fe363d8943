//! Special functions behind the Student-t confidence intervals: `ln Γ` (Lanczos), the
//! regularized incomplete beta function (continued fraction), and the t quantile found by
//! bisection on the t tail probability.
//!
//! Accuracy: `ln Γ` and the incomplete beta are good to ~1e-14 relative on the arguments used
//! here, and bisection runs to adjacent floating-point values, so [`student_t_quantile`] is
//! accurate to ~1e-12 relative (checked against `tan` for 1 degree of freedom and against
//! printed tables).

use std::f64::consts::PI;

/// Lanczos approximation (g = 7, 9 terms) coefficients.
const LANCZOS: [f64; 9] = [
    0.999_999_999_999_809_9,
    676.520_368_121_885_1,
    -1_259.139_216_722_402_8,
    771.323_428_777_653_1,
    -176.615_029_162_140_6,
    12.507_343_278_686_905,
    -0.138_571_095_265_720_12,
    9.984_369_578_019_572e-6,
    1.505_632_735_149_311_6e-7,
];

/// Continued-fraction terms before the incomplete beta gives up refining.
const BETA_MAX_TERMS: usize = 300;

/// `ln Γ(x)` for `x >= 0.5`.
fn ln_gamma(x: f64) -> f64 {
    let x = x - 1.0;
    let sum = LANCZOS[1..].iter().enumerate().fold(LANCZOS[0], |s, (i, c)| s + c / (x + i as f64 + 1.0));
    let t = x + 7.5;
    0.5 * (2.0 * PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// The regularized incomplete beta `I_x(a, b)` for `0 <= x <= 1`, `a, b >= 0.5`.
fn incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 || x >= 1.0 {
        return x.clamp(0.0, 1.0);
    }
    let front = (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_continued_fraction(x, a, b) / a
    } else {
        1.0 - front * beta_continued_fraction(1.0 - x, b, a) / b
    }
}

/// The continued fraction of `I_x(a, b)` (modified Lentz), converging for `x < (a+1)/(a+b+2)`.
fn beta_continued_fraction(x: f64, a: f64, b: f64) -> f64 {
    let tiny = 1e-300;
    let guard = |v: f64| if v.abs() < tiny { tiny } else { v };
    let mut c = 1.0;
    let mut d = 1.0 / guard(1.0 - (a + b) * x / (a + 1.0));
    let mut h = d;
    for m in 1..=BETA_MAX_TERMS {
        let m = m as f64;
        let even = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        let odd = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
        for coef in [even, odd] {
            d = 1.0 / guard(1.0 + coef * d);
            c = guard(1.0 + coef / c);
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// `P(T > t)` for Student's t with `dof` degrees of freedom and `t >= 0`.
fn student_t_upper_tail(t: f64, dof: f64) -> f64 {
    0.5 * incomplete_beta(dof / (dof + t * t), dof / 2.0, 0.5)
}

/// The `p`-quantile of Student's t distribution with `dof > 0` degrees of freedom, for
/// `0 < p < 1` (e.g. `student_t_quantile(0.975, 5.0) ≈ 2.571`); NaN outside those domains.
pub fn student_t_quantile(p: f64, dof: f64) -> f64 {
    if !(p > 0.0 && p < 1.0 && dof > 0.0) {
        return f64::NAN;
    }
    if p < 0.5 {
        return -student_t_quantile(1.0 - p, dof);
    }
    let tail = 1.0 - p;
    let mut hi = 1.0;
    while student_t_upper_tail(hi, dof) > tail {
        hi *= 2.0;
    }
    let mut lo = 0.0;
    while hi - lo > f64::EPSILON * hi {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if student_t_upper_tail(mid, dof) > tail {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_matches_factorials_and_root_pi() {
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-13);
        assert!((ln_gamma(0.5) - PI.sqrt().ln()).abs() < 1e-13);
    }

    #[test]
    fn incomplete_beta_of_uniform_case_is_x() {
        for x in [0.1, 0.5, 0.9] {
            assert!((incomplete_beta(x, 1.0, 1.0) - x).abs() < 1e-13, "x = {x}");
        }
    }
}
