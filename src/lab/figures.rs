//! Study-neutral pieces of report figures: which swept axis sets the model size, cells
//! grouped by every swept axis into chart families and lines, and a line's seed band.

use super::experiment::Experiment;
use super::pooling::{SeedResult, Series};
use super::sweep::{label_of, slug};
use crate::report::{Point, Series as Line};
use std::collections::BTreeMap;

/// The key of the axis that sets the model size, if one is swept.
pub fn scale_axis(exp: &Experiment) -> Option<String> {
    exp.axes.iter().find(|a| a.key.starts_with("model.")).map(|a| a.key.clone())
}

/// A cell's sweep value on `key`, as text.
pub fn value_of(point: &[(String, toml::Value)], key: &str) -> String {
    point.iter().find(|(k, _)| k == key).map_or_else(String::new, |(_, v)| slug(v))
}

/// Cells grouped into chart families (one chart each: every swept axis but the scale and
/// the seed), then into lines by scale (one line each, pooled over seeds).
pub fn families<'a, C: SeedResult>(exp: &Experiment, cells: &'a [C]) -> BTreeMap<String, BTreeMap<String, Vec<&'a C>>> {
    let scale = scale_axis(exp);
    let mut out: BTreeMap<String, BTreeMap<String, Vec<&C>>> = BTreeMap::new();
    for c in cells {
        let family: Vec<String> = c
            .point()
            .iter()
            .filter(|(k, _)| k != "seed" && Some(k) != scale.as_ref())
            .map(|(k, v)| format!("{}={}", label_of(k), slug(v)))
            .collect();
        let line =
            scale.as_deref().map_or("all".into(), |k| format!("{} ({} params)", value_of(c.point(), k), c.params()));
        out.entry(family.join(", ")).or_default().entry(line).or_default().push(c);
    }
    out
}

/// The mean over seeds at each time with the seeds' min–max as band; x is `t + shift` (a
/// shift of 1 puts the first evaluation, t = 0, on a log axis).
pub fn seed_band(name: &str, series: &[&Series], shift: f64) -> Line {
    let mut by_t: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for s in series {
        for (t, y) in s.t.iter().zip(&s.y) {
            by_t.entry(*t as u64).or_default().push(*y);
        }
    }
    let points = by_t
        .into_iter()
        .map(|(t, ys)| {
            let mean = ys.iter().sum::<f64>() / ys.len() as f64;
            let (lo, hi) = ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &y| (l.min(y), h.max(y)));
            Point::new(t as f64 + shift, mean).with_interval(lo, hi)
        })
        .collect();
    Line { name: name.to_string(), points }
}
