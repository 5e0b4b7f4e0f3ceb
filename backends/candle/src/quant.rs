//! Quantized matrix products on the CPU for the GGUF block types of 32 values — Q4_0, Q4_1, Q5_0,
//! Q5_1 and Q8_0, the ones small GGUF models are made of (Q5_0 is what `Q4_K_M` files hold where a
//! row is too short for a k-quant), and that candle multiplies with scalar code or with an
//! activation rounding unlike llama.cpp's.
//!
//! As in llama.cpp, activations are quantized per block of 32 to int8 (scale stored as f16) and
//! block dot products are integer. Weights are repacked at load into separate arrays of values,
//! f16 scales and f16 minimums, so that eight block scales convert in one instruction; four
//! weight rows are multiplied together against each activation row, sharing its loads. Output
//! rows are split across candle's CPU worker pool (one pool for every op: threads never
//! contend). AVX-512 VNNI (on 512-bit registers, two blocks per instruction) or AVX2 kernels are
//! chosen at run time; other CPUs get portable code.

use super::DisjointOut;
use super::candle_core::utils::barrier_pool;
use half::f16;

const QK: usize = 32;

/// A supported block type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `d` (f16) and 32 4-bit values `q`: `d * (q - 8)`.
    Q4_0,
    /// `d`, `m` (f16) and 32 4-bit values `q`: `d * q + m`.
    Q4_1,
    /// `d` (f16), a 32-bit plane of fifth bits and 32 4-bit values: `d * (q - 16)`.
    Q5_0,
    /// `d`, `m` (f16), a plane of fifth bits and 32 4-bit values: `d * q + m`.
    Q5_1,
    /// `d` (f16) and 32 int8 values `q`: `d * q`.
    Q8_0,
}

impl Kind {
    /// Bytes per block of 32 values in the GGUF layout.
    pub fn block_bytes(self) -> usize {
        match self {
            Kind::Q4_0 => 18,
            Kind::Q4_1 => 20,
            Kind::Q5_0 => 22,
            Kind::Q5_1 => 24,
            Kind::Q8_0 => 34,
        }
    }

    /// Bytes of packed values per block.
    fn value_bytes(self) -> usize {
        match self {
            Kind::Q4_0 | Kind::Q4_1 | Kind::Q5_0 | Kind::Q5_1 => 16,
            Kind::Q8_0 => 32,
        }
    }

    /// Whether blocks carry a minimum (`m`).
    fn has_min(self) -> bool {
        matches!(self, Kind::Q4_1 | Kind::Q5_1)
    }

    /// Whether blocks carry a plane of fifth bits.
    fn has_high(self) -> bool {
        matches!(self, Kind::Q5_0 | Kind::Q5_1)
    }
}

/// A `[rows, cols]` matrix of quantized blocks, repacked for the kernels.
pub struct QMatrix {
    kind: Kind,
    rows: usize,
    cols: usize,
    /// Packed values, `[rows][blocks][value_bytes]`.
    values: Vec<u8>,
    /// Block scales (f16 bits), `[rows][padded blocks]`: each row padded with zeros to a
    /// multiple of 8 blocks, so that the kernels always load eight.
    scales: Vec<u16>,
    /// Block minimums (f16 bits) for Q4_1 and Q5_1, laid out as `scales`; empty otherwise.
    mins: Vec<u16>,
    /// Fifth bits of Q5_0 and Q5_1 (bit `i` for value `i`), `[rows][blocks]`; empty otherwise.
    high: Vec<u32>,
}

/// Blocks rounded up to a multiple of 8.
fn padded(blocks: usize) -> usize {
    blocks.div_ceil(8) * 8
}

/// Activations quantized to int8 per block of 32, llama.cpp's `q8_0` / `q8_1`.
struct QActs {
    q: Vec<i8>,
    /// Scale of each block (rounded through f16), `[rows][padded blocks]` (zero-padded).
    d: Vec<f32>,
    /// Per block, what multiplies the weight block's minimum (Q4_1, Q5_1: `d * sum(q)`, rounded
    /// through f16) or scale (Q4_0, Q5_0: `-8 * d * sum(q)` or `-16 * ...`, the offset of its
    /// values), laid
    /// out as `d`.
    c: Vec<f32>,
    /// The values again, one block per 32-bit lane (empty unless asked for): per row, per group
    /// of 16 blocks, per slice `s` of four values (`4s..4s + 4`), 16 lanes of four bytes, lane
    /// `i` from block `16 g + i`; a last, partial group is padded with zeros.
    lanes: Vec<i8>,
}

/// Blocks per group of the lane layout: one per 32-bit lane of a 512-bit register.
const LANES: usize = 16;

fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// Runs `f` compiled with AVX2 where the CPU has it, so that its rounding and conversions
/// vectorise (`roundf` is otherwise a library call per value); the results are the same.
#[inline(always)]
pub(crate) fn vectorised<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: AVX2 and FMA were detected.
        return unsafe { avx2(f) };
    }
    f()
}

/// Runs `f(row)` for every row, split over candle's worker pool when there are several (a
/// prompt's activations) and on this thread for one (a decoding step).
pub(crate) fn per_row(rows: usize, f: impl Fn(usize) + Sync) {
    if rows >= 4 {
        barrier_pool().execute_chunked(rows, |range| range.for_each(&f));
    } else {
        (0..rows).for_each(f);
    }
}

/// Quantizes rows of `x` (`cols` values each) as llama.cpp quantizes activations for `kind`.
/// With `lanes`, the values are also laid out one block per lane (see [`QActs::lanes`]).
fn quantize_acts(kind: Kind, x: &[f32], cols: usize, lanes: bool) -> QActs {
    let nb = cols / QK;
    let nbp = padded(nb);
    let rows = x.len() / cols;
    // Bytes per row in the lane layout.
    let per_row_lanes = if lanes {
        nb.div_ceil(LANES) * LANES * QK
    } else {
        0
    };
    let mut a = QActs {
        q: vec![0; x.len()],
        d: vec![0.0; rows * nbp],
        c: vec![0.0; rows * nbp],
        lanes: vec![0; rows * per_row_lanes],
    };
    let (q, d, c, l) = (
        DisjointOut::new(&mut a.q),
        DisjointOut::new(&mut a.d),
        DisjointOut::new(&mut a.c),
        DisjointOut::new(&mut a.lanes),
    );
    per_row(rows, |r| {
        // SAFETY: each row writes only its own ranges of the three buffers, which outlive the
        // call.
        let (q, d, c) = unsafe {
            (
                q.slice(r * cols..(r + 1) * cols),
                d.slice(r * nbp..r * nbp + nb),
                c.slice(r * nbp..r * nbp + nb),
            )
        };
        let xs = &x[r * cols..(r + 1) * cols];
        vectorised(
            #[inline(always)]
            || quantize_row(kind, xs, q, d, c),
        );
        if per_row_lanes > 0 {
            // SAFETY: as above, this row's own range.
            let l = unsafe { l.slice(r * per_row_lanes..(r + 1) * per_row_lanes) };
            for (b, block) in q.chunks_exact(QK).enumerate() {
                let (g, i) = (b / LANES, b % LANES);
                for (s, four) in block.chunks_exact(4).enumerate() {
                    let at = ((g * (QK / 4) + s) * LANES + i) * 4;
                    l[at..at + 4].copy_from_slice(four);
                }
            }
        }
    });
    a
}

/// One row of [`quantize_acts`]: per block of 32, int8 values, the scale and the bias factor.
#[inline(always)]
fn quantize_row(kind: Kind, x: &[f32], q: &mut [i8], d: &mut [f32], c: &mut [f32]) {
    // Written as lanes of fixed-size arrays with comparisons rather than `f32::max` and a
    // saturating `as`, so that it vectorises; the values are the same (NaN aside).
    for (b, (xs, qs)) in x.chunks_exact(QK).zip(q.chunks_exact_mut(QK)).enumerate() {
        let mut lanes = [0f32; 8];
        for chunk in xs.chunks_exact(8) {
            for (m, &v) in lanes.iter_mut().zip(chunk) {
                let a = v.abs();
                *m = if a > *m { a } else { *m };
            }
        }
        let amax = lanes.iter().fold(0f32, |m, &v| if v > m { v } else { m });
        let scale = amax / 127.0;
        let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        let mut ints = [0i32; QK];
        for (i, &v) in ints.iter_mut().zip(xs) {
            let r = (v * id).round();
            // In range already (|v| ≤ amax); the bounds also send NaN to a number.
            let r = if r > -128.0 { r } else { -128.0 };
            let r = if r < 127.0 { r } else { 127.0 };
            // SAFETY: `r` is finite and within i32 after the two bounds above.
            *i = unsafe { r.to_int_unchecked::<i32>() };
        }
        let mut sum = 0i32;
        for (q, &i) in qs.iter_mut().zip(&ints) {
            *q = i as i8;
            sum += i;
        }
        let d16 = round_f16(scale);
        d[b] = d16;
        c[b] = match kind {
            Kind::Q4_0 => -8.0 * d16 * sum as f32,
            Kind::Q5_0 => -16.0 * d16 * sum as f32,
            Kind::Q4_1 | Kind::Q5_1 => round_f16(scale * sum as f32),
            Kind::Q8_0 => 0.0,
        };
    }
}

/// The inputs of one kernel call: weight rows starting at `row` against activation row `act`,
/// over their blocks from `from` on.
#[derive(Clone, Copy)]
struct Tile<'a> {
    m: &'a QMatrix,
    a: &'a QActs,
    row: usize,
    act: usize,
    from: usize,
}

impl Tile<'_> {
    fn blocks(&self) -> usize {
        self.m.cols / QK
    }
}

/// Portable kernel: one weight row against one activation row.
fn dot_portable(t: &Tile<'_>, r: usize) -> f32 {
    let (m, a) = (t.m, t.a);
    let nb = t.blocks();
    let nbp = padded(nb);
    let vb = m.kind.value_bytes();
    let row = t.row + r;
    let mut total = 0f32;
    for b in t.from..nb {
        let w = &m.values[(row * nb + b) * vb..(row * nb + b + 1) * vb];
        let x = &a.q[(t.act * nb + b) * QK..(t.act * nb + b + 1) * QK];
        let si: i32 = match m.kind {
            Kind::Q4_0 | Kind::Q4_1 | Kind::Q5_0 | Kind::Q5_1 => {
                let h = if m.kind.has_high() {
                    m.high[row * nb + b]
                } else {
                    0
                };
                let fifth = |i: usize| ((h >> i) & 1) as i32 * 16;
                (0..16)
                    .map(|j| {
                        ((w[j] & 0x0F) as i32 + fifth(j)) * x[j] as i32
                            + ((w[j] >> 4) as i32 + fifth(j + 16)) * x[j + 16] as i32
                    })
                    .sum()
            }
            Kind::Q8_0 => w
                .iter()
                .zip(x)
                .map(|(&w, &x)| (w as i8) as i32 * x as i32)
                .sum(),
        };
        let dw = f16::from_bits(m.scales[row * nbp + b]).to_f32();
        let ab = t.act * nbp + b;
        total += dw * a.d[ab] * si as f32;
        total += match m.kind {
            Kind::Q4_0 | Kind::Q5_0 => dw * a.c[ab],
            Kind::Q4_1 | Kind::Q5_1 => f16::from_bits(m.mins[row * nbp + b]).to_f32() * a.c[ab],
            Kind::Q8_0 => 0.0,
        };
    }
    total
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::{Kind, LANES, QK, Tile, TileOut, padded};
    use std::arch::x86_64::*;

    const Q4_0: u8 = 0;
    const Q4_1: u8 = 1;
    const Q8_0: u8 = 2;
    const Q5_0: u8 = 3;
    const Q5_1: u8 = 4;

    /// Bit `i` of `bits` as byte `i` (0 or 0x10) of a vector, on AVX2: byte i takes byte i / 8
    /// of `bits`; OR-ing every bit but bit i % 8 makes it all ones exactly when that bit is set.
    #[inline(always)]
    unsafe fn fifth_bits(bits: u32) -> __m256i {
        // SAFETY: plain arithmetic on registers; the caller has AVX2.
        unsafe {
            let spread = _mm256_shuffle_epi8(
                _mm256_set1_epi32(bits as i32),
                _mm256_set_epi64x(
                    0x0303_0303_0303_0303,
                    0x0202_0202_0202_0202,
                    0x0101_0101_0101_0101,
                    0,
                ),
            );
            let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
            let set = _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi8(-1));
            _mm256_and_si256(set, _mm256_set1_epi8(0x10))
        }
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        // SAFETY: plain arithmetic on registers.
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
        }
    }

    /// The bounds every kernel relies on, checked once per tile.
    #[inline(always)]
    fn check<const K: u8, const RW: usize, const RA: usize>(t: &Tile<'_>) {
        let (m, a) = (t.m, t.a);
        let nb = t.blocks();
        let nbp = padded(nb);
        let vb = m.kind.value_bytes();
        assert!(RW <= 2 && RA <= 8 && t.from <= nb && t.from.is_multiple_of(8));
        assert!((t.row + RW) * nb * vb <= m.values.len() && (t.row + RW) * nbp <= m.scales.len());
        assert!(
            (t.act + RA) * nb * QK <= a.q.len()
                && (t.act + RA) * nbp <= a.d.len()
                && (t.act + RA) * nbp <= a.c.len()
        );
        if K == Q4_1 || K == Q5_1 {
            assert!((t.row + RW) * nbp <= m.mins.len());
        }
        if K == Q5_0 || K == Q5_1 {
            assert!((t.row + RW) * nb <= m.high.len());
        }
    }

    /// `RW` weight rows from `t.row` against `RA` activation rows from `t.act`, into
    /// `out[r][c]` on AVX2. Each weight block is unpacked once for the `RA` activation rows.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::needless_range_loop)] // r and c index several arrays at once
    unsafe fn avx2<const K: u8, const RW: usize, const RA: usize>(t: &Tile<'_>, out: &mut TileOut) {
        let (m, a) = (t.m, t.a);
        let nb = t.blocks();
        let nbp = padded(nb);
        let vb = m.kind.value_bytes();
        check::<K, RW, RA>(t);
        // SAFETY: every offset below is within the bounds `check` asserted; the caller
        // detected the features.
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let nibble = _mm_set1_epi8(0x0F);
            // The bias terms (minimum or offset times the activation sums) are added into the
            // same accumulators: only their total is wanted.
            let mut acc = [[_mm256_setzero_ps(); RA]; RW];
            let f16x8 = |p: *const u16| _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
            let mut g = t.from;
            while g < nb {
                let n = (nb - g).min(8);
                // Scales are padded with zeros to whole groups of 8.
                let mut scale = [[_mm256_setzero_ps(); RA]; RW];
                for c in 0..RA {
                    let at = (t.act + c) * nbp + g;
                    let dx = _mm256_loadu_ps(a.d.as_ptr().add(at));
                    let cx = _mm256_loadu_ps(a.c.as_ptr().add(at));
                    for r in 0..RW {
                        let base = (t.row + r) * nbp + g;
                        let dw = f16x8(m.scales.as_ptr().add(base));
                        scale[r][c] = _mm256_mul_ps(dw, dx);
                        if K == Q4_0 || K == Q5_0 {
                            acc[r][c] = _mm256_fmadd_ps(dw, cx, acc[r][c]);
                        } else if K == Q4_1 || K == Q5_1 {
                            let mw = f16x8(m.mins.as_ptr().add(base));
                            acc[r][c] = _mm256_fmadd_ps(mw, cx, acc[r][c]);
                        }
                    }
                }
                for j in 0..n {
                    let lane = _mm256_set1_epi32(j as i32);
                    let mut u = [_mm256_setzero_si256(); RW];
                    for r in 0..RW {
                        let w = m.values.as_ptr().add(((t.row + r) * nb + g + j) * vb);
                        u[r] = if K == Q8_0 {
                            _mm256_loadu_si256(w as *const __m256i)
                        } else {
                            let packed = _mm_loadu_si128(w as *const __m128i);
                            let lo = _mm_and_si128(packed, nibble);
                            let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), nibble);
                            let v = _mm256_set_m128i(hi, lo);
                            if K == Q5_0 || K == Q5_1 {
                                let bits = *m.high.get_unchecked((t.row + r) * nb + g + j);
                                _mm256_or_si256(v, fifth_bits(bits))
                            } else {
                                v
                            }
                        };
                    }
                    for c in 0..RA {
                        let xq = a.q.as_ptr().add(((t.act + c) * nb + g + j) * QK);
                        let x = _mm256_loadu_si256(xq as *const __m256i);
                        for r in 0..RW {
                            // Q8_0's signed weights: their magnitudes against the activations
                            // carrying their signs.
                            let (uw, v) = if K == Q8_0 {
                                (_mm256_sign_epi8(u[r], u[r]), _mm256_sign_epi8(x, u[r]))
                            } else {
                                (u[r], x)
                            };
                            // u8 × i8 products summed in pairs (within i16: at most 2·127·127),
                            // then in fours.
                            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(uw, v), ones);
                            let s = _mm256_permutevar8x32_ps(scale[r][c], lane);
                            acc[r][c] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(p), acc[r][c]);
                        }
                    }
                }
                g += n;
            }
            for r in 0..RW {
                for c in 0..RA {
                    out[r][c] = hsum(acc[r][c]);
                }
            }
        }
    }

    /// The VNNI kernel on 512-bit registers: two blocks per instruction, so that the integer
    /// dot product, the scale, the conversion and the FMA are paid once per two blocks.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni")]
    #[allow(clippy::needless_range_loop)] // r and c index several arrays at once
    unsafe fn vnni512<const K: u8, const RW: usize, const RA: usize>(
        t: &Tile<'_>,
        out: &mut TileOut,
    ) {
        let (m, a) = (t.m, t.a);
        let nb = t.blocks();
        let nbp = padded(nb);
        let vb = m.kind.value_bytes();
        check::<K, RW, RA>(t);
        // SAFETY: every offset below is within the bounds `check` asserted; reads past a row's
        // last block are masked off; the caller detected the features.
        unsafe {
            let nibble = _mm512_set1_epi8(0x0F);
            let four = 0x0004_0004_0004_0004;
            // Shift the copies of each block's packed bytes in 128-bit lanes 1 and 3 by four:
            // their high nibbles are the block's values 16..32.
            let shifts = _mm512_set_epi64(four, four, 0, 0, four, four, 0, 0);
            let halves = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
            let mut acc = [[_mm512_setzero_ps(); RA]; RW];
            let f16x8 = |p: *const u16| _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
            let zext = |v: __m256| _mm512_zextps256_ps512(v);
            let mut g = t.from;
            while g < nb {
                let n = (nb - g).min(8);
                let mut scale = [[_mm256_setzero_ps(); RA]; RW];
                for c in 0..RA {
                    let at = (t.act + c) * nbp + g;
                    let dx = _mm256_loadu_ps(a.d.as_ptr().add(at));
                    let cx = _mm256_loadu_ps(a.c.as_ptr().add(at));
                    for r in 0..RW {
                        let base = (t.row + r) * nbp + g;
                        let dw = f16x8(m.scales.as_ptr().add(base));
                        scale[r][c] = _mm256_mul_ps(dw, dx);
                        if K == Q4_0 || K == Q5_0 {
                            acc[r][c] = _mm512_fmadd_ps(zext(dw), zext(cx), acc[r][c]);
                        } else if K == Q4_1 || K == Q5_1 {
                            let mw = f16x8(m.mins.as_ptr().add(base));
                            acc[r][c] = _mm512_fmadd_ps(zext(mw), zext(cx), acc[r][c]);
                        }
                    }
                }
                let mut j = 0;
                while j < n {
                    // Two blocks, or the last one alone (upper half masked to zero).
                    let two = j + 1 < n;
                    let idx = _mm512_add_epi32(halves, _mm512_set1_epi32(j as i32));
                    let mut u = [_mm512_setzero_si512(); RW];
                    for r in 0..RW {
                        let at = (t.row + r) * nb + g + j;
                        let w = m.values.as_ptr().add(at * vb);
                        u[r] = if K == Q8_0 {
                            let mask = if two { !0 } else { 0xFFFF_FFFF };
                            _mm512_maskz_loadu_epi8(mask, w as *const i8)
                        } else {
                            let mask = if two { 0xFFFF_FFFF } else { 0xFFFF };
                            let packed = _mm256_maskz_loadu_epi8(mask, w as *const i8);
                            let z = _mm512_castsi256_si512(packed);
                            let z = _mm512_shuffle_i64x2(z, z, 0x50);
                            let v = _mm512_and_si512(_mm512_srlv_epi16(z, shifts), nibble);
                            if K == Q5_0 || K == Q5_1 {
                                let hp = m.high.as_ptr().add(at);
                                let hi = if two { *hp.add(1) as u64 } else { 0 };
                                let bits = (*hp as u64) | (hi << 32);
                                let fifth = _mm512_maskz_mov_epi8(bits, _mm512_set1_epi8(0x10));
                                _mm512_or_si512(v, fifth)
                            } else {
                                v
                            }
                        };
                    }
                    for c in 0..RA {
                        let xq = a.q.as_ptr().add(((t.act + c) * nb + g + j) * QK);
                        let mask = if two { !0 } else { 0xFFFF_FFFF };
                        let x = _mm512_maskz_loadu_epi8(mask, xq);
                        for r in 0..RW {
                            let (uw, v) = if K == Q8_0 {
                                // Signed weights: magnitudes against sign-carrying activations.
                                let neg = _mm512_movepi8_mask(u[r]);
                                let xs = _mm512_mask_sub_epi8(x, neg, _mm512_setzero_si512(), x);
                                (_mm512_abs_epi8(u[r]), xs)
                            } else {
                                (u[r], x)
                            };
                            let p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), uw, v);
                            let s = _mm512_permutexvar_ps(idx, zext(scale[r][c]));
                            acc[r][c] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(p), acc[r][c]);
                        }
                    }
                    j += 2;
                }
                g += n;
            }
            for r in 0..RW {
                for c in 0..RA {
                    out[r][c] = _mm512_reduce_add_ps(acc[r][c]);
                }
            }
        }
    }

    /// Whether [`dot_lanes`] runs here: AVX-512 VNNI, and BITALG for the fifth bits.
    pub fn has_lanes() -> bool {
        matches!(detect(), Some(Isa::Vnni)) && is_x86_feature_detected!("avx512bitalg")
    }

    /// Control bytes of `vpshufbitqmb` for slice `s` (values `4s..4s + 4` of every block): in
    /// each 64-bit lane, the fifth bits of those values in its two blocks' 32-bit masks.
    const fn fifth_bits_of_slice(s: usize) -> i64 {
        let mut control = 0i64;
        let mut b = 0;
        while b < 8 {
            let bit = (b / 4) * 32 + 4 * s + b % 4;
            control |= (bit as i64) << (8 * b);
            b += 1;
        }
        control
    }

    /// One weight row against `RA` activation rows, for the types with unsigned values (Q4_0,
    /// Q4_1, Q5_0, Q5_1), with one block per 32-bit lane: 16 blocks of the row are transposed
    /// in registers (a lane's four bytes are four consecutive values of its block), the
    /// activations come laid out the same way, and eight `vpdpbusd` per 16 blocks give each
    /// lane its block's exact integer dot product. The scale, conversion and FMA then come
    /// once per 16 blocks, where [`vnni512`] pays them once per two.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni,avx512bitalg")]
    #[allow(clippy::needless_range_loop)] // c indexes several arrays at once
    unsafe fn lanes512<const K: u8, const RA: usize>(t: &Tile<'_>, out: &mut TileOut) {
        let (m, a) = (t.m, t.a);
        let nb = t.blocks();
        let nbp = padded(nb);
        // The activations' layout has every group; a last group of up to 8 blocks goes through
        // `vnni512` instead (one pair of blocks per instruction), which costs less than a
        // mostly empty group of 16 lanes.
        let groups = nb.div_ceil(LANES);
        let lane_groups = if nb % LANES <= 8 { nb / LANES } else { groups };
        let row = t.row;
        assert!(RA <= 8 && K != Q8_0 && m.kind.value_bytes() == 16);
        assert!((row + 1) * nb * 16 <= m.values.len() && (row + 1) * nbp <= m.scales.len());
        assert!(
            (t.act + RA) * groups * LANES * QK <= a.lanes.len()
                && (t.act + RA) * nbp <= a.d.len()
                && (t.act + RA) * nbp <= a.c.len()
        );
        if K == Q4_1 || K == Q5_1 {
            assert!((row + 1) * nbp <= m.mins.len());
        }
        if K == Q5_0 || K == Q5_1 {
            assert!((row + 1) * nb <= m.high.len());
        }
        // SAFETY: every unmasked access is within the bounds asserted above (masked lanes past
        // a row's last block are neither read nor faulted); the caller detected the features.
        unsafe {
            let nibble = _mm512_set1_epi8(0x0F);
            let sixteen = _mm512_set1_epi8(0x10);
            // Dword 4i + j of four blocks' bytes, for i < 8: dword j of block i.
            let fours = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 28, 24, 20, 16, 12, 8, 4, 0);
            let mut acc = [_mm512_setzero_ps(); RA];
            for g in 0..lane_groups {
                let first = g * LANES;
                let count = (nb - first).min(LANES);
                let blocks: u16 = if count == LANES { !0 } else { (1 << count) - 1 };
                // The group's packed values, 16 bytes a block: four registers of four blocks.
                let base = m.values.as_ptr().wrapping_add((row * nb + first) * 16);
                let z: [__m512i; 4] = std::array::from_fn(|k| {
                    let n = (count * 16).saturating_sub(k * 64).min(64);
                    let mask = if n == 64 { !0u64 } else { (1u64 << n) - 1 };
                    _mm512_maskz_loadu_epi8(mask, base.wrapping_add(k * 64) as *const i8)
                });
                let high = if K == Q5_0 || K == Q5_1 {
                    let at = m.high.as_ptr().wrapping_add(row * nb + first);
                    _mm512_maskz_loadu_epi32(blocks, at as *const i32)
                } else {
                    _mm512_setzero_si512()
                };
                let mut dots = [_mm512_setzero_si512(); RA];
                for j in 0..4 {
                    // Dword j of the 16 blocks: values 4j..4j+4 in the low nibbles, 16 + 4j..
                    // in the high ones.
                    let pick = _mm512_add_epi32(fours, _mm512_set1_epi32(j as i32));
                    let lo = _mm512_permutex2var_epi32(z[0], pick, z[1]);
                    let hi = _mm512_permutex2var_epi32(z[2], pick, z[3]);
                    let d = _mm512_shuffle_i64x2::<0b0100_0100>(lo, hi);
                    let mut first_half = _mm512_and_si512(d, nibble);
                    let mut second_half = _mm512_and_si512(_mm512_srli_epi16::<4>(d), nibble);
                    if K == Q5_0 || K == Q5_1 {
                        let k = _mm512_bitshuffle_epi64_mask(
                            high,
                            _mm512_set1_epi64(fifth_bits_of_slice(j)),
                        );
                        first_half = _mm512_mask_add_epi8(first_half, k, first_half, sixteen);
                        let k = _mm512_bitshuffle_epi64_mask(
                            high,
                            _mm512_set1_epi64(fifth_bits_of_slice(j + 4)),
                        );
                        second_half = _mm512_mask_add_epi8(second_half, k, second_half, sixteen);
                    }
                    for c in 0..RA {
                        let xs = a
                            .lanes
                            .as_ptr()
                            .add(((t.act + c) * groups + g) * LANES * QK);
                        let x1 = _mm512_loadu_si512(xs.add(j * 64) as *const _);
                        let x2 = _mm512_loadu_si512(xs.add((j + 4) * 64) as *const _);
                        dots[c] = _mm512_dpbusd_epi32(dots[c], first_half, x1);
                        dots[c] = _mm512_dpbusd_epi32(dots[c], second_half, x2);
                    }
                }
                let f16s = |p: *const u16| {
                    _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(blocks, p as *const i16))
                };
                let dw = f16s(m.scales.as_ptr().add(row * nbp + first));
                let bias = if K == Q4_1 || K == Q5_1 {
                    f16s(m.mins.as_ptr().add(row * nbp + first))
                } else {
                    dw
                };
                for c in 0..RA {
                    let at = (t.act + c) * nbp + first;
                    let dx = _mm512_maskz_loadu_ps(blocks, a.d.as_ptr().add(at));
                    let cx = _mm512_maskz_loadu_ps(blocks, a.c.as_ptr().add(at));
                    let scale = _mm512_mul_ps(dw, dx);
                    acc[c] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(dots[c]), acc[c]);
                    acc[c] = _mm512_fmadd_ps(bias, cx, acc[c]);
                }
            }
            let from = lane_groups * LANES;
            if from < nb {
                vnni512::<K, 1, RA>(&Tile { from, ..*t }, out);
            } else {
                out[0][..RA].fill(0.0);
            }
            for c in 0..RA {
                out[0][c] += _mm512_reduce_add_ps(acc[c]);
            }
        }
    }

    /// A tile of one weight row against `ra` (1, 4 or 8) activation rows with [`lanes512`].
    ///
    /// # Safety
    /// [`has_lanes`] is true here, and the tile's activations have their lane layout.
    pub(super) unsafe fn dot_lanes(t: &Tile<'_>, ra: usize, out: &mut TileOut) {
        macro_rules! go {
            ($k:ident) => {
                match ra {
                    8 => lanes512::<$k, 8>(t, out),
                    4 => lanes512::<$k, 4>(t, out),
                    _ => lanes512::<$k, 1>(t, out),
                }
            };
        }
        // SAFETY: the caller checked the features.
        unsafe {
            match t.m.kind {
                Kind::Q4_0 => go!(Q4_0),
                Kind::Q4_1 => go!(Q4_1),
                Kind::Q5_0 => go!(Q5_0),
                Kind::Q5_1 => go!(Q5_1),
                Kind::Q8_0 => unreachable!("Q8_0 takes the other kernel"),
            }
        }
    }

    /// The best kernel this CPU has.
    #[derive(Clone, Copy)]
    pub enum Isa {
        Avx2,
        Vnni,
    }

    /// The kernel to use here, if any.
    pub fn detect() -> Option<Isa> {
        let avx2 = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        let vnni = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni");
        match (avx2, vnni) {
            (true, true) => Some(Isa::Vnni),
            (true, false) => Some(Isa::Avx2),
            _ => None,
        }
    }

    /// A tile of `rw` (1 or 2) weight rows from `t.row` against `ra` (1 or 4) activation rows
    /// from `t.act`.
    ///
    /// # Safety
    /// `isa` must come from [`detect`] on this CPU.
    pub(super) unsafe fn dot(isa: Isa, t: &Tile<'_>, rw: usize, ra: usize, out: &mut TileOut) {
        macro_rules! shapes {
            ($f:ident, $k:ident) => {
                match (rw, ra) {
                    (2, 4) => $f::<$k, 2, 4>(t, out),
                    (1, 4) => $f::<$k, 1, 4>(t, out),
                    (2, _) => $f::<$k, 2, 1>(t, out),
                    _ => $f::<$k, 1, 1>(t, out),
                }
            };
        }
        macro_rules! go {
            ($f:ident) => {
                match t.m.kind {
                    Kind::Q4_0 => shapes!($f, Q4_0),
                    Kind::Q4_1 => shapes!($f, Q4_1),
                    Kind::Q5_0 => shapes!($f, Q5_0),
                    Kind::Q5_1 => shapes!($f, Q5_1),
                    Kind::Q8_0 => shapes!($f, Q8_0),
                }
            };
        }
        // SAFETY: the features of `isa` were detected.
        unsafe {
            match isa {
                Isa::Avx2 => go!(avx2),
                Isa::Vnni => go!(vnni512),
            }
        }
    }
}

impl QMatrix {
    /// Appends the rows of `other`, of the same type and width (given back otherwise).
    pub(crate) fn append(&mut self, other: QMatrix) -> Result<(), QMatrix> {
        if other.kind != self.kind || other.cols != self.cols {
            return Err(other);
        }
        // Every array is row-major with a fixed length per row.
        self.values.extend(other.values);
        self.scales.extend(other.scales);
        self.mins.extend(other.mins);
        self.high.extend(other.high);
        self.rows += other.rows;
        Ok(())
    }

    /// Repacks raw GGUF block data of a `[rows, cols]` matrix.
    pub fn new(kind: Kind, rows: usize, cols: usize, data: &[u8]) -> Option<QMatrix> {
        Self::repack(kind, rows, cols, data, |_| {})
    }

    /// [`QMatrix::new`], telling `consumed` of each part of `data` once it has been read (see
    /// [`for_each_block`]).
    pub(crate) fn repack(
        kind: Kind,
        rows: usize,
        cols: usize,
        data: &[u8],
        consumed: impl FnMut(std::ops::Range<usize>),
    ) -> Option<QMatrix> {
        let bb = kind.block_bytes();
        let vb = kind.value_bytes();
        if !cols.is_multiple_of(QK) || data.len() != rows * cols / QK * bb {
            return None;
        }
        let nb = cols / QK;
        let nbp = padded(nb);
        let mut m = QMatrix {
            kind,
            rows,
            cols,
            values: Vec::with_capacity(rows * nb * vb),
            scales: vec![0; rows * nbp],
            mins: vec![0; if kind.has_min() { rows * nbp } else { 0 }],
            high: Vec::with_capacity(if kind.has_high() { rows * nb } else { 0 }),
        };
        for_each_block(data, bb, consumed, |i, blk| {
            let at = i / nb * nbp + i % nb;
            m.scales[at] = u16::from_le_bytes([blk[0], blk[1]]);
            if kind.has_min() {
                m.mins[at] = u16::from_le_bytes([blk[2], blk[3]]);
            }
            if kind.has_high() {
                let h = bb - vb - 4;
                m.high.push(u32::from_le_bytes(
                    blk[h..h + 4].try_into().expect("4 bytes"),
                ));
            }
            m.values.extend_from_slice(&blk[bb - vb..]);
        });
        Some(m)
    }

    /// The quantization type.
    pub(crate) fn kind(&self) -> Kind {
        self.kind
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
        #[allow(unused_mut)] // set on x86 only
        let mut plan = Plan::new(n);
        // Types with unsigned values, in rows of at least 16 blocks: one block per lane, one
        // weight row by eight (four, one) tokens, the float work paid once per 16 blocks
        // instead of once per 2. For every number of tokens, decoding included: a token's
        // result must not depend on how many others share its batch (a served request
        // answers what it answers alone), and each (row, token) product is computed the same
        // way whatever the tile.
        #[cfg(target_arch = "x86_64")]
        if self.kind != Kind::Q8_0 && self.cols >= LANES * QK && x86::has_lanes() {
            plan = Plan {
                rw: 1,
                ra: match n {
                    8.. => 8,
                    4.. => 4,
                    _ => 1,
                },
                lanes: true,
                ..plan
            };
        }
        self.matmul_with(x, plan)
    }

    fn matmul_with(&self, x: &[f32], plan: Plan) -> Vec<f32> {
        let acts = quantize_acts(self.kind, x, self.cols, plan.lanes);
        tiled(
            self.rows,
            x.len() / self.cols,
            plan,
            |(row, rw), (act, ra), res| {
                let tile = Tile {
                    m: self,
                    a: &acts,
                    row,
                    act,
                    from: 0,
                };
                #[cfg(target_arch = "x86_64")]
                if plan.lanes {
                    // SAFETY: `lanes` is only set where `has_lanes` found the features, and
                    // then the activations were laid out in lanes.
                    unsafe { x86::dot_lanes(&tile, ra, res) };
                    return;
                }
                #[cfg(target_arch = "x86_64")]
                if let Some(isa) = plan.isa {
                    // SAFETY: `isa` was detected on this CPU.
                    unsafe { x86::dot(isa, &tile, rw, ra, res) };
                    return;
                }
                for (r, res) in res.iter_mut().enumerate().take(rw) {
                    for (c, v) in res.iter_mut().enumerate().take(ra) {
                        *v = dot_portable(
                            &Tile {
                                act: act + c,
                                ..tile
                            },
                            r,
                        );
                    }
                }
            },
        )
    }
}

/// What a tile computes: `out[r][c]` for weight row `r` and activation row `c` of the tile.
pub(crate) type TileOut = [[f32; 8]; 2];

/// How a quantized product is computed: which kernel, with how many rows of each side per tile.
#[derive(Clone, Copy)]
pub(crate) struct Plan {
    #[cfg(target_arch = "x86_64")]
    pub(crate) isa: Option<x86::Isa>,
    /// Weight rows per tile (1 or 2).
    pub(crate) rw: usize,
    /// Activation rows per tile (1 or 4; 1, 4 or 8 with `lanes`).
    pub(crate) ra: usize,
    /// The blocks-of-32 kernel with one block per lane (x86: AVX-512 VNNI and BITALG).
    pub(crate) lanes: bool,
}

impl Plan {
    /// The best plan here for `n` activation rows: for prompt processing two weight rows against
    /// four tokens share every unpacked value and every activation load; a single token streams
    /// one weight row at a time.
    pub(crate) fn new(n: usize) -> Plan {
        let (rw, ra) = if n == 1 { (1, 1) } else { (2, 4) };
        Plan {
            #[cfg(target_arch = "x86_64")]
            isa: x86::detect(),
            rw,
            ra,
            lanes: false,
        }
    }
}

/// Runs `tile((row, rw), (act, ra), out)` over every tile of a `[n, rows]` product on candle's
/// worker pool (disjoint row ranges per task) and returns the product.
pub(crate) fn tiled(
    rows: usize,
    n: usize,
    plan: Plan,
    tile: impl Fn((usize, usize), (usize, usize), &mut TileOut) + Sync,
) -> Vec<f32> {
    // Not zeroed: the tiles write every element once (a zero-fill of the output was 1.5-2.5% of
    // the time of a batched step, on the calling thread alone).
    let mut out: Vec<f32> = Vec::with_capacity(n * rows);
    let dst = DisjointOut::spare(&mut out, n * rows);
    barrier_pool().execute_chunked(rows.div_ceil(plan.rw), |range| {
        let first = range.start * plan.rw;
        let last = (range.end * plan.rw).min(rows);
        let mut row = first;
        while row < last {
            let rw = (last - row).min(plan.rw);
            let mut act = 0;
            while act < n {
                // Whole tiles, then the rest in fours and ones.
                let ra = [plan.ra, 4, 1]
                    .into_iter()
                    .find(|&ra| ra <= plan.ra && ra <= n - act)
                    .unwrap_or(1);
                let mut res = [[0f32; 8]; 2];
                tile((row, rw), (act, ra), &mut res);
                for (r, res) in res.iter().enumerate().take(rw) {
                    for (c, &v) in res.iter().enumerate().take(ra) {
                        // SAFETY: the pool hands out disjoint row ranges, so no two tasks write
                        // the same element; the index is below n * rows and `out` outlives the
                        // call.
                        unsafe { dst.write((act + c) * rows + row + r, v) };
                    }
                }
                act += ra;
            }
            row += rw;
        }
    });
    // SAFETY: the row ranges of the tasks cover 0..rows, and each task wrote every activation
    // row of its weight rows: all n * rows elements are initialised.
    unsafe { out.set_len(n * rows) };
    out
}

/// How much of a weight's stored bytes is read between two calls of a repacking's
/// `consumed`.
const RELEASE_BYTES: usize = 1 << 20;

/// Calls `block` with the index and bytes of each `size`-byte block of `data`, in order, and
/// `consumed` with each range of about [`RELEASE_BYTES`] once its blocks are done (so that a
/// caller reading `data` through a file mapping can drop those pages while the rest is
/// repacked: the largest tensor's mapped pages and its repacked copy were otherwise resident
/// together, Qwen2.5-0.5B's 137 MiB output layer among them).
pub(crate) fn for_each_block(
    data: &[u8],
    size: usize,
    mut consumed: impl FnMut(std::ops::Range<usize>),
    mut block: impl FnMut(usize, &[u8]),
) {
    let per_part = (RELEASE_BYTES / size).max(1);
    for (p, part) in data.chunks(per_part * size).enumerate() {
        for (i, b) in part.chunks_exact(size).enumerate() {
            block(p * per_part + i, b);
        }
        let start = p * per_part * size;
        consumed(start..start + part.len());
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
                    out.extend(f16::from_f32(d).to_le_bytes());
                    out.extend(xs.iter().map(|v| ((v / d).round() as i8) as u8));
                }
                Kind::Q4_0 => {
                    let max = xs
                        .iter()
                        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
                    let d = max / -8.0;
                    out.extend(f16::from_f32(d).to_le_bytes());
                    let q = |v: f32| ((v / d + 8.5) as i32).clamp(0, 15) as u8;
                    out.extend((0..16).map(|j| q(xs[j]) | (q(xs[j + 16]) << 4)));
                }
                Kind::Q5_0 | Kind::Q5_1 => {
                    // quantize_row_q5_0_ref / q5_1_ref.
                    let (d, min, q): (f32, f32, Vec<u8>) = if kind == Kind::Q5_0 {
                        let max = xs
                            .iter()
                            .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
                        let d = max / -16.0;
                        let q = xs
                            .iter()
                            .map(|v| ((v / d + 16.5) as i32).clamp(0, 31) as u8)
                            .collect();
                        (d, 0.0, q)
                    } else {
                        let min = xs.iter().fold(f32::INFINITY, |m, &v| m.min(v));
                        let max = xs.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                        let d = (max - min) / 31.0;
                        let q = xs
                            .iter()
                            .map(|v| (((v - min) / d + 0.5) as i32).clamp(0, 31) as u8)
                            .collect();
                        (d, min, q)
                    };
                    out.extend(f16::from_f32(d).to_le_bytes());
                    if kind == Kind::Q5_1 {
                        out.extend(f16::from_f32(min).to_le_bytes());
                    }
                    let qh = (0..32).fold(0u32, |h, i| h | (((q[i] >> 4) as u32) << i));
                    out.extend(qh.to_le_bytes());
                    out.extend((0..16).map(|j| (q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4)));
                }
                Kind::Q4_1 => {
                    let min = xs.iter().fold(f32::INFINITY, |m, &v| m.min(v));
                    let max = xs.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                    let d = (max - min) / 15.0;
                    out.extend(f16::from_f32(d).to_le_bytes());
                    out.extend(f16::from_f32(min).to_le_bytes());
                    let q = |v: f32| (((v - min) / d + 0.5) as i32).clamp(0, 15) as u8;
                    out.extend((0..16).map(|j| q(xs[j]) | (q(xs[j + 16]) << 4)));
                }
            }
        }
        out
    }

    fn dequantize(kind: Kind, data: &[u8]) -> Vec<f32> {
        let mut out = Vec::new();
        for blk in data.chunks(kind.block_bytes()) {
            let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
            match kind {
                Kind::Q8_0 => out.extend(blk[2..].iter().map(|&q| d * (q as i8) as f32)),
                Kind::Q5_0 | Kind::Q5_1 => {
                    // dequantize_row_q5_0 / q5_1.
                    let (m, h) = if kind == Kind::Q5_1 {
                        (f16::from_le_bytes([blk[2], blk[3]]).to_f32(), 4)
                    } else {
                        (0.0, 2)
                    };
                    let qh = u32::from_le_bytes(blk[h..h + 4].try_into().unwrap());
                    let qs = &blk[h + 4..];
                    let off = if kind == Kind::Q5_0 { 16 } else { 0 };
                    for half in 0..2 {
                        out.extend((0..16).map(|j| {
                            let nib = if half == 0 { qs[j] & 0x0F } else { qs[j] >> 4 };
                            let q =
                                (nib as i32 | ((((qh >> (j + 16 * half)) & 1) as i32) << 4)) - off;
                            d * q as f32 + m
                        }));
                    }
                }
                Kind::Q4_0 | Kind::Q4_1 => {
                    let m = if kind == Kind::Q4_1 {
                        f16::from_le_bytes([blk[2], blk[3]]).to_f32()
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
        // 37 rows: pairs and a remainder; widths of 2 to 48 blocks (no lane group, a partial
        // one, one and a tail of 2, three); 13 activation rows: tiles of 8 (or 4), 4 and 1.
        for cols in [288usize, 576, 1536, 64] {
            let (rows, n) = (37, 13);
            let w: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.3)
                .collect();
            let x: Vec<f32> = (0..n * cols)
                .map(|i| ((i * 104_729 % 997) as f32 / 498.0 - 1.0) * 2.0)
                .collect();
            for kind in [Kind::Q4_0, Kind::Q4_1, Kind::Q5_0, Kind::Q5_1, Kind::Q8_0] {
                let data = quantize_weights(kind, &w);
                let dq = dequantize(kind, &data);
                let m = QMatrix::new(kind, rows, cols, &data).unwrap();
                let acts = quantize_acts(kind, &x, cols, false);
                // Every kernel and tile shape.
                let mut plans = vec![Plan {
                    #[cfg(target_arch = "x86_64")]
                    isa: None,
                    rw: 2,
                    ra: 4,
                    lanes: false,
                }];
                #[cfg(target_arch = "x86_64")]
                if let Some(best) = x86::detect() {
                    for isa in [x86::Isa::Avx2, best] {
                        for (rw, ra) in [(1, 1), (2, 4), (1, 4), (2, 1)] {
                            plans.push(Plan {
                                isa: Some(isa),
                                rw,
                                ra,
                                lanes: false,
                            });
                        }
                    }
                    if x86::has_lanes() && kind != Kind::Q8_0 {
                        for ra in [1, 4, 8] {
                            plans.push(Plan {
                                isa: Some(best),
                                rw: 1,
                                ra,
                                lanes: true,
                            });
                        }
                    }
                }
                for plan in plans {
                    let y = m.matmul_with(&x, plan);
                    for i in 0..n {
                        for r in 0..rows {
                            let exact: f32 =
                                (0..cols).map(|k| dq[r * cols + k] * x[i * cols + k]).sum();
                            let got = y[i * rows + r];
                            // Activation quantization (8 bits per block of 32) is the only difference.
                            assert!(
                                (got - exact).abs() < 0.05 * (cols as f32 / 288.0).max(1.0),
                                "{kind:?} [{i}, {r}]: {got} vs {exact}"
                            );
                            let tile = Tile {
                                m: &m,
                                a: &acts,
                                row: r,
                                act: i,
                                from: 0,
                            };
                            let portable = dot_portable(&tile, 0);
                            assert!(
                                (got - portable).abs() <= 1e-4 * portable.abs().max(1.0),
                                "{kind:?} cols {cols} rw {} ra {} lanes {}: SIMD {got} vs portable {portable}",
                                plan.rw,
                                plan.ra,
                                plan.lanes
                            );
                        }
                    }
                }
            }
        }
    }
}
