//! Distance against the repeated string's length (a `repeat` behavior swept over strings),
//! over base seeds: per arm and length, every seed's distance and the geometric mean with its
//! log-t interval; and a fit of `ln(1 + distance)` on `ln length` by censored (Tobit)
//! regression, in which a distance beyond the largest count is a right-censored observation
//! rather than a dropped one. Refused and unknown distances stay out of the fit and are
//! listed.

use super::analysis::{ArmResult, Distance};
use super::Arm;
use crate::analysis::{log_t_interval, tobit, Design, Interval, Observation};
use std::collections::BTreeMap;

/// Confidence level of every interval here.
pub const LEVEL: f64 = 0.95;

/// One arm at one string length.
#[derive(Clone, Debug)]
pub struct LengthRow {
    pub arm: Arm,
    pub length: usize,
    /// `(seed, distance)` per base seed.
    pub seeds: Vec<(u64, Distance)>,
    /// The geometric mean of `1 + distance` minus 1, with its interval, when at least two
    /// seeds reached a distance and none was censored, refused or unknown.
    pub mean: Option<Interval>,
}

/// The fit of `ln(1 + distance) = a + b · ln length` for one arm.
#[derive(Clone, Debug)]
pub struct LengthFit {
    pub arm: Arm,
    /// The exponent `b` with its interval.
    pub slope: Interval,
    /// Observations, and how many of them are censored (beyond the largest count).
    pub n: usize,
    pub censored: usize,
}

/// The rows of every arm whose points have string lengths, by arm then length.
pub fn rows(arms: &[ArmResult]) -> Vec<LengthRow> {
    let mut by: BTreeMap<(Arm, usize), Vec<(u64, Distance)>> = BTreeMap::new();
    for r in arms {
        if let Some(length) = r.string_len {
            by.entry((r.arm, length)).or_default().push((r.seed, r.distance));
        }
    }
    by.into_iter()
        .map(|((arm, length), mut seeds)| {
            seeds.sort_by_key(|(s, _)| *s);
            let reached: Vec<f64> = seeds
                .iter()
                .filter_map(|(_, d)| match d {
                    Distance::Reached(n) => Some(1.0 + *n as f64),
                    _ => None,
                })
                .collect();
            let mean = (reached.len() == seeds.len() && reached.len() >= 2)
                .then(|| log_t_interval(&reached, LEVEL).ok())
                .flatten()
                .map(|i| Interval { value: i.value - 1.0, lo: i.lo - 1.0, hi: i.hi - 1.0, ..i });
            LengthRow { arm, length, seeds, mean }
        })
        .collect()
}

/// The censored fit of each arm with enough distances: at least two lengths and more
/// reached distances than coefficients. `Err` says why an arm has none.
pub fn fits(rows: &[LengthRow]) -> Vec<Result<LengthFit, (Arm, String)>> {
    let arms: Vec<Arm> = rows.iter().map(|r| r.arm).fold(Vec::new(), |mut v, a| {
        if !v.contains(&a) {
            v.push(a);
        }
        v
    });
    arms.into_iter().map(|arm| fit(arm, rows.iter().filter(|r| r.arm == arm))).collect()
}

/// The fit of one arm's rows.
fn fit<'a>(arm: Arm, rows: impl Iterator<Item = &'a LengthRow>) -> Result<LengthFit, (Arm, String)> {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for r in rows {
        for (_, d) in &r.seeds {
            let obs = match *d {
                Distance::Reached(n) => Observation::reached(1.0 + n as f64),
                Distance::Beyond(n) => Observation::censored_at(1.0 + n as f64),
                Distance::Refused(_) | Distance::Unknown => continue,
            };
            x.push((r.length as f64).ln());
            y.push(Observation { value: obs.value.ln(), ..obs });
        }
    }
    let why = |e: crate::analysis::AnalysisError| (arm, e.to_string());
    let design = Design::new(x.len()).numeric("ln_length", &x).map_err(why)?;
    let fitted = tobit(&design, &y).map_err(why)?;
    let slope = fitted.coefficient("ln_length").expect("the design has it").interval(LEVEL).map_err(why)?;
    Ok(LengthFit { arm, slope, n: fitted.n, censored: fitted.censored })
}
