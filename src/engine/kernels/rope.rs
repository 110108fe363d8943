//! Rotary position embeddings in the "rotate half" convention of HF (GPT-NeoX, Llama):
//! the first `rotary_dims` of each head are split into halves `(a, b)` and rotated as
//! `(a·cos − b·sin, b·cos + a·sin)` by angle `pos · base^(−2i/rotary_dims)`.

/// Precomputed `cos` and `sin` tables, `[max_positions, rotary_dims/2]`.
#[derive(Clone, Debug)]
pub struct RopeTable {
    pub half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    /// Tables for positions `0..max_positions` (computed in f64, stored in f32).
    pub fn new(rotary_dims: usize, base: f32, max_positions: usize) -> Self {
        let half = rotary_dims / 2;
        let mut cos = Vec::with_capacity(max_positions * half);
        let mut sin = Vec::with_capacity(max_positions * half);
        for pos in 0..max_positions {
            for i in 0..half {
                let inv_freq = (base as f64).powf(-(2.0 * i as f64) / rotary_dims as f64);
                let angle = pos as f64 * inv_freq;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        RopeTable { half, cos, sin }
    }

    /// Rotates one head vector in place at `pos`; `inverse` applies the transpose
    /// (which is the backward pass, since the rotation is orthogonal).
    #[inline]
    pub fn rotate(&self, head: &mut [f32], pos: usize, inverse: bool) {
        let h = self.half;
        if h == 0 {
            return;
        }
        let (cos, sin) = (&self.cos[pos * h..(pos + 1) * h], &self.sin[pos * h..(pos + 1) * h]);
        let sign = if inverse { -1.0 } else { 1.0 };
        let (a, rest) = head.split_at_mut(h);
        let b = &mut rest[..h];
        for i in 0..h {
            let (x, y, s) = (a[i], b[i], sign * sin[i]);
            a[i] = x * cos[i] - y * s;
            b[i] = y * cos[i] + x * s;
        }
    }
}

/// Rotates the query and key heads of one token's fused qkv row at `pos`.
#[inline]
pub fn rope_row(row: &mut [f32], table: &RopeTable, pos: usize, n_qk_heads: usize, head_dim: usize, inverse: bool) {
    for head in row[..n_qk_heads * head_dim].chunks_exact_mut(head_dim) {
        table.rotate(head, pos, inverse);
    }
}
