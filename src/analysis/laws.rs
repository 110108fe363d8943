//! The three decay laws, each written `y(t) = c + a·g(t)` on `t >= 0`.
//!
//! `g` falls monotonically from `g(0) > 0` towards 0, so `y` moves monotonically from
//! `c + a·g(0)` towards the asymptote `c`. The sign of `a` is free: `a > 0` is a falling
//! metric (accuracy decaying to chance), `a < 0` a rising one (loss growing to its floor).
//!
//! - exponential: `g(t) = exp(−t/τ)`, `τ > 0`;
//! - power law: `g(t) = (1 + t)^(−b)`, `b > 0`. The `+1` keeps the law finite at `t = 0`
//!   (the end-of-phase-1 point) and makes `a` the total movement, like the exponential's;
//! - shifted power law (Kalajdzievski 2024): `g(t) = (t + s)^(−b)`, `b, s > 0`, with the shift
//!   `s` fitted. Here `y(0) = c + a·s^(−b)`, so `a` is *not* the total movement.

use serde::Serialize;

/// Which functional form a curve follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Law {
    /// `y = c + a·exp(−t/τ)`.
    Exponential,
    /// `y = c + a·(1 + t)^(−b)`.
    PowerLaw,
    /// `y = c + a·(t + s)^(−b)`.
    ShiftedPowerLaw,
}

impl Law {
    /// Every law, simplest first.
    pub const ALL: [Law; 3] = [Law::Exponential, Law::PowerLaw, Law::ShiftedPowerLaw];

    /// Number of fitted parameters `k` (c, a, then the shape parameters).
    pub fn n_params(self) -> usize {
        match self {
            Law::Exponential | Law::PowerLaw => 3,
            Law::ShiftedPowerLaw => 4,
        }
    }

    /// A short lowercase name for tables and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Law::Exponential => "exponential",
            Law::PowerLaw => "power_law",
            Law::ShiftedPowerLaw => "shifted_power_law",
        }
    }
}

/// The shape `g(t)` of a curve, with its (positive) parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Decay {
    /// `g(t) = exp(−t/τ)`.
    Exponential { tau: f64 },
    /// `g(t) = (1 + t)^(−b)`.
    PowerLaw { b: f64 },
    /// `g(t) = (t + s)^(−b)`.
    ShiftedPowerLaw { b: f64, s: f64 },
}

impl Decay {
    /// The law this shape belongs to.
    pub fn law(&self) -> Law {
        match self {
            Decay::Exponential { .. } => Law::Exponential,
            Decay::PowerLaw { .. } => Law::PowerLaw,
            Decay::ShiftedPowerLaw { .. } => Law::ShiftedPowerLaw,
        }
    }

    /// `g(t)` for `t >= 0`; positive and non-increasing.
    pub fn g(&self, t: f64) -> f64 {
        match *self {
            Decay::Exponential { tau } => (-t / tau).exp(),
            Decay::PowerLaw { b } => (1.0 + t).powf(-b),
            Decay::ShiftedPowerLaw { b, s } => (t + s).powf(-b),
        }
    }

    /// The `t >= 0` with `g(t) = r`, or `None` when `r` is not in `(0, g(0)]`.
    pub fn g_inverse(&self, r: f64) -> Option<f64> {
        if !(r > 0.0 && r <= self.g(0.0)) {
            return None;
        }
        let t = match *self {
            Decay::Exponential { tau } => -tau * r.ln(),
            Decay::PowerLaw { b } => r.powf(-1.0 / b) - 1.0,
            Decay::ShiftedPowerLaw { b, s } => r.powf(-1.0 / b) - s,
        };
        Some(t.max(0.0))
    }

    /// The shape built from the logs of its parameters (`ln τ`, `ln b`, or `ln b, ln s`).
    pub(crate) fn from_log_params(law: Law, q: &[f64]) -> Decay {
        match law {
            Law::Exponential => Decay::Exponential { tau: q[0].exp() },
            Law::PowerLaw => Decay::PowerLaw { b: q[0].exp() },
            Law::ShiftedPowerLaw => Decay::ShiftedPowerLaw { b: q[0].exp(), s: q[1].exp() },
        }
    }

    /// `∂g(t)/∂(ln p)` for each shape parameter `p`, in the order of `from_log_params`.
    pub(crate) fn log_gradient(&self, t: f64) -> [f64; 2] {
        let g = self.g(t);
        match *self {
            Decay::Exponential { tau } => [g * t / tau, 0.0],
            Decay::PowerLaw { b } => [-b * (1.0 + t).ln() * g, 0.0],
            Decay::ShiftedPowerLaw { b, s } => [-b * (t + s).ln() * g, -b * s / (t + s) * g],
        }
    }
}

/// A decay curve `y(t) = c + a·g(t)`; see the module doc for the laws.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Curve {
    /// The asymptote as `t → ∞`.
    pub c: f64,
    /// The amplitude; its sign says whether the curve falls (`a > 0`) or rises (`a < 0`).
    pub a: f64,
    /// The shape and its parameters.
    pub decay: Decay,
}

impl Curve {
    /// The law this curve follows.
    pub fn law(&self) -> Law {
        self.decay.law()
    }

    /// `y(t)` for `t >= 0`.
    pub fn predict(&self, t: f64) -> f64 {
        self.c + self.a * self.decay.g(t)
    }

    /// The first `t >= 0` with `y(t) = y`, or `None` if the curve never gets there (`y` on or
    /// beyond the asymptote, before the start, or the curve is flat).
    pub fn time_to_reach(&self, y: f64) -> Option<f64> {
        self.decay.g_inverse((y - self.c) / self.a)
    }

    /// The parameters by name, in law order: `c, a, tau` / `c, a, b` / `c, a, b, s`.
    pub fn params(&self) -> Vec<(&'static str, f64)> {
        let mut named = vec![("c", self.c), ("a", self.a)];
        match self.decay {
            Decay::Exponential { tau } => named.push(("tau", tau)),
            Decay::PowerLaw { b } => named.push(("b", b)),
            Decay::ShiftedPowerLaw { b, s } => named.extend([("b", b), ("s", s)]),
        }
        named
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_gradient_matches_central_differences() {
        let h = 1e-6;
        for (law, q) in
            [(Law::Exponential, vec![5.0]), (Law::PowerLaw, vec![-0.5]), (Law::ShiftedPowerLaw, vec![0.3, 3.0])]
        {
            for t in [0.0, 2.0, 300.0] {
                let analytic = Decay::from_log_params(law, &q).log_gradient(t);
                for j in 0..q.len() {
                    let at = |d: f64| {
                        let mut qd = q.clone();
                        qd[j] += d;
                        Decay::from_log_params(law, &qd).g(t)
                    };
                    let numeric = (at(h) - at(-h)) / (2.0 * h);
                    assert!((analytic[j] - numeric).abs() < 1e-7, "{law:?} t={t} j={j}: {} vs {numeric}", analytic[j]);
                }
            }
        }
    }
}
