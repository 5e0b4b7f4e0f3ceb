//! Matrix-vector products in f32 for decoding one token: the whole weight matrix streams through
//! once per token, so what matters is reading memory at full speed on every core. The GEMM
//! kernel candle calls handles a single row with one thread; these split the output across
//! candle's worker pool and are compiled for AVX-512 or AVX2 (chosen at run time).

use super::DisjointOut;
use super::candle_core::{self as candle, CpuStorage, DType, Storage, Tensor, utils::barrier_pool};

/// Output columns per task (a multiple of every vector width).
const CHUNK: usize = 64;

/// `y[j] += Σ_i x[i] · w[i][j]` for a block of consecutive rows of a row-major matrix with
/// `y.len()` columns (one contiguous stream of memory). Four rows per pass over `y`, so that
/// `y` is loaded and stored a quarter as often.
#[inline(always)]
fn axpy_rows(x: &[f32], w: &[f32], y: &mut [f32]) {
    let out = y.len();
    let full = x.len() / 4 * 4;
    for (xs, ws) in x[..full].chunks_exact(4).zip(w.chunks_exact(4 * out)) {
        let (r0, rest) = ws.split_at(out);
        let (r1, rest) = rest.split_at(out);
        let (r2, r3) = rest.split_at(out);
        for ((((yj, a), b), c), d) in y.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3) {
            *yj += xs[0] * a + xs[1] * b + xs[2] * c + xs[3] * d;
        }
    }
    for (&xi, row) in x[full..].iter().zip(w[full * out..].chunks_exact(out)) {
        for (yj, &wj) in y.iter_mut().zip(row) {
            *yj += xi * wj;
        }
    }
}

/// `row · x`, the row read front to back (one sequential stream, which the hardware prefetcher
/// follows) into four independent 16-wide FMA chains.
#[inline(always)]
fn dot(x: &[f32], row: &[f32]) -> f32 {
    let n = x.len() - x.len() % 64;
    let mut acc = [[0f32; 16]; 4];
    for (xc, rc) in x[..n].chunks_exact(64).zip(row[..n].chunks_exact(64)) {
        for (k, a) in acc.iter_mut().enumerate() {
            for l in 0..16 {
                a[l] = rc[16 * k + l].mul_add(xc[16 * k + l], a[l]);
            }
        }
    }
    let tail: f32 = row[n..].iter().zip(&x[n..]).map(|(p, q)| p * q).sum();
    acc.iter().flatten().sum::<f32>() + tail
}

/// `y[r] = w[r] · x` over rows `r0..r0 + y.len()` of a row-major `[out, x.len()]`.
#[inline(always)]
fn dot_rows(x: &[f32], w: &[f32], r0: usize, y: &mut [f32]) {
    let n = x.len();
    for (k, yr) in y.iter_mut().enumerate() {
        // Ask for the row after next while this one streams in.
        #[cfg(target_arch = "x86_64")]
        if let Some(ahead) = w.get((r0 + k + 2) * n..(r0 + k + 3) * n) {
            for line in ahead.chunks(16) {
                // SAFETY: a prefetch is a hint; the address is inside `w`.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        line.as_ptr().cast(),
                    )
                };
            }
        }
        *yr = dot(x, &w[(r0 + k) * n..(r0 + k + 1) * n]);
    }
}

crate::multiversion!(axpy_rows_simd(x: &[f32], w: &[f32], y: &mut [f32]) => axpy_rows);
crate::multiversion!(dot_rows_simd(x: &[f32], w: &[f32], r0: usize, y: &mut [f32]) => dot_rows);

/// Input rows per task of [`vec_mat`].
const ROWS: usize = 64;

/// `x · w` for a vector `x` (`[inp]`) and a row-major `w` (`[inp, out]`): each task streams a
/// block of whole rows into its own partial sums, which are added up at the end.
pub fn vec_mat(x: &[f32], w: &[f32], out: usize) -> Vec<f32> {
    assert_eq!(w.len(), x.len() * out, "vec_mat: shapes do not agree");
    let blocks = x.len().div_ceil(ROWS);
    let mut partial = vec![0f32; blocks * out];
    let shared = DisjointOut::new(&mut partial);
    barrier_pool().execute_chunked(blocks, |range| {
        for b in range {
            let rows = b * ROWS..((b + 1) * ROWS).min(x.len());
            let ws = &w[rows.start * out..rows.end * out];
            // SAFETY: block `b` is handed to one task only; `partial` outlives the call.
            let y = unsafe { shared.slice(b * out..(b + 1) * out) };
            axpy_rows_simd(&x[rows], ws, y);
        }
    });
    let (first, rest) = partial.split_at_mut(out);
    for block in rest.chunks_exact(out) {
        for (a, b) in first.iter_mut().zip(block) {
            *a += b;
        }
    }
    partial.truncate(out);
    partial
}

/// `w · x` for a row-major `w` (`[out, inp]`) and a vector `x` (`[inp]`).
pub fn mat_vec(w: &[f32], x: &[f32]) -> Vec<f32> {
    let out = w.len() / x.len().max(1);
    assert_eq!(w.len(), x.len() * out, "mat_vec: shapes do not agree");
    let mut y = vec![0f32; out];
    let shared = DisjointOut::new(&mut y);
    barrier_pool().execute_chunked(out.div_ceil(CHUNK), |range| {
        let rows = range.start * CHUNK..(range.end * CHUNK).min(out);
        let r0 = rows.start;
        // SAFETY: the pool hands out disjoint ranges; `y` outlives the call.
        dot_rows_simd(x, w, r0, unsafe { shared.slice(rows) });
    });
    y
}

/// Runs `f` on the f32 data of a contiguous CPU tensor, without copying it.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(v)), Some((start, end))) => Some(f(&v[start..end])),
        _ => None,
    }
}

/// A single row `x` (`[1, inp]`) times `w` (`[inp, out]`), when both are f32 on the CPU.
pub fn try_vec_mat(x: &Tensor, w: &Tensor) -> candle::Result<Option<Tensor>> {
    let (&[1, inp], &[winp, out]) = (x.dims(), w.dims()) else {
        return Ok(None);
    };
    if inp != winp || x.dtype() != DType::F32 {
        return Ok(None);
    }
    let y = with_f32(x, |xs| with_f32(w, |ws| vec_mat(xs, ws, out))).flatten();
    y.map(|y| Tensor::from_vec(y, (1, out), x.device()))
        .transpose()
}

/// A single row `x` (`[1, inp]`) times `wᵀ` for `w` (`[out, inp]`), when both are f32 on the CPU.
pub fn try_mat_vec(x: &Tensor, w: &Tensor) -> candle::Result<Option<Tensor>> {
    let (&[1, inp], &[out, winp]) = (x.dims(), w.dims()) else {
        return Ok(None);
    };
    if inp != winp || x.dtype() != DType::F32 {
        return Ok(None);
    }
    let y = with_f32(x, |xs| with_f32(w, |ws| mat_vec(ws, xs))).flatten();
    y.map(|y| Tensor::from_vec(y, (1, out), x.device()))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_a_plain_product() {
        let (inp, out) = (77, 150);
        let x: Vec<f32> = (0..inp).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..inp * out).map(|i| (i as f32 * 0.011).cos()).collect();
        let y = vec_mat(&x, &w, out);
        for j in 0..out {
            let want: f32 = (0..inp).map(|i| x[i] * w[i * out + j]).sum();
            assert!((y[j] - want).abs() < 1e-4, "{j}: {} vs {want}", y[j]);
        }
        // The same matrix read as [out', inp'] = [150, 77].
        let y = mat_vec(&w, &x);
        for r in 0..out {
            let want: f32 = (0..inp).map(|i| x[i] * w[r * inp + i]).sum();
            assert!((y[r] - want).abs() < 1e-4, "{r}: {} vs {want}", y[r]);
        }
    }
}
