//! Dense layers with their weights packed once at load: `y = x · W + b` with `x`, `y` and the
//! sums in f32, `W` kept either in f32 or rounded to bf16 (half the memory and half the bytes
//! streamed per product; `--dtype bf16`). bf16 widens to f32 exactly (a shift), so each
//! product is the stored weight times the f32 activation, summed in f32 with AVX-512 FMAs.
//!
//! Packing: the `[k, n]` weight is cut into panels of [`NR`] columns, each panel stored row
//! after row, so the kernel streams a slice of 384 rows of a panel while it keeps 12 rows of
//! output in registers. An f32 row is two vectors; a bf16 row is 16 32-bit lanes, lane `c`
//! carrying column `c` in its low half and column `c + 16` in its high half, so one load and a
//! shift / a mask give the two f32 vectors. Bias is written into the accumulators first: the
//! output needs no zero-fill and no second pass. Candle's matmul packs both operands on every
//! call; at batch 1 that and its per-call set-up were most of an encoder's time.
//!
//! Why not `vdpbf16ps` (AVX512_BF16's bf16 dot product) for bf16? On this project's Xeon it
//! retires at a quarter of the FMA rate (1.30 against 5.31 billion instructions/s on one core,
//! 12 independent chains each), so its two bf16 products per lane come out at half the f32
//! FMA's speed; widening in registers costs two integer ops per 24 FMAs.

use super::DisjointOut;
use super::candle_core::{self as candle, Tensor, utils::barrier_pool};

/// Output columns per panel: two AVX-512 vectors of f32.
pub const NR: usize = 32;
/// Lanes of a packed bf16 row.
const LANES: usize = NR / 2;
/// Rows per kernel call: 2 × MR accumulators, a row's two vectors, the mask and a broadcast fit
/// the 32 vector registers.
const MR: usize = 12;
/// Rows per task.
const ROWS_PER_TASK: usize = 8 * MR;
/// Most panels per task: the columns one task sweeps with the same rows (12 panels of
/// [`KC`] rows are 576 KiB of f32, in L2). Products of few rows take fewer, so that there
/// are tasks for every thread.
const PANELS_PER_TASK: usize = 12;
/// Depth of a block: [`MR`] rows of activations (19 KiB) stay in L1 while the kernel passes
/// over the task's panels, whose `KC`-row slices (48 KiB each in f32) come from L2. 384 is
/// the hidden size of the small encoders: their k = 384 products take one block, not two.
const KC: usize = 384;
/// Row stride of the copy of an [`MR`] × [`KC`] block of activations that the kernel reads:
/// a compile-time stride lets every row's broadcast address be one register plus a constant
/// (the strided rows of `x` took a dozen integer ops per depth step), and the extra 16 floats
/// put the rows in different L1 sets (rows 3072 floats apart all fell in one set).
const A_STRIDE: usize = KC + 16;

/// Whether this CPU runs the packed kernels (AVX-512F).
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

thread_local! {
    static BF16: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// While alive, dense layers built on this thread round their weights to bf16 (see
/// [`bf16_requested`]); dropping it restores the previous setting. A model loader holds one
/// for the span of the load.
#[must_use = "the setting ends when the scope is dropped"]
pub struct Bf16Scope {
    previous: bool,
}

impl Bf16Scope {
    /// Starts a scope in which dense weights are rounded to bf16 (`on`) or kept as loaded.
    pub fn begin(on: bool) -> Bf16Scope {
        Bf16Scope {
            previous: BF16.with(|p| p.replace(on)),
        }
    }
}

impl Drop for Bf16Scope {
    fn drop(&mut self) {
        BF16.with(|p| p.set(self.previous));
    }
}

/// Whether dense layers built now should keep bf16 weights.
pub fn bf16_requested() -> bool {
    BF16.with(|p| p.get())
}

/// The stored panels.
enum Panels {
    /// `k × NR` f32 per panel.
    F32(Vec<f32>),
    /// `k × LANES` lanes per panel (see the module documentation).
    Bf16(Vec<u32>),
}

/// A `[k, n]` weight packed into panels (see the module documentation).
pub struct PackedWeight {
    k: usize,
    n: usize,
    panels: Panels,
}

/// `x` rounded to bf16, to nearest with ties to even (NaN stays NaN).
fn to_bf16(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

impl PackedWeight {
    /// Packs the row-major `[k, n]` f32 matrix `w` (`y = x · w`), rounded to bf16 if `bf16`.
    pub fn pack(w: &[f32], k: usize, n: usize, bf16: bool) -> PackedWeight {
        assert_eq!(w.len(), k * n, "PackedWeight::pack: shapes do not agree");
        Self::pack_with(k, n, bf16, |row, col| w[row * n + col])
    }

    /// Packs the transpose of the row-major `[n, k]` matrix `w` (PyTorch's `nn.Linear`
    /// layout, `y = x · wᵀ`) without a transposed copy.
    pub fn pack_transposed(w: &[f32], k: usize, n: usize, bf16: bool) -> PackedWeight {
        assert_eq!(
            w.len(),
            k * n,
            "PackedWeight::pack_transposed: shapes do not agree"
        );
        Self::pack_with(k, n, bf16, |row, col| w[col * k + row])
    }

    /// Packs the `[k, n]` matrix whose element `(row, col)` is `get(row, col)`.
    fn pack_with(
        k: usize,
        n: usize,
        bf16: bool,
        get: impl Fn(usize, usize) -> f32,
    ) -> PackedWeight {
        let panels = n.div_ceil(NR);
        let at = |row: usize, col: usize| if col < n { get(row, col) } else { 0.0 };
        let panels = if bf16 {
            let mut out = vec![0u32; panels * k * LANES];
            for (j, panel) in out.chunks_exact_mut(k * LANES).enumerate() {
                for (row, lanes) in panel.chunks_exact_mut(LANES).enumerate() {
                    for (c, lane) in lanes.iter_mut().enumerate() {
                        let col = j * NR + c;
                        let (lo, hi) = (to_bf16(at(row, col)), to_bf16(at(row, col + LANES)));
                        *lane = u32::from(lo) | (u32::from(hi) << 16);
                    }
                }
            }
            Panels::Bf16(out)
        } else {
            let mut out = vec![0f32; panels * k * NR];
            for (j, panel) in out.chunks_exact_mut(k * NR).enumerate() {
                for (row, cols) in panel.chunks_exact_mut(NR).enumerate() {
                    for (c, v) in cols.iter_mut().enumerate() {
                        *v = at(row, j * NR + c);
                    }
                }
            }
            Panels::F32(out)
        };
        PackedWeight { k, n, panels }
    }

    /// Packs an `[n, k]` `nn.Linear` weight for `y = x · wᵀ` (any float dtype, CPU).
    pub fn from_linear(w: &Tensor, bf16: bool) -> candle::Result<PackedWeight> {
        let (n, k) = w.dims2()?;
        let w = w.to_dtype(candle::DType::F32)?.contiguous()?;
        let packed = crate::dense::with_f32(&w, |v| PackedWeight::pack_transposed(v, k, n, bf16));
        packed.ok_or_else(|| candle::Error::Msg("packing a weight needs a CPU tensor".into()))
    }

    /// Input size.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Output size.
    pub fn n(&self) -> usize {
        self.n
    }

    /// `x · W (+ bias)` for `x` of shape `[..., k]` (CPU); the result is `[..., n]` f32.
    pub fn matmul(&self, x: &Tensor, bias: Option<&Tensor>) -> candle::Result<Tensor> {
        self.matmul_then(x, bias, Then::Nothing)
    }

    /// [`matmul`](Self::matmul), then `then` on each block of the output while the block is
    /// still in cache: no second pass over memory for an activation or a residual add.
    pub fn matmul_then(
        &self,
        x: &Tensor,
        bias: Option<&Tensor>,
        then: Then<'_>,
    ) -> candle::Result<Tensor> {
        let dims = x.dims();
        let Some((&k, lead)) = dims.split_last() else {
            return Err(candle::Error::Msg("packed matmul of a scalar".into()));
        };
        if k != self.k {
            return Err(candle::Error::Msg(format!(
                "packed matmul: input has {k} features, the weight {}",
                self.k
            )));
        }
        let m: usize = lead.iter().product();
        let bias = match bias {
            Some(b) => Some(b.to_dtype(candle::DType::F32)?.contiguous()?),
            None => None,
        };
        let x = x.to_dtype(candle::DType::F32)?.contiguous()?;
        let mut shape = lead.to_vec();
        shape.push(self.n);
        let add = match then {
            Then::Add(r) | Then::AddNorm { residual: r, .. } if r.dims() == shape => {
                Some(r.to_dtype(candle::DType::F32)?.contiguous()?)
            }
            Then::Add(r) | Then::AddNorm { residual: r, .. } => {
                return Err(candle::Error::Msg(format!(
                    "packed matmul: the added tensor is {:?}, the product {shape:?}",
                    r.dims()
                )));
            }
            _ => None,
        };
        let norm = match then {
            Then::AddNorm {
                weight, bias, eps, ..
            } => {
                let values = |t: &Tensor, what: &str| match t.dims() == [self.n] {
                    true => crate::dense::with_f32(t, <[f32]>::to_vec).ok_or_else(|| {
                        candle::Error::Msg(format!("packed matmul: norm {what} not on the CPU"))
                    }),
                    false => Err(candle::Error::Msg(format!(
                        "packed matmul: norm {what} is {:?}, the product's rows {}",
                        t.dims(),
                        self.n
                    ))),
                };
                Some((values(weight, "weight")?, values(bias, "bias")?, eps))
            }
            _ => None,
        };
        let run = |xs: &[f32], bias: Option<&[f32]>| match (&add, &norm, then) {
            (Some(r), Some((gamma, beta, eps)), _) => crate::dense::with_f32(r, |rs| {
                let norm = Norm {
                    gamma,
                    beta,
                    eps: *eps as f32,
                };
                self.matmul_slices_then(xs, m, bias, Epilogue::AddNorm(rs, norm))
            }),
            (Some(r), None, _) => crate::dense::with_f32(r, |rs| {
                self.matmul_slices_then(xs, m, bias, Epilogue::Add(rs))
            }),
            (None, _, Then::Gelu) => Some(self.matmul_slices_then(xs, m, bias, Epilogue::Gelu)),
            (None, _, _) => Some(self.matmul_slices_then(xs, m, bias, Epilogue::Nothing)),
        };
        let (y, whole_rows) = crate::dense::with_f32(&x, |xs| match &bias {
            Some(b) => crate::dense::with_f32(b, |bs| run(xs, Some(bs))).flatten(),
            None => run(xs, None),
        })
        .flatten()
        .ok_or_else(|| candle::Error::Msg("packed matmul needs CPU tensors".into()))?;
        let y = Tensor::from_vec(y, shape, x.device())?;
        match then {
            // Tasks that held only some of a row's columns could not normalise it: one pass.
            Then::AddNorm {
                weight, bias, eps, ..
            } if !whole_rows => crate::fused::layer_norm_owned(y, weight, bias, eps),
            _ => Ok(y),
        }
    }

    /// `x · W (+ bias)` for `m` rows of `x` (row-major `[m, k]`): `[m, n]` row-major.
    pub fn matmul_slices(&self, x: &[f32], m: usize, bias: Option<&[f32]>) -> Vec<f32> {
        self.matmul_slices_then(x, m, bias, Epilogue::Nothing).0
    }

    fn matmul_slices_then(
        &self,
        x: &[f32],
        m: usize,
        bias: Option<&[f32]>,
        then: Epilogue<'_>,
    ) -> (Vec<f32>, bool) {
        if let Some(b) = bias {
            assert_eq!(b.len(), self.n, "packed matmul: bias size");
        }
        let mut y: Vec<f32> = Vec::with_capacity(m * self.n);
        let whole_rows;
        {
            // SAFETY: `run` writes every element of the `m × n` output before reading any.
            let out = unsafe { std::slice::from_raw_parts_mut(y.as_mut_ptr(), m * self.n) };
            whole_rows = self.run(x, m, Start::Bias(bias), then, out);
        }
        // SAFETY: every element was written above.
        unsafe { y.set_len(m * self.n) };
        (y, whole_rows)
    }

    /// `y += x · W` for `m` rows of `x` (row-major `[m, k]`) and of `y` (`[m, n]`): a
    /// product added to what is there, as a recurrent step adds `h · W_hh` to its gates.
    pub fn matmul_add(&self, x: &[f32], m: usize, y: &mut [f32]) {
        assert_eq!(y.len(), m * self.n, "packed matmul: output size");
        self.run(x, m, Start::Accumulate, Epilogue::Nothing, y);
    }

    /// [`matmul_slices`](Self::matmul_slices) on the calling thread only, for callers that
    /// already split their work across the pool.
    pub fn matmul_slices_here(&self, x: &[f32], m: usize, bias: Option<&[f32]>) -> Vec<f32> {
        if let Some(b) = bias {
            assert_eq!(b.len(), self.n, "packed matmul: bias size");
        }
        let mut y = vec![0f32; m * self.n];
        self.run_here(x, m, Start::Bias(bias), Epilogue::Nothing, &mut y);
        y
    }

    /// [`matmul_add`](Self::matmul_add) on the calling thread only.
    pub fn matmul_add_here(&self, x: &[f32], m: usize, y: &mut [f32]) {
        assert_eq!(y.len(), m * self.n, "packed matmul: output size");
        self.run_here(x, m, Start::Accumulate, Epilogue::Nothing, y);
    }

    /// The whole product on the calling thread.
    fn run_here(&self, x: &[f32], m: usize, first: Start<'_>, then: Epilogue, y: &mut [f32]) {
        assert_eq!(x.len(), m * self.k, "packed matmul: shapes do not agree");
        let out = DisjointOut::new(y);
        self.block(x, 0..m, 0..self.n.div_ceil(NR), (first, then), &out);
    }

    /// The product into `y`, its first depth block starting from `first` and its last followed
    /// by `then`, on candle's pool. Whether each task held whole rows (all the columns), so
    /// that a norm in `then` was applied.
    fn run(&self, x: &[f32], m: usize, first: Start<'_>, then: Epilogue, y: &mut [f32]) -> bool {
        assert_eq!(x.len(), m * self.k, "packed matmul: shapes do not agree");
        if let Epilogue::Add(r) | Epilogue::AddNorm(r, _) = then {
            assert_eq!(r.len(), m * self.n, "packed matmul: added tensor size");
        }
        let blocks = m.div_ceil(ROWS_PER_TASK);
        let panels = self.n.div_ceil(NR);
        // Up to PANELS_PER_TASK panels per task, fewer when that would leave fewer than four
        // tasks per thread (a product of a few rows), spread evenly over the groups (36
        // panels in 3 x 12, not 4 x 8 + 4). Each task copies its rows' activations once.
        let threads = barrier_pool().n_workers() + 1;
        let most = (blocks * panels / (4 * threads)).clamp(1, PANELS_PER_TASK);
        let groups = panels.div_ceil(most);
        let per_task = panels.div_ceil(groups);
        // SAFETY (of every write through `out`): tasks write disjoint blocks of rows × columns.
        let out = DisjointOut::new(y);
        let out = &out;
        crate::for_each_task(
            groups * blocks,
            || (),
            |_, task| {
                let (g, b) = (task / blocks, task % blocks);
                let rows = b * ROWS_PER_TASK..((b + 1) * ROWS_PER_TASK).min(m);
                let panels = g * per_task..((g + 1) * per_task).min(panels);
                self.block(x, rows, panels, (first, then), out);
            },
        );
        groups == 1
    }

    /// Rows `rows` of the output, columns of panels `panels`, a depth block at a time (the
    /// first starts from `first`, the others add to what is stored; `then` follows the last).
    fn block(
        &self,
        x: &[f32],
        rows: std::ops::Range<usize>,
        panels: std::ops::Range<usize>,
        (first, then): (Start<'_>, Epilogue<'_>),
        out: &DisjointOut,
    ) {
        let k = self.k;
        let mut a = [0f32; MR * A_STRIDE];
        for k0 in (0..k).step_by(KC) {
            let ks = k0..(k0 + KC).min(k);
            let mut r = rows.start;
            while r < rows.end {
                let mr = (rows.end - r).min(MR);
                for (i, a) in a.chunks_exact_mut(A_STRIDE).take(mr).enumerate() {
                    let from = (r + i) * k;
                    a[..ks.len()].copy_from_slice(&x[from + ks.start..from + ks.end]);
                }
                for j in panels.clone() {
                    // One row of the next activation block, fetched into L2 while the kernel
                    // runs (the copy above otherwise waits on memory for every row).
                    let next = r + mr + (j - panels.start);
                    let ahead = match next < rows.end && j - panels.start < MR {
                        true => x[next * k + ks.start..].as_ptr(),
                        false => std::ptr::null(),
                    };
                    let cols = j * NR..((j + 1) * NR).min(self.n);
                    let start = match (k0, first) {
                        (0, Start::Bias(bias)) => Start::Bias(bias.map(|b| &b[cols.clone()])),
                        _ => Start::Accumulate,
                    };
                    // SAFETY: this task owns rows r..r + mr of columns `cols`.
                    let mut tile: [&mut [f32]; MR] = std::array::from_fn(|i| match i < mr {
                        true => unsafe {
                            let row = (r + i) * self.n;
                            out.slice(row + cols.start..row + cols.end)
                        },
                        false => &mut [],
                    });
                    let dst = &mut tile[..mr];
                    match &self.panels {
                        Panels::F32(p) => {
                            let panel = F32Rows(&p[j * k * NR..(j + 1) * k * NR]);
                            kernel(&a, ks.clone(), panel, (start, ahead), dst)
                        }
                        Panels::Bf16(p) => {
                            let panel = Bf16Rows(&p[j * k * LANES..(j + 1) * k * LANES]);
                            kernel(&a, ks.clone(), panel, (start, ahead), dst)
                        }
                    }
                    if ks.end == k {
                        match then {
                            Epilogue::Nothing => {}
                            Epilogue::Gelu => crate::fused::gelu_rows(dst),
                            Epilogue::Add(add) | Epilogue::AddNorm(add, _) => {
                                for (row, y) in (r..).zip(dst.iter_mut()) {
                                    let from = row * self.n + cols.start;
                                    for (y, a) in y.iter_mut().zip(&add[from..]) {
                                        *y += a;
                                    }
                                }
                            }
                        }
                    }
                }
                if let (true, Epilogue::AddNorm(_, norm)) = (ks.end == k, then)
                    && panels == (0..self.n.div_ceil(NR))
                {
                    // SAFETY: this task owns rows r..r + mr, and with every panel their whole
                    // width, complete now.
                    let done = unsafe { out.slice(r * self.n..(r + mr) * self.n) };
                    crate::fused::layer_norm_in_place_simd(done, norm.gamma, norm.beta, norm.eps);
                }
                r += mr;
            }
        }
    }
}

/// What [`PackedWeight::matmul_then`] does to each block of the product.
#[derive(Clone, Copy)]
pub enum Then<'a> {
    /// Nothing: the product (and bias) alone.
    Nothing,
    /// The exact (erf) GELU, as `nn.GELU()` computes it.
    Gelu,
    /// Adds a tensor of the product's size (a residual connection).
    Add(&'a Tensor),
    /// Adds `residual`, then layer-normalises each row with `weight`, `bias` and `eps` (a
    /// post-norm block, as BERT's): while the rows are in cache when a task holds whole rows.
    AddNorm {
        residual: &'a Tensor,
        weight: &'a Tensor,
        bias: &'a Tensor,
        eps: f64,
    },
}

/// A layer norm's parameters, each of the product's width.
#[derive(Clone, Copy)]
struct Norm<'a> {
    gamma: &'a [f32],
    beta: &'a [f32],
    eps: f32,
}

/// [`Then`] on the product's storage.
#[derive(Clone, Copy)]
enum Epilogue<'a> {
    Nothing,
    Gelu,
    /// The `[m, n]` values to add.
    Add(&'a [f32]),
    /// The `[m, n]` values to add, then the rows normalised.
    AddNorm(&'a [f32], Norm<'a>),
}

/// What a kernel call's sums start from.
#[derive(Clone, Copy)]
enum Start<'a> {
    /// The bias (zero without one): the first depth block.
    Bias(Option<&'a [f32]>),
    /// The values already in the output: later depth blocks.
    Accumulate,
}

/// One panel's rows, read as f32.
trait PanelRows: Copy {
    /// Number of rows the panel holds.
    fn rows(self) -> usize;
    /// Column `c` (`< NR`) of row `t`.
    fn get(self, t: usize, c: usize) -> f32;
    /// Asks for row `t` to be brought into cache (no effect past the end).
    #[cfg(target_arch = "x86_64")]
    fn prefetch(self, t: usize);
    /// Row `t` as two vectors (columns 0..16 and 16..32).
    ///
    /// # Safety
    /// AVX-512F is available and `t < self.rows()`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load(self, t: usize) -> (std::arch::x86_64::__m512, std::arch::x86_64::__m512);
}

#[derive(Clone, Copy)]
struct F32Rows<'a>(&'a [f32]);

impl PanelRows for F32Rows<'_> {
    fn rows(self) -> usize {
        self.0.len() / NR
    }

    fn get(self, t: usize, c: usize) -> f32 {
        self.0[t * NR + c]
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn prefetch(self, t: usize) {
        use std::arch::x86_64::*;
        let p = self.0.as_ptr().wrapping_add(t * NR);
        // SAFETY: a prefetch never faults; the address is computed, not dereferenced.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p.cast());
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(LANES).cast());
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load(self, t: usize) -> (std::arch::x86_64::__m512, std::arch::x86_64::__m512) {
        use std::arch::x86_64::*;
        // SAFETY: t < rows, so both loads lie in the panel (the caller's promise).
        unsafe {
            let p = self.0.as_ptr().add(t * NR);
            (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(LANES)))
        }
    }
}

#[derive(Clone, Copy)]
struct Bf16Rows<'a>(&'a [u32]);

impl PanelRows for Bf16Rows<'_> {
    fn rows(self) -> usize {
        self.0.len() / LANES
    }

    fn get(self, t: usize, c: usize) -> f32 {
        let lane = self.0[t * LANES + c % LANES];
        f32::from_bits(if c < LANES {
            lane << 16
        } else {
            lane & 0xffff_0000
        })
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn prefetch(self, t: usize) {
        use std::arch::x86_64::*;
        let p = self.0.as_ptr().wrapping_add(t * LANES);
        // SAFETY: a prefetch never faults; the address is computed, not dereferenced.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) };
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load(self, t: usize) -> (std::arch::x86_64::__m512, std::arch::x86_64::__m512) {
        use std::arch::x86_64::*;
        // SAFETY: t < rows, so the load lies in the panel (the caller's promise).
        unsafe {
            let lanes = _mm512_loadu_si512(self.0.as_ptr().add(t * LANES).cast());
            let high = _mm512_set1_epi32(0xffff_0000u32 as i32);
            (
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(lanes)),
                _mm512_castsi512_ps(_mm512_and_si512(lanes, high)),
            )
        }
    }
}

/// `dst[r][c] = start + Σ_{t in ks} a[r][t - ks.start] · w[t][c]` for up to [`MR`] rows of
/// `a` (rows [`A_STRIDE`] apart), where `start` is the bias or what `dst` holds; `ahead`
/// (or null) is a row of `ks.len()` floats to bring into L2 meanwhile.
fn kernel<P: PanelRows>(
    a: &[f32; MR * A_STRIDE],
    ks: std::ops::Range<usize>,
    panel: P,
    (start, ahead): (Start<'_>, *const f32),
    dst: &mut [&mut [f32]],
) {
    assert!(panel.rows() >= ks.end && ks.len() <= KC);
    #[cfg(target_arch = "x86_64")]
    {
        if supported() {
            macro_rules! rows {
                ($($n:literal)*) => {
                    match dst.len() {
                        // SAFETY: the features were checked; the slices have the sizes the
                        // kernel reads (asserted inside).
                        $($n => unsafe { avx512::kernel::<$n, P>(a, ks, panel, (start, ahead), dst) },)*
                        _ => unreachable!("at most MR rows"),
                    }
                };
            }
            rows!(1 2 3 4 5 6 7 8 9 10 11 12);
            return;
        }
    }
    kernel_scalar(a, ks, panel, start, dst);
}

/// The portable kernel: the same products and sums, in the same order per output.
fn kernel_scalar<P: PanelRows>(
    a: &[f32; MR * A_STRIDE],
    ks: std::ops::Range<usize>,
    panel: P,
    start: Start<'_>,
    dst: &mut [&mut [f32]],
) {
    for (r, row) in dst.iter_mut().enumerate() {
        for (c, y) in row.iter_mut().enumerate() {
            let mut acc = match start {
                Start::Bias(bias) => bias.map_or(0.0, |b| b[c]),
                Start::Accumulate => *y,
            };
            for (i, t) in ks.clone().enumerate() {
                acc = a[r * A_STRIDE + i].mul_add(panel.get(t, c), acc);
            }
            *y = acc;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{A_STRIDE, KC, LANES, MR, NR, PanelRows, Start};

    /// How far ahead of the kernel the panel is fetched, in rows (about 2 KiB of f32).
    const PREFETCH_ROWS: usize = 16;
    use std::arch::x86_64::*;

    /// [`super::kernel`] for `R` rows.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn kernel<const R: usize, P: PanelRows>(
        a: &[f32; MR * A_STRIDE],
        ks: std::ops::Range<usize>,
        panel: P,
        (start, ahead): (Start<'_>, *const f32),
        dst: &mut [&mut [f32]],
    ) {
        assert!(R <= MR && ks.len() <= KC && panel.rows() >= ks.end && dst.len() == R);
        let width = dst[0].len();
        assert!(width <= NR && dst.iter().all(|d| d.len() == width));
        // Columns past `width` (the last panel of an n that is not a multiple of NR).
        let mask = |half: usize| -> __mmask16 {
            let live = width.saturating_sub(half * LANES).min(LANES);
            ((1u32 << live) - 1) as __mmask16
        };
        let (m0, m1) = (mask(0), mask(1));
        // SAFETY (of the masked loads): they read only the `width` columns of a row or bias.
        let load = |p: *const f32| unsafe {
            [
                _mm512_maskz_loadu_ps(m0, p),
                _mm512_maskz_loadu_ps(m1, p.wrapping_add(LANES)),
            ]
        };
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        match start {
            Start::Bias(Some(b)) => acc = [load(b.as_ptr()); R],
            Start::Bias(None) => {}
            Start::Accumulate => {
                for (acc, row) in acc.iter_mut().zip(dst.iter()) {
                    *acc = load(row.as_ptr());
                }
            }
        }
        let xs = a.as_ptr();
        let step = |acc: &mut [[__m512; 2]; R], i: usize, t: usize| {
            panel.prefetch(t + PREFETCH_ROWS);
            // SAFETY: t < ks.end <= panel rows (asserted above); AVX-512F is on.
            let (b0, b1) = unsafe { panel.load(t) };
            for (r, acc) in acc.iter_mut().enumerate() {
                // SAFETY: r < R <= MR and i < KC < A_STRIDE (asserted above).
                let a = _mm512_set1_ps(unsafe { *xs.add(r * A_STRIDE + i) });
                acc[0] = _mm512_fmadd_ps(a, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(a, b1, acc[1]);
            }
        };
        // Sixteen depth steps at a time, each chunk's activation prefetch hoisted out of the
        // steps and the steps unrolled by two: no per-step test of the chunk boundary.
        let (n, t0) = (ks.len(), ks.start);
        let mut i = 0;
        while i < n {
            if !ahead.is_null() {
                // A prefetch never faults; the address is computed, not dereferenced.
                _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(i).cast());
            }
            let end = (i + 16).min(n);
            while i + 2 <= end {
                step(&mut acc, i, t0 + i);
                step(&mut acc, i + 1, t0 + i + 1);
                i += 2;
            }
            if i < end {
                step(&mut acc, i, t0 + i);
                i += 1;
            }
        }
        for (row, acc) in dst.iter_mut().zip(acc) {
            // SAFETY: masked stores write only the `width` columns of the row.
            unsafe {
                _mm512_mask_storeu_ps(row.as_mut_ptr(), m0, acc[0]);
                _mm512_mask_storeu_ps(row.as_mut_ptr().wrapping_add(LANES), m1, acc[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product with the weight as stored (rounded to bf16 if `bf16`), summed in f64.
    fn reference(x: &[f32], w: &[f32], shape: (usize, usize, usize), bf16: bool) -> Vec<f64> {
        let (m, k, n) = shape;
        let r = |v: f32| {
            if bf16 {
                half::bf16::from_f32(v).to_f32() as f64
            } else {
                v as f64
            }
        };
        (0..m * n)
            .map(|i| {
                let (row, col) = (i / n, i % n);
                (0..k)
                    .map(|t| x[row * k + t] as f64 * r(w[t * n + col]))
                    .sum()
            })
            .collect()
    }

    /// Activations `[m, k]` and a weight `[k, n]` with spread-out values.
    fn operands(m: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
        let x = (0..m * k)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let w = (0..k * n)
            .map(|i| ((i * 104729) % 997) as f32 / 997.0 - 0.5)
            .collect();
        (x, w)
    }

    #[test]
    fn packed_products_match_the_stored_weights() {
        // Odd k, n not a multiple of NR, m crossing kernel and task boundaries.
        for &(m, k, n) in &[
            (1, 7, 5),
            (13, 33, 40),
            (130, 64, 96),
            (25, 384, 1152),
            (100, 700, 300),
            (1200, 40, 1000),
        ] {
            let (x, w) = operands(m, k, n);
            let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
            // The same matrix given as its transpose packs to the same panels.
            let wt: Vec<f32> = (0..n * k).map(|i| w[(i % k) * n + i / k]).collect();
            for bf16 in [false, true] {
                let packed = PackedWeight::pack(&w, k, n, bf16);
                let again = PackedWeight::pack_transposed(&wt, k, n, bf16);
                match (&packed.panels, &again.panels) {
                    (Panels::F32(a), Panels::F32(b)) => assert_eq!(a, b),
                    (Panels::Bf16(a), Panels::Bf16(b)) => assert_eq!(a, b),
                    _ => panic!("formats differ"),
                }
                let want = reference(&x, &w, (m, k, n), bf16);
                for with_bias in [true, false] {
                    let b = with_bias.then_some(&bias[..]);
                    let got = packed.matmul_slices(&x, m, b);
                    let worst = got
                        .iter()
                        .zip(&want)
                        .enumerate()
                        .map(|(i, (&a, &w))| {
                            let w = w + if with_bias { bias[i % n] as f64 } else { 0.0 };
                            (a as f64 - w).abs() / (1.0 + w.abs())
                        })
                        .fold(0f64, f64::max);
                    assert!(
                        worst < 1e-5,
                        "{m}x{k}x{n} bf16={bf16}: relative error {worst}"
                    );
                }
                // Added to what the output holds (across every depth block).
                let mut acc: Vec<f32> = (0..m * n).map(|i| (i % 13) as f32 - 6.0).collect();
                packed.matmul_add(&x, m, &mut acc);
                let worst = acc
                    .iter()
                    .zip(&want)
                    .enumerate()
                    .map(|(i, (&a, &w))| {
                        let w = w + ((i % 13) as f64 - 6.0);
                        (a as f64 - w).abs() / (1.0 + w.abs())
                    })
                    .fold(0f64, f64::max);
                assert!(worst < 1e-5, "{m}x{k}x{n} bf16={bf16} add: {worst}");
                // The portable kernel computes the same sums.
                let cols = n.min(NR);
                let mut y = vec![0f32; cols];
                let mut dst = vec![&mut y[..]];
                let mut a = [0f32; MR * A_STRIDE];
                for k0 in (0..k).step_by(KC) {
                    let ks = k0..(k0 + KC).min(k);
                    a[..ks.len()].copy_from_slice(&x[ks.clone()]);
                    let start = match k0 {
                        0 => Start::Bias(None),
                        _ => Start::Accumulate,
                    };
                    match &packed.panels {
                        Panels::F32(p) => {
                            kernel_scalar(&a, ks, F32Rows(&p[..k * NR]), start, &mut dst)
                        }
                        Panels::Bf16(p) => {
                            kernel_scalar(&a, ks, Bf16Rows(&p[..k * LANES]), start, &mut dst)
                        }
                    }
                }
                for (c, v) in y.iter().enumerate() {
                    let d = (*v as f64 - want[c]).abs() / (1.0 + want[c].abs());
                    assert!(d < 1e-5, "scalar kernel, column {c}: {v} vs {}", want[c]);
                }
            }
        }
    }

    #[test]
    fn epilogues_act_on_the_whole_product() {
        let dev = candle::Device::Cpu;
        // k = 700 spans two depth blocks: the epilogue must follow the last one only. The
        // norm: 800 rows give tasks of whole rows (normalised in the kernel's loop), 30 and 130
        // rows tasks of some columns (normalised in a pass after).
        for &(m, k, n) in &[(1, 7, 5), (30, 700, 70), (130, 64, 96), (800, 40, 70)] {
            let (x, w) = operands(m, k, n);
            let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.01 - 0.3).collect();
            let add: Vec<f32> = (0..m * n).map(|i| (i % 17) as f32 - 8.0).collect();
            let packed = PackedWeight::pack(&w, k, n, false);
            let x = Tensor::from_vec(x, (m, k), &dev).unwrap();
            let bias = Tensor::from_vec(bias, n, &dev).unwrap();
            let add = Tensor::from_vec(add, (m, n), &dev).unwrap();
            let plain = packed.matmul(&x, Some(&bias)).unwrap();
            let diff = |a: &Tensor, b: &Tensor| {
                let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
                d.max(0).unwrap().to_scalar::<f32>().unwrap()
            };
            let gelu = packed.matmul_then(&x, Some(&bias), Then::Gelu).unwrap();
            assert!(
                diff(&gelu, &plain.gelu_erf().unwrap()) < 1e-6,
                "{m}x{k}x{n} gelu"
            );
            let sum = packed
                .matmul_then(&x, Some(&bias), Then::Add(&add))
                .unwrap();
            assert_eq!(
                diff(&sum, &(&plain + &add).unwrap()),
                0.0,
                "{m}x{k}x{n} add"
            );
            let gamma =
                Tensor::from_vec((0..n).map(|i| 1.0 + i as f32 * 0.02).collect(), n, &dev).unwrap();
            let beta = (&gamma * 0.1).unwrap();
            let then = Then::AddNorm {
                residual: &add,
                weight: &gamma,
                bias: &beta,
                eps: 1e-5,
            };
            let normed = packed.matmul_then(&x, Some(&bias), then).unwrap();
            let want =
                crate::fused::layer_norm(&(&plain + &add).unwrap(), &gamma, Some(&beta), 1e-5)
                    .unwrap();
            assert!(diff(&normed, &want) < 1e-5, "{m}x{k}x{n} add + norm");
            // A tensor of another shape is refused, even with as many elements.
            for wrong in [(m + 1, n), (n, m)] {
                let wrong = Tensor::zeros(wrong, candle::DType::F32, &dev).unwrap();
                let err = packed.matmul_then(&x, None, Then::Add(&wrong)).unwrap_err();
                assert!(err.to_string().contains("added tensor"), "{err}");
            }
        }
    }
}
