//! Per-layer numerical kernels: each is a `*_forward` / `*_backward` pair over flat
//! row-major buffers, with the shapes in a comment on top. No allocation happens here.

pub mod act;
pub mod attention;
pub mod dropout;
pub mod embed;
pub mod fastmath;
pub mod linear;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod reduce;
pub mod rope;
pub mod simd;
pub mod tile;
pub mod transpose;

/// Rows per parallel work item for row-wise kernels; fixed so results never depend on
/// the thread count or on scheduling.
pub const ROW_CHUNK: usize = 64;
