//! The effect of each swept knob on persistence, from one censored regression over every cell:
//! `ln half-life = β₀ + Σ_knobs β_knob=level + σ·ε` (a Tobit fit, [`crate::analysis::tobit`]),
//! every knob but the seed a categorical factor against its first level. A level's effect is
//! `exp(β)`, the factor by which it multiplies the half-life with every other knob held fixed,
//! with a Student-t interval; censored seeds enter as the lower bounds they are.
//!
//! Marginal means per level (what this replaced) mix the other knobs' effects into each level
//! whenever the design is unbalanced, as a search's sampled configurations are, and count a
//! censored seed at its horizon, as if it had decayed there.
//!
//! A level whose every cell is censored has no finite estimate: its coefficient runs to +∞,
//! where those cells' likelihood is 1 whatever the other coefficients are. The maximum over
//! the other coefficients is then the fit without those cells, which is what is computed; the
//! level is reported as "all censored" (its half-life exceeds every horizon it was run to).

use super::pooling::{reached, SeedResult};
use super::sweep::slug;
use crate::analysis::{log_observations, tobit, Design, Interval, Observation};
use crate::report::Table;
use std::collections::BTreeMap;

/// Confidence level of the knob-effect intervals.
pub const KNOB_CI_LEVEL: f64 = 0.95;

/// One level of a knob.
#[derive(Clone, Debug, PartialEq)]
pub struct Level {
    pub value: String,
    /// Cells at this level, and how many of them are censored.
    pub cells: usize,
    pub censored: usize,
    pub effect: Effect,
}

/// What the regression says about a level.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// The reference level (effect 1 by definition).
    Reference,
    /// `exp(β)` with its interval (on the ratio scale; `n` and the censored count are the fit's).
    Ratio(Interval),
    /// Every cell censored: the ratio is only bounded from below.
    AllCensored,
    /// The fit failed (too few uncensored cells for the coefficients); the reason.
    NoFit(String),
}

/// One knob's levels, and how much it matters: the largest |ln ratio| among its levels
/// (infinite when a level is all censored).
#[derive(Clone, Debug, PartialEq)]
pub struct KnobEffect {
    pub axis: String,
    pub levels: Vec<Level>,
    pub spread: f64,
}

/// The knob effects of `cells`, the knobs that matter most first. Knobs with a single level
/// (nothing to compare) are left out.
pub fn knob_effects<C: SeedResult>(cells: &[C]) -> Vec<KnobEffect> {
    let axes = knob_levels(cells);
    if axes.is_empty() {
        return Vec::new();
    }
    // Drop the cells of all-censored levels (see the module doc) until none is left.
    let mut keep: Vec<bool> = vec![true; cells.len()];
    let mut all_censored: Vec<(String, String)> = Vec::new();
    loop {
        let mut changed = false;
        for (axis, levels) in &axes {
            for level in levels {
                if all_censored.iter().any(|(a, l)| a == axis && l == level) {
                    continue;
                }
                let members: Vec<usize> =
                    (0..cells.len()).filter(|&i| keep[i] && level_of(&cells[i], axis) == *level).collect();
                if !members.is_empty() && members.iter().all(|&i| reached(cells[i].half_life()).is_none()) {
                    all_censored.push((axis.clone(), level.clone()));
                    members.iter().for_each(|&i| keep[i] = false);
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let kept: Vec<&C> = cells.iter().zip(&keep).filter(|(_, k)| **k).map(|(c, _)| c).collect();
    // The reference of each knob: its first level that still has cells.
    let references: BTreeMap<&str, String> = axes
        .iter()
        .filter_map(|(axis, levels)| {
            levels.iter().find(|l| kept.iter().any(|c| level_of(*c, axis) == **l)).map(|l| (axis.as_str(), l.clone()))
        })
        .collect();
    let fit = fit(&kept, &axes, &references);
    let mut out: Vec<KnobEffect> = axes
        .iter()
        .map(|(axis, values)| {
            let levels: Vec<Level> = values
                .iter()
                .map(|value| {
                    let members: Vec<&C> = cells.iter().filter(|c| level_of(*c, axis) == *value).collect();
                    let effect = if all_censored.iter().any(|(a, l)| a == axis && l == value) {
                        Effect::AllCensored
                    } else if references.get(axis.as_str()) == Some(value) {
                        Effect::Reference
                    } else {
                        match &fit {
                            Ok(f) => f
                                .coefficient(&format!("{axis}={value}"))
                                .ok_or_else(|| "no coefficient".to_string())
                                .and_then(|c| c.interval(KNOB_CI_LEVEL).map_err(|e| e.to_string()))
                                .map_or_else(Effect::NoFit, |i| {
                                    Effect::Ratio(Interval {
                                        value: i.value.exp(),
                                        lo: i.lo.exp(),
                                        hi: i.hi.exp(),
                                        ..i
                                    })
                                }),
                            Err(e) => Effect::NoFit(e.clone()),
                        }
                    };
                    let censored = members.iter().filter(|c| reached(c.half_life()).is_none()).count();
                    Level { value: value.clone(), cells: members.len(), censored, effect }
                })
                .collect();
            let spread = levels
                .iter()
                .map(|l| match &l.effect {
                    Effect::Ratio(i) => i.value.ln().abs(),
                    Effect::AllCensored => f64::INFINITY,
                    Effect::Reference | Effect::NoFit(_) => 0.0,
                })
                .fold(0.0, f64::max);
            KnobEffect { axis: axis.clone(), levels, spread }
        })
        .collect();
    out.sort_by(|a, b| b.spread.total_cmp(&a.spread));
    out
}

/// Every swept knob but the seed with its levels in order of first appearance; only knobs with
/// two or more levels.
fn knob_levels<C: SeedResult>(cells: &[C]) -> Vec<(String, Vec<String>)> {
    let mut axes: Vec<(String, Vec<String>)> = Vec::new();
    for c in cells {
        for (k, v) in c.point().iter().filter(|(k, _)| k != "seed") {
            let value = slug(v);
            match axes.iter_mut().find(|(a, _)| a == k) {
                Some((_, levels)) if !levels.contains(&value) => levels.push(value),
                Some(_) => {}
                None => axes.push((k.clone(), vec![value])),
            }
        }
    }
    axes.retain(|(_, levels)| levels.len() > 1);
    axes
}

/// The level of `axis` at a cell.
fn level_of<C: SeedResult>(c: &C, axis: &str) -> String {
    c.point().iter().find(|(k, _)| k == axis).map(|(_, v)| slug(v)).unwrap_or_default()
}

/// The Tobit fit of ln half-life on every knob as a factor.
fn fit<C: SeedResult>(
    cells: &[&C],
    axes: &[(String, Vec<String>)],
    references: &BTreeMap<&str, String>,
) -> Result<crate::analysis::TobitFit, String> {
    let mut design = Design::new(cells.len());
    for (axis, _) in axes {
        let Some(reference) = references.get(axis.as_str()) else { continue };
        let levels: Vec<String> = cells.iter().map(|c| level_of(*c, axis)).collect();
        design = design.factor_with_reference(axis, &levels, reference).map_err(|e| e.to_string())?;
    }
    let half_lives: Vec<Observation> = cells.iter().map(|c| Observation::from(*c.half_life())).collect();
    let y = log_observations(&half_lives).map_err(|e| e.to_string())?;
    tobit(&design, &y).map_err(|e| e.to_string())
}

/// The knob effects as a table: each level's half-life ratio to its knob's reference level.
pub fn knob_table(unit: &str, knobs: &[KnobEffect]) -> Table {
    let rows = knobs
        .iter()
        .flat_map(|k| {
            k.levels.iter().map(move |l| {
                let (ratio, method) = match &l.effect {
                    Effect::Reference => ("1 (reference)".to_string(), String::new()),
                    Effect::Ratio(i) => (format!("{:.2} [{:.2}, {:.2}]", i.value, i.lo, i.hi), i.method_label()),
                    Effect::AllCensored => ("> every horizon (all censored)".to_string(), String::new()),
                    Effect::NoFit(why) => ("—".to_string(), format!("no fit: {why}")),
                };
                vec![k.axis.clone(), l.value.clone(), ratio, method, l.cells.to_string(), l.censored.to_string()]
            })
        })
        .collect();
    Table {
        caption: format!(
            "Knob effects: the factor by which each level multiplies the half-life (in {unit}) against its knob's \
             reference level, every other knob held fixed (one censored regression of ln half-life on all knobs as \
             factors; 95% t-intervals)"
        ),
        header: ["knob", "value", "half-life ratio [95% CI]", "method", "cells", "censored"].map(String::from).to_vec(),
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::special::normal_quantile;
    use crate::analysis::HalfLife;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    struct Cell {
        point: Vec<(String, toml::Value)>,
        h: HalfLife,
    }

    impl SeedResult for Cell {
        fn point(&self) -> &[(String, toml::Value)] {
            &self.point
        }
        fn params(&self) -> usize {
            0
        }
        fn half_life(&self) -> &HalfLife {
            &self.h
        }
        fn moved(&self) -> f64 {
            0.0
        }
    }

    /// Cells over knobs `a` (levels 0, 1) and `b` (0, 1, 2) with ln half-life
    /// `4 + ln_a·[a=1] + ln_b·[b=2] + 0.3·ε`, censored at `horizon`; `b = 2` is rarer when
    /// `a = 1` (an unbalanced design, as a search samples).
    fn simulate(rng: &mut ChaCha8Rng, ln_a: f64, ln_b: f64, horizon: f64) -> Vec<Cell> {
        let mut cells = Vec::new();
        for a in 0..2 {
            for b in 0..3 {
                let seeds = if a == 1 && b == 2 { 2 } else { 5 };
                for seed in 0..seeds {
                    let eps = normal_quantile(rng.random_range(1e-12..1.0));
                    let t = (4.0 + ln_a * f64::from(a) + if b == 2 { ln_b } else { 0.0 } + 0.3 * eps).exp();
                    let h = if t > horizon { HalfLife::Censored { horizon } } else { HalfLife::Reached(t) };
                    let point = vec![
                        ("a".to_string(), toml::Value::Integer(a.into())),
                        ("b".to_string(), toml::Value::Integer(b.into())),
                        ("seed".to_string(), toml::Value::Integer(seed)),
                    ];
                    cells.push(Cell { point, h });
                }
            }
        }
        cells
    }

    fn ratio(knobs: &[KnobEffect], axis: &str, value: &str) -> Effect {
        let k = knobs.iter().find(|k| k.axis == axis).unwrap();
        k.levels.iter().find(|l| l.value == value).unwrap().effect.clone()
    }

    #[test]
    fn the_knob_intervals_cover_the_true_ratio_under_censoring_in_an_unbalanced_design() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (runs, mut covered, mut censored_total, mut cells_total) = (1000, 0, 0, 0);
        for _ in 0..runs {
            let cells = simulate(&mut rng, 0.5, -0.4, (4.4f64).exp());
            censored_total += cells.iter().filter(|c| reached(&c.h).is_none()).count();
            cells_total += cells.len();
            match ratio(&knob_effects(&cells), "a", "1") {
                Effect::Ratio(i) if i.contains(0.5f64.exp()) => covered += 1,
                Effect::Ratio(_) => {}
                other => panic!("{other:?}"),
            }
        }
        let share = censored_total as f64 / cells_total as f64;
        assert!((0.1..0.5).contains(&share), "a real amount of censoring: {share}");
        let coverage = covered as f64 / runs as f64;
        assert!((0.92..=0.98).contains(&coverage), "coverage {coverage}");
    }

    #[test]
    fn a_level_with_every_cell_censored_is_reported_as_a_lower_bound_and_the_rest_still_fit() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut cells = simulate(&mut rng, 0.0, 0.0, 1e9);
        for c in cells.iter_mut().filter(|c| c.point[1].1.as_integer() == Some(1)) {
            c.h = HalfLife::Censored { horizon: 60.0 };
        }
        let knobs = knob_effects(&cells);
        assert_eq!(ratio(&knobs, "b", "1"), Effect::AllCensored);
        assert_eq!(knobs[0].axis, "b", "an unbounded effect ranks first");
        assert!(matches!(ratio(&knobs, "b", "2"), Effect::Ratio(i) if i.contains(1.0)));
        assert!(matches!(ratio(&knobs, "a", "1"), Effect::Ratio(i) if i.contains(1.0)));
        assert_eq!(ratio(&knobs, "a", "0"), Effect::Reference);
        let table = knob_table("steps", &knobs);
        assert!(table.rows.iter().any(|r| r[2].contains("all censored")));
    }

    #[test]
    fn marginal_means_would_confound_the_knobs_the_regression_separates() {
        // b = 2 quarters the half-life and is rarer at a = 1, so over many simulated studies a's
        // marginal contrast is biased upward (by 2/12 − 5/15 of ln 4 ≈ 0.23) while its true
        // effect is nil; the regression's estimate is unbiased.
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (runs, mut marginal, mut regression) = (300, 0.0, 0.0);
        for _ in 0..runs {
            let cells = simulate(&mut rng, 0.0, -(4f64).ln(), 1e9);
            let mean = |a: i64| {
                let v: Vec<f64> = cells
                    .iter()
                    .filter(|c| c.point[0].1.as_integer() == Some(a))
                    .map(|c| reached(&c.h).unwrap().ln())
                    .collect();
                v.iter().sum::<f64>() / v.len() as f64
            };
            marginal += (mean(1) - mean(0)) / runs as f64;
            let Effect::Ratio(i) = ratio(&knob_effects(&cells), "a", "1") else { panic!("a fit") };
            regression += i.value.ln() / runs as f64;
        }
        // Standard error of each average: about 0.3·√(1/12 + 1/15)/√300 ≈ 0.007.
        assert!((marginal - 0.231).abs() < 0.03, "marginal contrast {marginal}");
        assert!(regression.abs() < 0.03, "regression estimate {regression}");
    }
}
