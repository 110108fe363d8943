//! The small dense linear algebra the censored fits need: Cholesky factorisation of a symmetric
//! positive-definite matrix (a few rows: one per coefficient), solves and the inverse.

/// Lower-triangular Cholesky factor `L` of symmetric `a` (`a = L·Lᵀ`), or `None` when a pivot
/// is not positive beyond `rel_tol` times its diagonal entry (not positive definite, or
/// numerically singular).
pub(crate) fn cholesky(a: &[Vec<f64>], rel_tol: f64) -> Option<Vec<Vec<f64>>> {
    let q = a.len();
    let mut l = vec![vec![0.0; q]; q];
    for i in 0..q {
        for j in 0..=i {
            let dot: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let pivot = a[i][i] - dot;
                if !pivot.is_finite() || pivot <= rel_tol * a[i][i].abs() {
                    return None;
                }
                l[i][i] = pivot.sqrt();
            } else {
                l[i][j] = (a[i][j] - dot) / l[j][j];
            }
        }
    }
    Some(l)
}

/// Solves `L·Lᵀ·x = b` given the Cholesky factor `l`.
pub(crate) fn cholesky_solve(l: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let q = l.len();
    let mut y = vec![0.0; q];
    for i in 0..q {
        y[i] = (b[i] - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
    }
    let mut x = vec![0.0; q];
    for i in (0..q).rev() {
        x[i] = (y[i] - (i + 1..q).map(|k| l[k][i] * x[k]).sum::<f64>()) / l[i][i];
    }
    x
}

/// Least squares of `y` on the design `rows` by the normal equations, or `None` when the Gram
/// matrix is singular beyond `rel_tol` (see [`cholesky`]).
pub(crate) fn least_squares<R: AsRef<[f64]>>(rows: &[R], y: &[f64], rel_tol: f64) -> Option<Vec<f64>> {
    let p = rows.first()?.as_ref().len();
    let gram: Vec<Vec<f64>> =
        (0..p).map(|i| (0..p).map(|j| rows.iter().map(|r| r.as_ref()[i] * r.as_ref()[j]).sum()).collect()).collect();
    let xty: Vec<f64> = (0..p).map(|i| rows.iter().zip(y).map(|(r, v)| r.as_ref()[i] * v).sum()).collect();
    Some(cholesky_solve(&cholesky(&gram, rel_tol)?, &xty))
}

/// `(L·Lᵀ)⁻¹` given the Cholesky factor `l`.
pub(crate) fn cholesky_inverse(l: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let q = l.len();
    let cols: Vec<Vec<f64>> = (0..q)
        .map(|j| {
            let e: Vec<f64> = (0..q).map(|i| f64::from(u8::from(i == j))).collect();
            cholesky_solve(l, &e)
        })
        .collect();
    (0..q).map(|i| (0..q).map(|j| cols[j][i]).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_of_a_known_matrix() {
        let a = vec![vec![4.0, 2.0], vec![2.0, 3.0]];
        let inv = cholesky_inverse(&cholesky(&a, 1e-12).unwrap());
        let want = [[3.0 / 8.0, -2.0 / 8.0], [-2.0 / 8.0, 4.0 / 8.0]];
        for i in 0..2 {
            for j in 0..2 {
                assert!((inv[i][j] - want[i][j]).abs() < 1e-15);
            }
        }
        assert!(cholesky(&[vec![1.0, 1.0], vec![1.0, 1.0]], 1e-12).is_none());
    }
}
