//! Safe, strided views over the `gemm` crate: `C (+)= A · B` for f32 matrices.

use gemm::Parallelism;

/// A read-only strided matrix view: element (i, j) is `data[i*rs + j*cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `[rows, cols]` matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols)
    }

    /// A `[rows, cols]` matrix whose rows start `row_stride` elements apart.
    pub fn strided(data: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        let m = Mat { data, rows, cols, rs: row_stride, cs: 1 };
        m.check_bounds(data.len());
        m
    }

    /// `(row stride, column stride)` in elements.
    pub fn strides(&self) -> (usize, usize) {
        (self.rs, self.cs)
    }

    /// The transpose (a view; nothing moves).
    pub fn t(self) -> Self {
        Mat { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }

    fn check_bounds(&self, len: usize) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
            assert!(last < len, "matrix view [{}x{}] exceeds its buffer ({len})", self.rows, self.cols);
        }
    }
}

/// A mutable strided row-major destination view.
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
    rs: usize,
}

impl<'a> MatMut<'a> {
    /// A row-major `[rows, cols]` destination.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols)
    }

    /// A `[rows, cols]` destination whose rows start `row_stride` elements apart.
    pub fn strided(data: &'a mut [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        if rows > 0 && cols > 0 {
            assert!((rows - 1) * row_stride + cols <= data.len(), "destination view exceeds its buffer");
        }
        MatMut { data, rows, cols, rs: row_stride }
    }

    /// Row stride in elements (columns are contiguous).
    pub fn row_stride(&self) -> usize {
        self.rs
    }
}

/// How many threads one product may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// Run on the calling thread (inside an outer parallel loop).
    One,
    /// Split across the global rayon pool.
    Pool,
}

/// `C = A · B` (or `C += A · B` when `accumulate`), scaled by `scale`.
pub fn matmul(c: MatMut, a: Mat, b: Mat, scale: f32, accumulate: bool, threads: Threads) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    assert_eq!((c.rows, c.cols), (a.rows, b.cols), "output shape differs");
    if c.rows == 0 || c.cols == 0 {
        return;
    }
    if a.cols == 0 {
        if !accumulate {
            for i in 0..c.rows {
                c.data[i * c.rs..i * c.rs + c.cols].fill(0.0);
            }
        }
        return;
    }
    let parallelism = match threads {
        Threads::Pool if rayon::current_num_threads() > 1 && c.rows * c.cols * a.cols >= 1 << 15 => {
            Parallelism::Rayon(rayon::current_num_threads())
        }
        _ => Parallelism::None,
    };
    // SAFETY: every view was bounds-checked on construction; `c` is borrowed mutably and so
    // cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            c.rows,
            c.cols,
            a.cols,
            c.data.as_mut_ptr(),
            1,
            c.rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}
