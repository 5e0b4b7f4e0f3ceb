//! Recurrent layers on the CPU (LSTM, GRU and Elman cells, PyTorch's equations): one direction
//! of one layer runs as a GEMM over the whole input sequence (the input projection, with the
//! biases), then, step by step, the recurrent product added in place to that step's gates by
//! the packed kernel and the cell's element-wise part in one vectorised pass. Nothing is
//! allocated per step but the GRU's recurrent product and the LSTM's projection; candle's ops
//! would make a dozen tensors per step.

use crate::DisjointOut;
use crate::candle_core::utils::barrier_pool;
use crate::fused::exp;
use crate::packed::PackedWeight;

/// The element-wise part of a recurrent cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellMath {
    /// Gates i, f, g, o: `c' = σ(f) c + σ(i) tanh(g)`, `h' = σ(o) tanh(c')`.
    Lstm,
    /// Gates r, z, n: `n = tanh(x_n + σ(r) (W_hn h + b_hn))`, `h' = (1 − σ(z)) n + σ(z) h`.
    Gru,
    /// `h' = tanh(x + W h + b)`.
    Tanh,
    /// `h' = relu(x + W h + b)`.
    Relu,
}

impl CellMath {
    /// Gate blocks per step.
    pub fn gates(self) -> usize {
        match self {
            CellMath::Lstm => 4,
            CellMath::Gru => 3,
            CellMath::Tanh | CellMath::Relu => 1,
        }
    }
}

/// One direction of a recurrent layer, its weights packed for the CPU kernel.
pub struct PackedDirection {
    cell: CellMath,
    hidden: usize,
    /// `weight_ih`, `[input, gates × hidden]`.
    input: PackedWeight,
    /// `bias_ih`, plus `bias_hh` where it can be added once per step (all but the GRU).
    input_bias: Vec<f32>,
    /// `weight_hh`, `[output, gates × hidden]`.
    recurrent: PackedWeight,
    /// The GRU's `bias_hh` (its n block is multiplied by the reset gate).
    recurrent_bias: Option<Vec<f32>>,
    /// `weight_hr`, `[hidden, output]` (LSTM with a projection).
    projection: Option<PackedWeight>,
}

/// A direction's weights in PyTorch's layout (`[out, in]` row-major) and its biases.
pub struct DirectionWeights<'a> {
    pub weight_ih: &'a [f32],
    pub weight_hh: &'a [f32],
    pub bias_ih: Option<&'a [f32]>,
    pub bias_hh: Option<&'a [f32]>,
    pub weight_hr: Option<&'a [f32]>,
}

impl PackedDirection {
    /// Packs one direction with `input` features, `hidden` units and `output` = the size of
    /// `h` (`proj_size`, or `hidden`); bf16 panels when `bf16`.
    pub fn new(
        cell: CellMath,
        (input, hidden, output): (usize, usize, usize),
        w: &DirectionWeights<'_>,
        bf16: bool,
    ) -> PackedDirection {
        let rows = cell.gates() * hidden;
        let zeros = vec![0f32; rows];
        let b_ih = w.bias_ih.unwrap_or(&zeros);
        let b_hh = w.bias_hh.unwrap_or(&zeros);
        let (input_bias, recurrent_bias) = match cell {
            CellMath::Gru => (b_ih.to_vec(), Some(b_hh.to_vec())),
            _ => (b_ih.iter().zip(b_hh).map(|(a, b)| a + b).collect(), None),
        };
        PackedDirection {
            cell,
            hidden,
            input: PackedWeight::pack_transposed(w.weight_ih, input, rows, bf16),
            input_bias,
            recurrent: PackedWeight::pack_transposed(w.weight_hh, output, rows, bf16),
            recurrent_bias,
            projection: w
                .weight_hr
                .map(|p| PackedWeight::pack_transposed(p, hidden, output, bf16)),
        }
    }

    /// The size of `h`.
    pub fn output(&self) -> usize {
        self.projection
            .as_ref()
            .map_or(self.hidden, PackedWeight::n)
    }

    /// Runs over `x` (`steps × batch` rows of `input` features, step-major), from `h`
    /// (`[batch, output]`) and, for an LSTM, `c` (`[batch, hidden]`), which hold the final
    /// states after; backwards in time when `reverse`. Step `t`'s `h` goes to columns
    /// `offset..offset + output` of rows `t × batch ..` of `out` (rows of `width` values).
    ///
    /// The input projection of the whole sequence runs over the pool. Then, with enough rows
    /// for every worker ([`ROWS_PER_WORKER`] each), each worker steps its own rows through the
    /// whole sequence: the rows are independent, so nothing waits from step to step. With
    /// fewer rows, every step's product and cell are split over the pool instead.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        x: &[f32],
        (steps, batch): (usize, usize),
        reverse: bool,
        h: &mut [f32],
        c: Option<&mut [f32]>,
        out: &mut [f32],
        (width, offset): (usize, usize),
    ) {
        let (hs, os) = (self.hidden, self.output());
        assert_eq!(h.len(), batch * os, "recurrent step: h size");
        if let Some(c) = &c {
            assert_eq!(c.len(), batch * hs, "recurrent step: c size");
        }
        assert_eq!(
            out.len(),
            steps * batch * width,
            "recurrent step: output size"
        );
        assert!(offset + os <= width);
        let mut gates = self
            .input
            .matmul_slices(x, steps * batch, Some(&self.input_bias));
        let workers = barrier_pool().n_workers() + 1;
        let run = Run {
            steps,
            batch,
            reverse,
            width,
            offset,
        };
        let (gates_out, h_out, out_out) = (
            DisjointOut::new(&mut gates),
            DisjointOut::new(h),
            DisjointOut::new(out),
        );
        let c_out = c.map(DisjointOut::new);
        if workers > 1 && batch >= ROWS_PER_WORKER * workers {
            // One item per worker, each a contiguous share of the rows.
            barrier_pool().execute_chunked(workers, |items| {
                for w in items {
                    let rows = w * batch / workers..(w + 1) * batch / workers;
                    // SAFETY: the workers' row ranges are disjoint; every buffer is cut to them.
                    let c = c_out
                        .as_ref()
                        .map(|c| unsafe { c.slice(rows.start * hs..rows.end * hs) });
                    let mut part = Part {
                        h: unsafe { h_out.slice(rows.start * os..rows.end * os) },
                        rows,
                        gates: &gates_out,
                        c,
                        out: &out_out,
                    };
                    self.steps(&run, &mut part, false);
                }
            });
        } else {
            // SAFETY: this thread holds every buffer; the pooled work inside cuts by rows.
            let mut part = Part {
                rows: 0..batch,
                gates: &gates_out,
                h: unsafe { h_out.slice(0..batch * os) },
                c: c_out.as_ref().map(|c| unsafe { c.slice(0..batch * hs) }),
                out: &out_out,
            };
            self.steps(&run, &mut part, true);
        }
    }

    /// Steps `part`'s rows through the sequence; each step's product and cell over the pool
    /// when `pooled`, on this thread otherwise.
    fn steps(&self, run: &Run, part: &mut Part<'_>, pooled: bool) {
        let (hs, os) = (self.hidden, self.output());
        let g = self.cell.gates() * hs;
        let (r0, n) = (part.rows.start, part.rows.len());
        let mut full = match self.projection {
            Some(_) => vec![0f32; n * hs],
            None => Vec::new(),
        };
        for s in 0..run.steps {
            let t = if run.reverse { run.steps - 1 - s } else { s };
            let at = (t * run.batch + r0) * g;
            // SAFETY: rows `part.rows` of step `t` belong to this part.
            let gt = unsafe { part.gates.slice(at..at + n * g) };
            let h: &mut [f32] = part.h;
            // The recurrent product, added in place to the step's gates (the GRU keeps it apart:
            // its n block is multiplied by the reset gate).
            let gh = match (self.cell, pooled) {
                (CellMath::Gru, true) => {
                    self.recurrent
                        .matmul_slices(h, n, self.recurrent_bias.as_deref())
                }
                (CellMath::Gru, false) => {
                    self.recurrent
                        .matmul_slices_here(h, n, self.recurrent_bias.as_deref())
                }
                (_, true) => {
                    self.recurrent.matmul_add(h, n, gt);
                    Vec::new()
                }
                (_, false) => {
                    self.recurrent.matmul_add_here(h, n, gt);
                    Vec::new()
                }
            };
            let gt: &[f32] = gt;
            let projected = self.projection.is_some();
            let cell = self.cell;
            let (h_out, c_out, full_out) = (
                DisjointOut::new(h),
                part.c.as_deref_mut().map(DisjointOut::new),
                DisjointOut::new(&mut full),
            );
            let out = part.out;
            // The cell over rows `rows` of this part, each row's new `h` written to the output.
            let cell_rows = |rows: std::ops::Range<usize>| {
                // SAFETY: callers hand out disjoint row ranges of this part, and each buffer
                // below is cut to those rows (the output to those rows' columns of this
                // direction).
                let (a, b) = (rows.start, rows.end);
                let g_rows = &gt[a * g..b * g];
                let h_rows = unsafe { h_out.slice(a * os..b * os) };
                match cell {
                    CellMath::Lstm => {
                        let c = c_out.as_ref().expect("an LSTM carries a cell state");
                        let c_rows = unsafe { c.slice(a * hs..b * hs) };
                        match projected {
                            true => {
                                let f_rows = unsafe { full_out.slice(a * hs..b * hs) };
                                lstm_simd(g_rows, c_rows, f_rows, hs);
                            }
                            false => lstm_simd(g_rows, c_rows, h_rows, hs),
                        }
                    }
                    CellMath::Gru => gru_simd(g_rows, &gh[a * g..b * g], h_rows, hs),
                    CellMath::Tanh | CellMath::Relu => {
                        elman_simd(g_rows, h_rows, cell == CellMath::Relu)
                    }
                }
                if !projected {
                    for (i, row) in (a..b).zip(h_rows.chunks_exact(os)) {
                        let at = (t * run.batch + r0 + i) * run.width + run.offset;
                        unsafe { out.slice(at..at + os) }.copy_from_slice(row);
                    }
                }
            };
            if pooled {
                barrier_pool().execute_chunked(n, cell_rows);
            } else {
                cell_rows(0..n);
            }
            if let Some(p) = &self.projection {
                let projected = match pooled {
                    true => p.matmul_slices(&full, n, None),
                    false => p.matmul_slices_here(&full, n, None),
                };
                part.h.copy_from_slice(&projected);
                for (i, row) in part.h.chunks_exact(os).enumerate() {
                    let at = (t * run.batch + r0 + i) * run.width + run.offset;
                    // SAFETY: row `r0 + i` of step `t` belongs to this part.
                    unsafe { out.slice(at..at + os) }.copy_from_slice(row);
                }
            }
        }
    }
}

/// Rows per worker from which [`PackedDirection::run`] gives each worker its own rows.
pub const ROWS_PER_WORKER: usize = 4;

/// The shape of one [`PackedDirection::run`].
struct Run {
    steps: usize,
    batch: usize,
    reverse: bool,
    width: usize,
    offset: usize,
}

/// The rows one worker steps through the sequence, and where they live.
struct Part<'a> {
    rows: std::ops::Range<usize>,
    /// The gates of every step, `[steps][batch][gates × hidden]`.
    gates: &'a DisjointOut,
    /// `h` of these rows.
    h: &'a mut [f32],
    /// `c` of these rows (LSTM).
    c: Option<&'a mut [f32]>,
    /// The layer's output, `[steps][batch][width]`.
    out: &'a DisjointOut,
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `tanh(x) = 1 − 2 / (e^{2x} + 1)`: absolute error near 1e-7, saturating cleanly.
#[inline(always)]
fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// The LSTM cell over `batch` rows of gates (`[i f g o]`, `hidden` each): `c` updated in
/// place, `h` written.
#[inline(always)]
fn lstm_rows(gates: &[f32], c: &mut [f32], h: &mut [f32], hidden: usize) {
    for ((g, c), h) in gates
        .chunks_exact(4 * hidden)
        .zip(c.chunks_exact_mut(hidden))
        .zip(h.chunks_exact_mut(hidden))
    {
        let (i, rest) = g.split_at(hidden);
        let (f, rest) = rest.split_at(hidden);
        let (gg, o) = rest.split_at(hidden);
        for j in 0..hidden {
            let next = sigmoid(f[j]) * c[j] + sigmoid(i[j]) * tanh(gg[j]);
            c[j] = next;
            h[j] = sigmoid(o[j]) * tanh(next);
        }
    }
}

crate::multiversion!(lstm_simd(gates: &[f32], c: &mut [f32], h: &mut [f32], hidden: usize) => lstm_rows);

/// The GRU cell: `gx` the input side (`[r z n]` with `bias_ih`), `gh` the recurrent side (with
/// `bias_hh`); `h` updated in place.
#[inline(always)]
fn gru_rows(gx: &[f32], gh: &[f32], h: &mut [f32], hidden: usize) {
    let g = 3 * hidden;
    for ((x, r), h) in gx
        .chunks_exact(g)
        .zip(gh.chunks_exact(g))
        .zip(h.chunks_exact_mut(hidden))
    {
        for j in 0..hidden {
            let reset = sigmoid(x[j] + r[j]);
            let update = sigmoid(x[hidden + j] + r[hidden + j]);
            let n = tanh(x[2 * hidden + j] + reset * r[2 * hidden + j]);
            h[j] = n + update * (h[j] - n);
        }
    }
}

crate::multiversion!(gru_simd(gx: &[f32], gh: &[f32], h: &mut [f32], hidden: usize) => gru_rows);

/// The Elman cell: `h = tanh(g)` or `relu(g)`.
#[inline(always)]
fn elman_rows(gates: &[f32], h: &mut [f32], relu: bool) {
    if relu {
        for (h, &g) in h.iter_mut().zip(gates) {
            *h = g.max(0.0);
        }
    } else {
        for (h, &g) in h.iter_mut().zip(gates) {
            *h = tanh(g);
        }
    }
}

crate::multiversion!(elman_simd(gates: &[f32], h: &mut [f32], relu: bool) => elman_rows);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tanh_and_sigmoid_match_libm() {
        for i in -2000..=2000 {
            let x = i as f32 / 100.0;
            assert!((tanh(x) - x.tanh()).abs() < 2e-7, "tanh({x})");
            let s = 1.0 / (1.0 + (-x as f64).exp());
            assert!((sigmoid(x) as f64 - s).abs() < 2e-7, "sigmoid({x})");
        }
        assert_eq!(tanh(100.0), 1.0);
        assert_eq!(tanh(-100.0), -1.0);
        assert!(sigmoid(-100.0) < 1e-37 && sigmoid(100.0) == 1.0);
    }
}
