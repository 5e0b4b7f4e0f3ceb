//! Quantized matrix products on the CPU for the GGUF block types Q4_0, Q4_1 and Q8_0 — the ones
//! small GGUF models are made of, and that candle multiplies with scalar code (Q4_1) or one
//! activation row at a time. As in llama.cpp, activations are quantized per block of 32 to int8
//! (scale stored as f16), block dot products are integer, and output rows are split across
//! candle's CPU worker pool (one pool for every op, so threads never contend). AVX2 kernels are
//! chosen at run time; other CPUs get the portable code.

use super::candle_core::utils::barrier_pool;

const QK: usize = 32;

/// A supported block type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `d` (f16) and 32 4-bit values `q`: `d * (q - 8)`.
    Q4_0,
    /// `d`, `m` (f16) and 32 4-bit values `q`: `d * q + m`.
    Q4_1,
    /// `d` (f16) and 32 int8 values `q`: `d * q`.
    Q8_0,
}

impl Kind {
    /// Bytes per block of 32 values.
    pub fn block_bytes(self) -> usize {
        match self {
            Kind::Q4_0 => 18,
            Kind::Q4_1 => 20,
            Kind::Q8_0 => 34,
        }
    }
}

/// A `[rows, cols]` matrix of quantized blocks, rows contiguous (the GGUF layout).
pub struct QMatrix {
    kind: Kind,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

/// Activations quantized to int8 per block of 32, llama.cpp's `q8_0` / `q8_1`.
struct QActs {
    q: Vec<i8>,
    /// Scale of each block (rounded through f16).
    d: Vec<f32>,
    /// `d * sum(q)` of each block (rounded through f16), for Q4_1's offset.
    s: Vec<f32>,
    /// `sum(q)` of each block, for Q4_0's offset of 8.
    sum: Vec<i32>,
}

fn f16(bytes: &[u8]) -> f32 {
    half::f16::from_le_bytes([bytes[0], bytes[1]]).to_f32()
}

fn round_f16(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// Quantizes `rows` rows of `cols` values (`cols` a multiple of 32).
fn quantize_acts(x: &[f32], cols: usize) -> QActs {
    let blocks = x.len() / QK;
    let mut a = QActs {
        q: vec![0; x.len()],
        d: Vec::with_capacity(blocks),
        s: Vec::with_capacity(blocks),
        sum: Vec::with_capacity(blocks),
    };
    debug_assert_eq!(x.len() % cols, 0);
    for (xs, qs) in x.chunks_exact(QK).zip(a.q.chunks_exact_mut(QK)) {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in qs.iter_mut().zip(xs) {
            *q = (v * id).round() as i8;
            sum += *q as i32;
        }
        a.d.push(round_f16(d));
        a.s.push(round_f16(d * sum as f32));
        a.sum.push(sum);
    }
    a
}

/// One weight row against one activation row, portable code.
fn dot_portable(kind: Kind, w: &[u8], q: &[i8], d: &[f32], s: &[f32], sum: &[i32]) -> f32 {
    let bb = kind.block_bytes();
    let mut total = 0f32;
    for (b, blk) in w.chunks_exact(bb).enumerate() {
        let qx = &q[b * QK..(b + 1) * QK];
        let dw = f16(blk);
        total += match kind {
            Kind::Q4_0 | Kind::Q4_1 => {
                let qs = &blk[bb - 16..];
                let mut si = 0i32;
                for j in 0..16 {
                    si += (qs[j] & 0x0F) as i32 * qx[j] as i32
                        + (qs[j] >> 4) as i32 * qx[j + 16] as i32;
                }
                if kind == Kind::Q4_0 {
                    dw * d[b] * (si - 8 * sum[b]) as f32
                } else {
                    dw * d[b] * si as f32 + f16(&blk[2..]) * s[b]
                }
            }
            Kind::Q8_0 => {
                let si: i32 = blk[2..]
                    .iter()
                    .zip(qx)
                    .map(|(&w, &x)| (w as i8) as i32 * x as i32)
                    .sum();
                dw * d[b] * si as f32
            }
        };
    }
    total
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Kind, QK};
    use std::arch::x86_64::*;

    const Q4_0: u8 = 0;
    const Q4_1: u8 = 1;
    const Q8_0: u8 = 2;

    /// Row data and activations for one dot product; lengths checked by `check`.
    pub struct Row<'a> {
        pub w: &'a [u8],
        pub q: &'a [i8],
        pub d: &'a [f32],
        pub s: &'a [f32],
        pub sum: &'a [i32],
    }

    /// The body shared by the AVX2 and AVX-512 VNNI kernels (inlined into each, so it is
    /// compiled with their features).
    #[inline(always)]
    unsafe fn body<const K: u8, const VNNI: bool>(r: &Row<'_>) -> f32 {
        let bb = [18usize, 20, 34][K as usize];
        let blocks = r.q.len() / QK;
        assert!(
            r.w.len() >= blocks * bb
                && r.d.len() >= blocks
                && r.s.len() >= blocks
                && r.sum.len() >= blocks
        );
        // SAFETY: every pointer below stays inside the slices checked above; the caller
        // guarantees the CPU features of the wrapper this is inlined into.
        unsafe {
            let (w, q) = (r.w.as_ptr(), r.q.as_ptr());
            let ones = _mm256_set1_epi16(1);
            let nibble = _mm_set1_epi8(0x0F);
            let mut acc = [_mm256_setzero_ps(), _mm256_setzero_ps()];
            let mut extra = 0f32;
            for b in 0..blocks {
                let blk = w.add(b * bb);
                let x = _mm256_loadu_si256(q.add(b * QK) as *const __m256i);
                let (u, v) = if K == Q8_0 {
                    let wv = _mm256_loadu_si256(blk.add(2) as *const __m256i);
                    (_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(x, wv))
                } else {
                    let packed = _mm_loadu_si128(blk.add(bb - 16) as *const __m128i);
                    let lo = _mm_and_si128(packed, nibble);
                    let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), nibble);
                    (_mm256_set_m128i(hi, lo), x)
                };
                // u8 × i8 products summed in fours (VNNI) or pairs then fours (AVX2; pairs
                // stay within i16: at most 2·127·127).
                let products = if VNNI {
                    _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, v)
                } else {
                    _mm256_madd_epi16(_mm256_maddubs_epi16(u, v), ones)
                };
                let dw =
                    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(*(blk as *const u16) as i32)));
                let scale = dw * *r.d.get_unchecked(b);
                let lane = b & 1;
                acc[lane] = _mm256_fmadd_ps(
                    _mm256_set1_ps(scale),
                    _mm256_cvtepi32_ps(products),
                    acc[lane],
                );
                if K == Q4_0 {
                    extra -= scale * (8 * *r.sum.get_unchecked(b)) as f32;
                } else if K == Q4_1 {
                    let m = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
                        *(blk.add(2) as *const u16) as i32,
                    )));
                    extra += m * *r.s.get_unchecked(b);
                }
            }
            let v = _mm256_add_ps(acc[0], acc[1]);
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1))) + extra
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn avx2<const K: u8>(r: &Row<'_>) -> f32 {
        // SAFETY: forwarded from `dot`.
        unsafe { body::<K, false>(r) }
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
    unsafe fn vnni<const K: u8>(r: &Row<'_>) -> f32 {
        // SAFETY: forwarded from `dot`.
        unsafe { body::<K, true>(r) }
    }

    /// The best kernel this CPU has, if any.
    #[derive(Clone, Copy)]
    pub enum Isa {
        Avx2,
        Vnni,
    }

    pub fn detect() -> Option<Isa> {
        let avx2 = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        let vnni = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni");
        match (avx2, vnni) {
            (true, true) => Some(Isa::Vnni),
            (true, false) => Some(Isa::Avx2),
            _ => None,
        }
    }

    /// One weight row against one activation row with the detected kernel.
    ///
    /// # Safety
    /// `isa` must come from [`detect`] on this CPU.
    pub unsafe fn dot(isa: Isa, kind: Kind, r: &Row<'_>) -> f32 {
        // SAFETY: the features of `isa` were detected.
        unsafe {
            match (isa, kind) {
                (Isa::Avx2, Kind::Q4_0) => avx2::<Q4_0>(r),
                (Isa::Avx2, Kind::Q4_1) => avx2::<Q4_1>(r),
                (Isa::Avx2, Kind::Q8_0) => avx2::<Q8_0>(r),
                (Isa::Vnni, Kind::Q4_0) => vnni::<Q4_0>(r),
                (Isa::Vnni, Kind::Q4_1) => vnni::<Q4_1>(r),
                (Isa::Vnni, Kind::Q8_0) => vnni::<Q8_0>(r),
            }
        }
    }
}

/// The output buffer, written by the pool's threads at disjoint offsets.
struct SharedOut(*mut f32);
// SAFETY: only used to write disjoint ranges while the owning Vec is alive (see `matmul`).
unsafe impl Sync for SharedOut {}

impl SharedOut {
    fn at(&self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

impl QMatrix {
    /// Wraps raw GGUF block data of a `[rows, cols]` matrix.
    pub fn new(kind: Kind, rows: usize, cols: usize, data: Vec<u8>) -> Option<QMatrix> {
        let ok = cols.is_multiple_of(QK) && data.len() == rows * cols / QK * kind.block_bytes();
        ok.then_some(QMatrix {
            kind,
            rows,
            cols,
            data,
        })
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `x · selfᵀ` for `x` of `n` rows of `cols` values: `n` rows of `rows` values.
    pub fn matmul(&self, x: &[f32]) -> Vec<f32> {
        let n = x.len() / self.cols;
        let acts = quantize_acts(x, self.cols);
        let row_bytes = self.cols / QK * self.kind.block_bytes();
        let nb = self.cols / QK;
        #[cfg(target_arch = "x86_64")]
        let isa = x86::detect();
        let kind = self.kind;
        let dot = |w: &[u8], i: usize| -> f32 {
            let (q, d, s, sum) = (
                &acts.q[i * self.cols..(i + 1) * self.cols],
                &acts.d[i * nb..(i + 1) * nb],
                &acts.s[i * nb..(i + 1) * nb],
                &acts.sum[i * nb..(i + 1) * nb],
            );
            #[cfg(target_arch = "x86_64")]
            if let Some(isa) = isa {
                // SAFETY: `isa` was detected on this CPU.
                return unsafe { x86::dot(isa, kind, &x86::Row { w, q, d, s, sum }) };
            }
            dot_portable(kind, w, q, d, s, sum)
        };
        // Output transposed ([rows, n]) so that each task writes one contiguous slab.
        let mut out_t = vec![0f32; self.rows * n];
        let out = SharedOut(out_t.as_mut_ptr());
        barrier_pool().execute_chunked(self.rows, |range| {
            // SAFETY: the pool hands out disjoint row ranges; each writes only its own
            // `range.len() * n` values of `out_t`, which outlives the call.
            let slab =
                unsafe { std::slice::from_raw_parts_mut(out.at(range.start * n), range.len() * n) };
            for (row, out) in range.zip(slab.chunks_mut(n)) {
                let w = &self.data[row * row_bytes..(row + 1) * row_bytes];
                for (i, o) in out.iter_mut().enumerate() {
                    *o = dot(w, i);
                }
            }
        });
        if n == 1 {
            return out_t;
        }
        let mut out = vec![0f32; n * self.rows];
        for (r, col) in out_t.chunks(n).enumerate() {
            for (i, &v) in col.iter().enumerate() {
                out[i * self.rows + r] = v;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference quantization of weights, as gguf-py and llama.cpp do it.
    fn quantize_weights(kind: Kind, w: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        for xs in w.chunks(QK) {
            match kind {
                Kind::Q8_0 => {
                    let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let d = amax / 127.0;
                    out.extend(half::f16::from_f32(d).to_le_bytes());
                    out.extend(xs.iter().map(|v| ((v / d).round() as i8) as u8));
                }
                Kind::Q4_0 => {
                    let max = xs
                        .iter()
                        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
                    let d = max / -8.0;
                    out.extend(half::f16::from_f32(d).to_le_bytes());
                    let q = |v: f32| ((v / d + 8.5) as i32).clamp(0, 15) as u8;
                    out.extend((0..16).map(|j| q(xs[j]) | (q(xs[j + 16]) << 4)));
                }
                Kind::Q4_1 => {
                    let min = xs.iter().fold(f32::INFINITY, |m, &v| m.min(v));
                    let max = xs.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                    let d = (max - min) / 15.0;
                    out.extend(half::f16::from_f32(d).to_le_bytes());
                    out.extend(half::f16::from_f32(min).to_le_bytes());
                    let q = |v: f32| (((v - min) / d + 0.5) as i32).clamp(0, 15) as u8;
                    out.extend((0..16).map(|j| q(xs[j]) | (q(xs[j + 16]) << 4)));
                }
            }
        }
        out
    }

    fn dequantize(kind: Kind, data: &[u8], len: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(len);
        for blk in data.chunks(kind.block_bytes()) {
            let d = f16(blk);
            match kind {
                Kind::Q8_0 => out.extend(blk[2..].iter().map(|&q| d * (q as i8) as f32)),
                Kind::Q4_0 | Kind::Q4_1 => {
                    let m = if kind == Kind::Q4_1 {
                        f16(&blk[2..])
                    } else {
                        0.0
                    };
                    let off = if kind == Kind::Q4_0 { 8.0 } else { 0.0 };
                    let qs = &blk[blk.len() - 16..];
                    out.extend(qs.iter().map(|&q| d * ((q & 0x0F) as f32 - off) + m));
                    out.extend(qs.iter().map(|&q| d * ((q >> 4) as f32 - off) + m));
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_dequantized_product() {
        let (rows, cols, n) = (37, 96, 3);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.3)
            .collect();
        let x: Vec<f32> = (0..n * cols)
            .map(|i| ((i * 104_729 % 997) as f32 / 498.0 - 1.0) * 2.0)
            .collect();
        for kind in [Kind::Q4_0, Kind::Q4_1, Kind::Q8_0] {
            let data = quantize_weights(kind, &w);
            let dq = dequantize(kind, &data, w.len());
            let m = QMatrix::new(kind, rows, cols, data).unwrap();
            let y = m.matmul(&x);
            let acts = quantize_acts(&x, cols);
            for i in 0..n {
                for r in 0..rows {
                    let exact: f32 = (0..cols).map(|k| dq[r * cols + k] * x[i * cols + k]).sum();
                    let got = y[i * rows + r];
                    // Activation quantization (8 bits per block of 32) is the only difference.
                    assert!(
                        (got - exact).abs() < 0.05,
                        "{kind:?} [{i}, {r}]: {got} vs {exact}"
                    );
                    // The SIMD and portable kernels agree.
                    let nb = cols / QK;
                    let portable = dot_portable(
                        kind,
                        &m.data[r * nb * kind.block_bytes()..(r + 1) * nb * kind.block_bytes()],
                        &acts.q[i * cols..(i + 1) * cols],
                        &acts.d[i * nb..(i + 1) * nb],
                        &acts.s[i * nb..(i + 1) * nb],
                        &acts.sum[i * nb..(i + 1) * nb],
                    );
                    assert!(
                        (got - portable).abs() <= 1e-4 * portable.abs().max(1.0),
                        "{kind:?}: {got} vs {portable}"
                    );
                }
            }
        }
    }
}
