//! A small Levenberg–Marquardt least-squares solver for a handful of parameters (k ≤ ~10).
//!
//! The caller supplies a model as one closure that fills the weighted residuals and their
//! Jacobian; the solver owns the damping schedule and the stopping rule.

/// Most accepted steps before the solver gives up improving.
const MAX_STEPS: usize = 500;
/// Damping above which no step can improve the fit any more: the solver stops.
const LAMBDA_MAX: f64 = 1e16;
/// Relative SSE decrease below which an accepted step counts as converged.
const REL_TOL: f64 = 1e-14;
/// Floor on a diagonal damping entry, relative to the largest one (keeps `M` positive definite
/// when a parameter has no effect, e.g. a shape parameter of a zero-amplitude curve).
const DIAG_FLOOR: f64 = 1e-12;

/// `eval(θ, r, J)` fills residuals `r[i]` (length n) and Jacobian `J[i·k + j] = ∂r_i/∂θ_j`
/// (length n·k); it returns false when the model is not finite at θ.
pub(crate) trait Model: Fn(&[f64], &mut [f64], &mut [f64]) -> bool {}
impl<F: Fn(&[f64], &mut [f64], &mut [f64]) -> bool> Model for F {}

/// A parameter vector with its residuals (n), Jacobian (n×k, row-major) and SSE = Σ r².
struct Point {
    theta: Vec<f64>,
    r: Vec<f64>,
    jac: Vec<f64>,
    sse: f64,
}

/// Evaluates the model at `theta` for `n` points; `None` if anything is non-finite.
fn evaluate(model: &impl Model, theta: Vec<f64>, n: usize) -> Option<Point> {
    let (mut r, mut jac) = (vec![0.0; n], vec![0.0; n * theta.len()]);
    if !model(&theta, &mut r, &mut jac) {
        return None;
    }
    let sse: f64 = r.iter().map(|ri| ri * ri).sum();
    (sse.is_finite() && jac.iter().all(|j| j.is_finite())).then_some(Point { theta, r, jac, sse })
}

/// Minimizes Σ r_i(θ)² from `theta0` over `n` residuals; returns the best θ found and its SSE,
/// or `None` if the model is not finite at `theta0`.
pub(crate) fn minimize(model: &impl Model, theta0: Vec<f64>, n: usize) -> Option<(Vec<f64>, f64)> {
    let mut cur = evaluate(model, theta0, n)?;
    let mut lambda = 1e-3;
    for _ in 0..MAX_STEPS {
        let Some((next, used)) = damped_step(model, &cur, lambda) else { break };
        let converged = cur.sse - next.sse <= REL_TOL * cur.sse;
        lambda = (used / 10.0).max(1e-12);
        cur = next;
        if converged {
            break;
        }
    }
    Some((cur.theta, cur.sse))
}

/// From `cur`, raises the damping from `lambda` until a step lowers the SSE; returns the new
/// point and the damping that produced it, or `None` once the damping passes `LAMBDA_MAX`.
fn damped_step(model: &impl Model, cur: &Point, mut lambda: f64) -> Option<(Point, f64)> {
    let k = cur.theta.len();
    let (jtj, jtr) = normal_equations(&cur.jac, &cur.r, k);
    let max_diag = (0..k).map(|j| jtj[j * k + j]).fold(0.0, f64::max);
    while lambda < LAMBDA_MAX {
        let mut m = jtj.clone();
        for j in 0..k {
            m[j * k + j] += lambda * jtj[j * k + j].max(DIAG_FLOOR * max_diag).max(f64::MIN_POSITIVE);
        }
        if let Some(delta) = cholesky_solve(&m, &jtr, k) {
            let theta = cur.theta.iter().zip(&delta).map(|(t, d)| t - d).collect();
            if let Some(next) = evaluate(model, theta, cur.r.len()).filter(|p| p.sse < cur.sse) {
                return Some((next, lambda));
            }
        }
        lambda *= 10.0;
    }
    None
}

/// `(JᵀJ, Jᵀr)` for a row-major n×k Jacobian; JᵀJ is k×k row-major.
fn normal_equations(jac: &[f64], r: &[f64], k: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut jtj, mut jtr) = (vec![0.0; k * k], vec![0.0; k]);
    for (row, ri) in jac.chunks_exact(k).zip(r) {
        for a in 0..k {
            jtr[a] += row[a] * ri;
            for b in 0..k {
                jtj[a * k + b] += row[a] * row[b];
            }
        }
    }
    (jtj, jtr)
}

/// Solves `M x = b` for a symmetric positive definite k×k `M`; `None` if `M` is not.
fn cholesky_solve(m: &[f64], b: &[f64], k: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; k * k];
    for i in 0..k {
        for j in 0..=i {
            let s = m[i * k + j] - (0..j).map(|p| l[i * k + p] * l[j * k + p]).sum::<f64>();
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * k + i] = s.sqrt();
            } else {
                l[i * k + j] = s / l[j * k + j];
            }
        }
    }
    let mut z = vec![0.0; k];
    for i in 0..k {
        z[i] = (b[i] - (0..i).map(|p| l[i * k + p] * z[p]).sum::<f64>()) / l[i * k + i];
    }
    let mut x = vec![0.0; k];
    for i in (0..k).rev() {
        x[i] = (z[i] - (i + 1..k).map(|p| l[p * k + i] * x[p]).sum::<f64>()) / l[i * k + i];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_known_system() {
        let m = [4.0, 2.0, 2.0, 3.0];
        let x = cholesky_solve(&m, &[2.0, 1.0], 2).unwrap();
        assert!((x[0] - 0.5).abs() < 1e-15 && x[1].abs() < 1e-15, "{x:?}");
        assert!(cholesky_solve(&[1.0, 2.0, 2.0, 1.0], &[1.0, 1.0], 2).is_none());
    }

    #[test]
    fn minimize_fits_a_line_exactly() {
        let (xs, ys) = ([0.0, 1.0, 2.0, 3.0], [1.0, 3.0, 5.0, 7.0]);
        let model = |th: &[f64], r: &mut [f64], j: &mut [f64]| {
            for (i, (x, y)) in xs.iter().zip(&ys).enumerate() {
                r[i] = th[0] + th[1] * x - y;
                j[2 * i] = 1.0;
                j[2 * i + 1] = *x;
            }
            true
        };
        let (theta, sse) = minimize(&model, vec![0.0, 0.0], 4).unwrap();
        assert!((theta[0] - 1.0).abs() < 1e-9 && (theta[1] - 2.0).abs() < 1e-9 && sse < 1e-18, "{theta:?}");
    }
}
