//! Distribution functions behind the intervals and the censored fits, from the `statrs` crate:
//! Student-t and normal quantiles, and the standard normal's log density, log survival
//! function and hazard (the inverse Mills ratio) that a censored normal likelihood needs.
//!
//! Two pieces are written here because `statrs` (0.19) does not serve them:
//! - the far upper tail of the normal survival function: `erfc` underflows past z ≈ 38, and a
//!   censored likelihood evaluated during a Newton search can ask for it there. Beyond
//!   [`ASYMPTOTIC_Z`] the asymptotic series of Mills' ratio takes over (relative error below
//!   1e-9 at the switch, smaller further out);
//! - the t quantile above [`T_EXPANSION_DOF`] degrees of freedom: `StudentsT::inverse_cdf` loses
//!   accuracy there (6e-7 off at 3·10⁴ dof, 1.83 instead of 1.96 at 10⁷, and no answer at all
//!   at 10⁹), so the Cornish–Fisher expansion in `1/dof` (Abramowitz & Stegun 26.7.5, four
//!   terms) is used; its truncation error is below 1e-10 there for `p` in [0.0005, 0.9995].
//!
//! `statrs`'s `erfc` is accurate to about 1e-10 relative (not to the last bit), which bounds
//! the accuracy of everything here.

use statrs::distribution::{ContinuousCDF, Normal, StudentsT};
use statrs::function::erf::erfc;
use std::f64::consts::{PI, SQRT_2};

/// Where [`normal_ln_sf`] switches from `ln(erfc(z/√2)/2)` to the asymptotic series.
const ASYMPTOTIC_Z: f64 = 35.0;

/// Degrees of freedom above which [`student_t_quantile`] uses the Cornish–Fisher expansion.
const T_EXPANSION_DOF: f64 = 1000.0;

/// The `p`-quantile of Student's t distribution with `dof > 0` degrees of freedom, for
/// `0 < p < 1` (e.g. `student_t_quantile(0.975, 5.0) ≈ 2.571`); NaN outside those domains.
/// Exactly antisymmetric: `student_t_quantile(1 − p, dof) == −student_t_quantile(p, dof)`.
pub fn student_t_quantile(p: f64, dof: f64) -> f64 {
    if !(p > 0.0 && p < 1.0 && dof > 0.0) {
        return f64::NAN;
    }
    if p < 0.5 {
        return -student_t_quantile(1.0 - p, dof);
    }
    if dof > T_EXPANSION_DOF {
        return cornish_fisher_t(normal_quantile(p), dof);
    }
    match StudentsT::new(0.0, 1.0, dof) {
        Ok(t) => t.inverse_cdf(p),
        Err(_) => f64::NAN,
    }
}

/// The t quantile from the normal quantile `x` by the expansion in `1/dof` (A&S 26.7.5).
fn cornish_fisher_t(x: f64, dof: f64) -> f64 {
    let x2 = x * x;
    let g1 = (x2 + 1.0) * x / 4.0;
    let g2 = ((5.0 * x2 + 16.0) * x2 + 3.0) * x / 96.0;
    let g3 = (((3.0 * x2 + 19.0) * x2 + 17.0) * x2 - 15.0) * x / 384.0;
    let g4 = ((((79.0 * x2 + 776.0) * x2 + 1482.0) * x2 - 1920.0) * x2 - 945.0) * x / 92160.0;
    let w = 1.0 / dof;
    x + w * (g1 + w * (g2 + w * (g3 + w * g4)))
}

/// The `p`-quantile of the standard normal distribution for `0 < p < 1`; NaN outside.
pub fn normal_quantile(p: f64) -> f64 {
    if !(p > 0.0 && p < 1.0) {
        return f64::NAN;
    }
    Normal::standard().inverse_cdf(p)
}

/// `ln φ(z)`, the standard normal log density.
pub(crate) fn normal_ln_pdf(z: f64) -> f64 {
    -0.5 * z * z - 0.5 * (2.0 * PI).ln()
}

/// `ln P(Z > z)` for a standard normal `Z`, finite for every finite `z`.
pub(crate) fn normal_ln_sf(z: f64) -> f64 {
    if z < ASYMPTOTIC_Z {
        return (0.5 * erfc(z / SQRT_2)).ln();
    }
    // Mills' ratio: P(Z > z) = φ(z)/z · (1 − 1/z² + 3/z⁴ − 15/z⁶ + …).
    let w = 1.0 / (z * z);
    normal_ln_pdf(z) - z.ln() + (1.0 - w * (1.0 - w * (3.0 - 15.0 * w))).ln()
}

/// The standard normal hazard `φ(z) / P(Z > z)` (the inverse Mills ratio), finite for every
/// finite `z`: ≈ 0 far below the mean, ≈ `z` far above it.
pub(crate) fn normal_hazard(z: f64) -> f64 {
    (normal_ln_pdf(z) - normal_ln_sf(z)).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_sf_is_continuous_at_the_switch_and_matches_known_values() {
        // P(Z > 0) = 1/2; P(Z > 1.959963984540054) = 0.025.
        assert!((normal_ln_sf(0.0) - 0.5f64.ln()).abs() < 1e-15);
        // statrs's erfc is good to ~1e-10 relative (4.5e-11 here), not to the last bit.
        let d = normal_ln_sf(1.959_963_984_540_054) - 0.025f64.ln();
        assert!(d.abs() < 1e-9, "{d}");
        let below = (0.5 * erfc((ASYMPTOTIC_Z - 1e-9) / SQRT_2)).ln();
        let above = normal_ln_sf(ASYMPTOTIC_Z);
        assert!(((below - above) / above).abs() < 1e-9, "{below} vs {above}");
        assert!(normal_ln_sf(1e3).is_finite() && normal_ln_sf(-40.0) == 0.0);
    }

    #[test]
    fn hazard_tends_to_zero_below_and_to_z_above() {
        assert!(normal_hazard(-40.0) < 1e-300);
        assert!((normal_hazard(0.0) - 2.0 * (2.0 * PI).sqrt().recip()).abs() < 1e-15);
        for z in [10.0, 50.0, 500.0] {
            let h = normal_hazard(z);
            assert!(h > z && h < z + 1.0 / z, "z = {z}: hazard {h}");
        }
    }

    #[test]
    fn t_quantile_is_accurate_on_both_sides_of_the_expansion_switch() {
        // Reference values: scipy.stats.t.ppf(0.975, dof).
        for (dof, want) in [
            (4.0, 2.776_445_105_197_793_4),
            (300.0, 1.967_903_011_261_086_5),
            (3000.0, 1.960_755_055_322_458),
            (3e4, 1.960_043_063_383_934_7),
            (1e7, 1.959_964_221_767_205),
            (1e300, 1.959_963_984_540_054),
        ] {
            let got = student_t_quantile(0.975, dof);
            assert!(((got - want) / want).abs() < 1e-10, "dof {dof}: {got} vs {want}");
        }
        let (below, above) = (student_t_quantile(0.999, 1000.0), student_t_quantile(0.999, 1000.0 + 1e-9));
        assert!((below - above).abs() < 1e-10, "{below} vs {above}");
    }

    #[test]
    fn normal_quantile_inverts_known_points() {
        assert!((normal_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-12);
        assert_eq!(normal_quantile(0.5), 0.0);
        assert!(normal_quantile(0.0).is_nan() && normal_quantile(1.0).is_nan());
    }
}
