//! The model ladder: named Pythia-shaped (GPT-NeoX) scales from about 0.1M to about 30M
//! non-embedding parameters, so experiments can sweep `model.scale` by name.

/// One rung of the ladder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    pub name: &'static str,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
}

/// The ladder, smallest first. Non-embedding parameters ≈ 12·d²·layers (4·d² attention,
/// 8·d² MLP with d_ff = 4·d), which the names round.
pub const LADDER: [Scale; 7] = [
    Scale { name: "100k", d_model: 64, n_layers: 2, n_heads: 4 },
    Scale { name: "300k", d_model: 96, n_layers: 3, n_heads: 4 },
    Scale { name: "800k", d_model: 128, n_layers: 4, n_heads: 4 },
    Scale { name: "2m", d_model: 192, n_layers: 4, n_heads: 6 },
    Scale { name: "5m", d_model: 256, n_layers: 6, n_heads: 8 },
    Scale { name: "14m", d_model: 384, n_layers: 8, n_heads: 8 },
    Scale { name: "30m", d_model: 512, n_layers: 10, n_heads: 8 },
];

/// The scale called `name`, or an error listing the valid names.
pub fn scale(name: &str) -> Result<Scale, String> {
    LADDER.iter().find(|s| s.name == name).copied().ok_or_else(|| {
        let names: Vec<&str> = LADDER.iter().map(|s| s.name).collect();
        format!("unknown scale {name:?}; valid scales: {}", names.join(", "))
    })
}

/// Non-embedding parameters of a scale: `12·d²·L` plus biases and norms.
pub fn non_embedding_params(s: &Scale) -> usize {
    let d = s.d_model;
    s.n_layers * (12 * d * d + 13 * d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ladder_spans_a_tenth_to_thirty_million_parameters_in_increasing_order() {
        let sizes: Vec<usize> = LADDER.iter().map(non_embedding_params).collect();
        assert!(sizes.windows(2).all(|w| w[0] < w[1]), "{sizes:?}");
        assert!((90_000..130_000).contains(&sizes[0]), "{}", sizes[0]);
        assert!((25_000_000..35_000_000).contains(&sizes[6]), "{}", sizes[6]);
        assert!(LADDER.iter().all(|s| s.d_model % s.n_heads == 0));
    }

    #[test]
    fn an_unknown_scale_lists_the_valid_names() {
        let e = scale("huge").unwrap_err();
        assert!(e.contains("100k") && e.contains("30m"), "{e}");
    }
}
