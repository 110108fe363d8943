//! `vestige data sample TASK_SPEC`: samples of a task as JSON lines, so researchers can
//! see and trust exactly what a run trains and evaluates on.

use crate::data::spec::TaskSpec;
use crate::data::Split;
use anyhow::{anyhow, Result};

/// `n` samples (indices `0..n`) of the task `spec` describes, one JSON object each: the
/// rendered text, token ids, per-token loss weights, the prompt length and any explicit
/// targets.
pub fn sample_lines(spec: &str, n: usize, seed: u64, split: Split) -> Result<Vec<String>> {
    let task = TaskSpec::parse_inline(spec).map_err(|e| anyhow!(e))?.build()?;
    (0..n as u64)
        .map(|index| {
            let s = task.sample(seed, split, index);
            let mut line = serde_json::json!({
                "task": task.name(),
                "split": if split == Split::Train { "train" } else { "eval" },
                "index": index,
                "text": task.render(&s),
                "tokens": s.tokens,
                "weights": s.weights,
                "prompt_len": s.prompt_len,
                "fields": task.fields(seed, split, index),
            });
            if let Some(targets) = &s.targets {
                line["targets"] = serde_json::json!(targets);
            }
            Ok(serde_json::to_string(&line)?)
        })
        .collect()
}
