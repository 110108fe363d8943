//! The report of a conditioning experiment: success against FLOPs, diversity against
//! success, the arms at equal FLOPs, the base they start from, the exploit rates, and the
//! conditioning arms' controllability; written as `report/index.html`, `arms.csv` and
//! `summary.md`.

use super::analysis::{analyse, interval, ConditioningAnalysis, LEVEL, METRICS};
use super::{ConditioningSpec, Variant};
use crate::analysis::Interval;
use crate::data::environment::RewardKind;
use crate::lab::experiment::Experiment;
use crate::lab::plan::{human_flops, PlannedCell};
use crate::lab::pooling::seed_interval;
use crate::report::{line_chart, Figure, Frame, LineChart, Page, Point, Section, Series, Table};
use anyhow::Result;
use std::path::PathBuf;

/// Analyses the experiment and writes its report; returns the page's path.
pub fn write(spec: &ConditioningSpec, exp: &Experiment, planned: &[PlannedCell]) -> Result<PathBuf> {
    let a = analyse(spec, exp, planned)?;
    let dir = exp.root.join("report");
    let arms = arms_table(&a);
    let tables = [arms.clone(), base_table(&a), exploit_table(&a), control_table(&a)];
    let page = Page {
        title: format!("Conditioning against reward: {}", exp.name),
        intro: intro(&a),
        sections: vec![
            Section {
                heading: "Success against FLOPs".into(),
                figures: vec![success_figure(&a)?],
                ..Default::default()
            },
            Section {
                heading: "At equal FLOPs".into(),
                paragraphs: vec![format!(
                    "Each arm at {} since its start, the largest budget every cell reached (linear \
                     interpolation between evaluations). Means over seeds with {:.0}% t-intervals. `distinct` is \
                     the number of distinct solved completions per prompt among one seed's samples, `pooled` the \
                     same over all seeds' samples of the prompt; `entropy` is that of a prompt's sampled \
                     completions, `overlap` \
                     their self-BLEU-2; `kl` estimates the sequence KL to the base from the samples; `equal_batch` \
                     and `equal_episodes` are the fractions of training batches and of episodes (a prompt's k \
                     completions) whose rewards were all equal: no learning signal for a leave-one-out baseline.",
                    human_flops(a.common_flops),
                    LEVEL * 100.0
                )],
                figures: vec![diversity_figure(&a)?],
                tables: vec![arms],
            },
            Section { heading: "The base".into(), tables: vec![tables[1].clone()], ..Default::default() },
            Section { heading: "Exploits".into(), tables: vec![tables[2].clone()], ..Default::default() },
            Section { heading: "Controllability".into(), tables: vec![tables[3].clone()], ..Default::default() },
        ],
    };
    Ok(page.write_with_summary(&dir, "arms.csv", &tables)?)
}

fn intro(a: &ConditioningAnalysis) -> Vec<String> {
    let s = &a.spec;
    let seeds: std::collections::BTreeSet<i64> = a.cells.iter().map(|c| c.seed).collect();
    let base = a.cells.first().map_or(0.0, |c| c.base_flops);
    let mut out = vec![format!(
        "A base pretrains by prediction on {:?} for {} steps ({} per seed), then each arm trains it for {} \
         steps of {} prompts × {} sampled completions at temperature {}, scored by the proxy reward (sparse: 1 for \
         a credited end of episode; dense: the same plus the drop in distance to the goal per action, minus {} per \
         invalid action; both minus {} per action). The proxy's planted flaw credits a near miss (pathfinding: a \
         `D` next to the target; coins: a sum within 1 of the target); the true scorer counts only a solved \
         episode. Evaluations sample {} completions for each of {} held-out prompts (the same prompts for every \
         seed). Seeds: {}; {} cells.",
        s.task,
        s.pretrain_steps,
        human_flops(base),
        s.steps,
        s.prompts,
        s.k,
        s.temperature,
        s.invalid_penalty,
        s.step_cost,
        s.eval_k,
        s.eval_episodes,
        seeds.len(),
        a.cells.len()
    )];
    if !a.missing.is_empty() {
        let ids: Vec<String> = a.missing.iter().map(|(id, why)| format!("{id} ({why})")).collect();
        out.push(format!("Cells without results: {}.", ids.join(", ")));
    }
    out
}

/// `0.42 [0.31, 0.53]`, or `-`.
fn show(i: Option<Interval>) -> String {
    i.map_or("-".into(), |i| format!("{:.3} [{:.3}, {:.3}]", i.value, i.lo, i.hi))
}

fn arms_table(a: &ConditioningAnalysis) -> Table {
    let mut header = vec!["arm".to_string(), "reward".into(), "seeds".into()];
    header.extend(METRICS.iter().map(|(m, _, _)| m.to_string()));
    header.push("pooled".into());
    let rows = a
        .variants()
        .iter()
        .map(|v| {
            let mut row = vec![v.arm.name(), v.reward.name().into(), a.of(v).len().to_string()];
            row.extend(METRICS.iter().map(|(m, _, _)| show(a.at(v, m, a.common_flops))));
            row.push(a.pooled_distinct(v).map_or("-".into(), |d| format!("{d:.2}")));
            row
        })
        .collect();
    Table { caption: format!("Arms at {} since the base", human_flops(a.common_flops)), header, rows }
}

fn base_table(a: &ConditioningAnalysis) -> Table {
    let metrics = ["success", "optimal", "reward", "exploit", "distinct_solved", "entropy", "overlap"];
    let mut header = vec!["reward".to_string()];
    header.extend(metrics.iter().map(|m| m.to_string()));
    let rewards: Vec<RewardKind> = a.spec.rewards.clone();
    let rows = rewards
        .iter()
        .map(|&r| {
            let mut row = vec![r.name().to_string()];
            row.extend(metrics.iter().map(|m| show(a.base(r, m))));
            row
        })
        .collect();
    Table {
        caption: "The base at every arm's first evaluation (one value per seed): the rate RL starts from and the \
                  headroom it has"
            .into(),
        header,
        rows,
    }
}

fn exploit_table(a: &ConditioningAnalysis) -> Table {
    let header = ["arm", "reward", "exploit at the start", "exploit at equal FLOPs", "change (paired by seed)"];
    let mut rows: Vec<Vec<String>> = a
        .variants()
        .iter()
        .map(|v| {
            let cells = a.of(v);
            let change: Vec<f64> =
                cells.iter().filter_map(|c| Some(c.at("exploit", a.common_flops)? - c.base("exploit")?)).collect();
            let base: Vec<f64> = cells.iter().filter_map(|c| c.base("exploit")).collect();
            vec![
                v.arm.name(),
                v.reward.name().into(),
                show(interval(&base, "exploit")),
                show(a.at(v, "exploit", a.common_flops)),
                show(seed_interval(&change, LEVEL, -1.0, 1.0)),
            ]
        })
        .collect();
    for (reward, boards, rate) in &a.maximizer {
        rows.push(vec![
            "reward maximizer".into(),
            reward.name().into(),
            "-".into(),
            format!("{rate:.3} of {boards} prompts"),
            "-".into(),
        ]);
    }
    Table {
        caption: "Exploit rate: completions the proxy credits that the true scorer rejects, at each arm's first \
                  evaluation (the base; a conditioning arm's already under its untrained best-bin token) and at \
                  equal FLOPs. The reward maximizer is an exhaustive search for each held-out prompt's best \
                  completion under the proxy"
            .into(),
        header: header.iter().map(|h| h.to_string()).collect(),
        rows,
    }
}

fn control_table(a: &ConditioningAnalysis) -> Table {
    let conditioned: Vec<Variant> = a.variants().into_iter().filter(|v| v.arm.conditions()).collect();
    let bins = a.spec.n_conditions();
    let mut header = vec!["arm".to_string(), "reward".into(), "measure".into()];
    header.extend((0..bins).map(|b| format!("bin {b}")));
    header.push("none".into());
    let mut rows = Vec::new();
    for v in &conditioned {
        for measure in ["reward", "success"] {
            let mut row = vec![v.arm.name(), v.reward.name().into(), measure.into()];
            let n = a.spec.bins(v.reward).len() + 1;
            let names = (0..bins).map(|b| if b < n { b.to_string() } else { String::new() });
            row.extend(names.chain(["none".to_string()]).map(|b| match b.is_empty() {
                true => "-".into(),
                false => show(a.at(v, &format!("bin{b}_{measure}"), a.common_flops)),
            }));
            rows.push(row);
        }
    }
    Table {
        caption: "Requested against achieved quality: the proxy return and success rate when conditioned on each \
                  bin (ascending), and without a condition"
            .into(),
        header,
        rows,
    }
}

/// A series' name.
fn label(v: &Variant) -> String {
    format!("{} ({})", v.arm.name(), v.reward.name())
}

fn success_figure(a: &ConditioningAnalysis) -> Result<Figure> {
    let series = a
        .variants()
        .iter()
        .map(|v| {
            let cells = a.of(v);
            let evals = cells.iter().map(|c| c.evals.len()).min().unwrap_or(0);
            let points = (0..evals)
                .filter_map(|e| {
                    let tflops = cells.iter().map(|c| c.evals[e].0).sum::<f64>() / cells.len() as f64 / 1e12;
                    let values: Vec<f64> = cells.iter().filter_map(|c| c.evals[e].1.get("success").copied()).collect();
                    let i = interval(&values, "success")?;
                    Some(Point::new(tflops, i.value).with_interval(i.lo, i.hi))
                })
                .collect();
            Series { name: label(v), points }
        })
        .collect();
    let chart = LineChart {
        frame: Frame::new(
            "True success against FLOPs since the base",
            "TFLOP since the base (sampling and training)",
            "success rate",
        ),
        series,
        ..Default::default()
    };
    Ok(Figure {
        svg: line_chart(&chart)?,
        caption: format!(
            "Mean over seeds at each evaluation, bands: {:.0}% t-intervals. The first point is the base.",
            LEVEL * 100.0
        ),
    })
}

fn diversity_figure(a: &ConditioningAnalysis) -> Result<Figure> {
    let series = a
        .variants()
        .iter()
        .filter_map(|v| {
            let success = a.at(v, "success", a.common_flops)?;
            let distinct = a.at(v, "distinct_solved", a.common_flops)?;
            let point = Point::new(success.value, distinct.value).with_interval(distinct.lo, distinct.hi);
            Some(Series { name: label(v), points: vec![point] })
        })
        .chain(a.spec.rewards.iter().filter_map(|&r| {
            let (s, d) = (a.base(r, "success")?, a.base(r, "distinct_solved")?);
            Some(Series { name: format!("base ({})", r.name()), points: vec![Point::new(s.value, d.value)] })
        }))
        .collect();
    let chart = LineChart {
        frame: Frame::new(
            "Diversity against success at equal FLOPs",
            "success rate",
            "distinct solved completions per prompt",
        ),
        series,
        ..Default::default()
    };
    Ok(Figure {
        svg: line_chart(&chart)?,
        caption: format!(
            "One point per arm and reward (mean over seeds; bar: {:.0}% t-interval of the diversity); the base's \
             points are where every arm starts.",
            LEVEL * 100.0
        ),
    })
}
