//! The input stage: each slot of a sequence is a token (looked up in `wte`) or a prompt
//! vector supplied by the caller; learned positions (`wpe`) are added to every slot.
//!
//! Shapes: `x0: [N, d]`, `slots: [N]`, `prompts: [P, d]` (indexed by `InputSlot::Prompt`).

use rayon::prelude::*;

/// What occupies one position of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputSlot {
    /// A vocabulary token.
    Token(u32),
    /// Row `i` of the caller's prompt-vector buffer.
    Prompt(u32),
}

/// `x0[n] = wte[token] or prompts[i]`, plus `wpe[n mod seq]` when given.
pub fn embed_forward(
    x0: &mut [f32],
    slots: &[InputSlot],
    wte: &[f32],
    prompts: &[f32],
    wpe: Option<&[f32]>,
    seq: usize,
) {
    let d = x0.len() / slots.len().max(1);
    x0.par_chunks_mut(d).zip(slots.par_iter()).enumerate().for_each(|(n, (x, slot))| {
        let src = match *slot {
            InputSlot::Token(t) => &wte[t as usize * d..(t as usize + 1) * d],
            InputSlot::Prompt(i) => &prompts[i as usize * d..(i as usize + 1) * d],
        };
        x.copy_from_slice(src);
        if let Some(wpe) = wpe {
            let pos = n % seq;
            x.iter_mut().zip(&wpe[pos * d..(pos + 1) * d]).for_each(|(x, p)| *x += p);
        }
    });
}

/// Scatters `dx0` into whichever of `dwte`, `dprompts`, `dwpe` are wanted (serial, so
/// repeated tokens accumulate in a fixed order).
pub fn embed_backward(
    dwte: Option<&mut [f32]>,
    dprompts: Option<&mut [f32]>,
    dwpe: Option<&mut [f32]>,
    dx0: &[f32],
    slots: &[InputSlot],
    seq: usize,
) {
    let d = dx0.len() / slots.len().max(1);
    let (mut dwte, mut dprompts) = (dwte, dprompts);
    for (g, slot) in dx0.chunks_exact(d).zip(slots) {
        let dst = match *slot {
            InputSlot::Token(t) => dwte.as_deref_mut().map(|w| &mut w[t as usize * d..(t as usize + 1) * d]),
            InputSlot::Prompt(i) => dprompts.as_deref_mut().map(|p| &mut p[i as usize * d..(i as usize + 1) * d]),
        };
        if let Some(dst) = dst {
            dst.iter_mut().zip(g).for_each(|(a, b)| *a += b);
        }
    }
    if let Some(dwpe) = dwpe {
        for (n, g) in dx0.chunks_exact(d).enumerate() {
            let pos = n % seq;
            dwpe[pos * d..(pos + 1) * d].iter_mut().zip(g).for_each(|(a, b)| *a += b);
        }
    }
}
