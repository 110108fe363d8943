//! Learning-rate schedules: linear warm-up, then constant, cosine or linear decay to
//! `min_lr_ratio · lr` at the phase's last step.

use super::config::ScheduleCfg;

/// The learning rate at `step` (0-based) of a phase of `total` steps.
pub fn lr_at(cfg: &ScheduleCfg, lr: f32, step: u64, total: u64) -> f32 {
    if step < cfg.warmup_steps {
        return lr * (step + 1) as f32 / cfg.warmup_steps as f32;
    }
    let span = total.saturating_sub(cfg.warmup_steps).max(1) as f64;
    let progress = ((step - cfg.warmup_steps) as f64 / span).min(1.0);
    let floor = cfg.min_lr_ratio as f64;
    let factor = match cfg.kind.as_str() {
        "cosine" => floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        "linear" => 1.0 - (1.0 - floor) * progress,
        _ => 1.0,
    };
    (lr as f64 * factor) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kind: &str, warmup: u64) -> ScheduleCfg {
        ScheduleCfg { kind: kind.into(), warmup_steps: warmup, min_lr_ratio: 0.1 }
    }

    #[test]
    fn warmup_rises_linearly_then_decays_to_the_floor() {
        let c = cfg("cosine", 10);
        assert!((lr_at(&c, 1.0, 0, 110) - 0.1).abs() < 1e-6);
        assert!((lr_at(&c, 1.0, 9, 110) - 1.0).abs() < 1e-6);
        assert!((lr_at(&c, 1.0, 10, 110) - 1.0).abs() < 1e-6);
        assert!((lr_at(&c, 1.0, 60, 110) - 0.55).abs() < 1e-6, "cosine midpoint is halfway to the floor");
        assert!((lr_at(&c, 1.0, 110, 110) - 0.1).abs() < 1e-6);
        let l = cfg("linear", 0);
        assert!((lr_at(&l, 2.0, 50, 100) - 1.1).abs() < 1e-6);
        assert_eq!(lr_at(&cfg("constant", 0), 3.0, 77, 100), 3.0);
    }
}
