//! Matrix products on the CPU for the GGUF k-quants — Q2_K, Q3_K, Q4_K, Q5_K and Q6_K, the types
//! of the `*_K_M` / `*_K_S` files most GGUF repositories publish — at llama.cpp's speed and with
//! its arithmetic (`ggml_vec_dot_q*_K_q8_K` in ggml-cpu).
//!
//! A k-quant super-block holds 256 weights in sub-blocks of 32 (Q4_K, Q5_K) or 16 (the others),
//! each with a small integer scale (and, for Q2_K / Q4_K / Q5_K, an integer minimum) under two
//! f16 factors. Activations are quantized as llama.cpp's `q8_K`: int8 per 256 with an f32 scale
//! and the sums of each 16. Per super-block every product is an exact integer sum — unsigned
//! weight values times int8 activations, in pairs (`maddubs`), then times the sub-block scale
//! (`dpwssd` with AVX-512 VNNI, `madd` with AVX2) — and the minimums (or the offset of signed
//! types) come in through the activation sums, as llama.cpp does.
//!
//! At load, the scales and minimums of each super-block are unpacked to bytes in front of its
//! values, which keep their GGUF bit layout; a repacked block is at most 16 bytes larger than a
//! stored one. A tile of weight rows is multiplied against a tile of activation rows, so that
//! prompt processing unpacks each weight sub-block once for several tokens. Rows are split
//! across candle's CPU worker pool.

use super::DisjointOut;
use super::quant::{Plan, TileOut, per_row, tiled, vectorised};
use half::f16;

/// Values per super-block.
pub const QK_K: usize = 256;

/// A supported k-quant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KKind {
    /// 2-bit values, per-16 4-bit scales and minimums: `d * sc * q - dmin * m`.
    Q2K,
    /// 3-bit values (two bits and a high-bit plane), per-16 6-bit signed scales:
    /// `d * (sc - 32) * (q - 4)`.
    Q3K,
    /// 4-bit values, per-32 6-bit scales and minimums: `d * sc * q - dmin * m`.
    Q4K,
    /// Q4_K with a fifth bit per value.
    Q5K,
    /// 6-bit values (four bits and a two-bit plane), per-16 int8 scales: `d * sc * (q - 32)`.
    Q6K,
}

/// Type codes for the const-generic kernels.
const Q2K: u8 = 0;
const Q3K: u8 = 1;
const Q4K: u8 = 2;
const Q5K: u8 = 3;
const Q6K: u8 = 4;

impl KKind {
    fn code(self) -> u8 {
        match self {
            KKind::Q2K => Q2K,
            KKind::Q3K => Q3K,
            KKind::Q4K => Q4K,
            KKind::Q5K => Q5K,
            KKind::Q6K => Q6K,
        }
    }

    /// Bytes per super-block in the GGUF layout.
    pub fn block_bytes(self) -> usize {
        match self {
            KKind::Q2K => 84,
            KKind::Q3K => 110,
            KKind::Q4K => 144,
            KKind::Q5K => 176,
            KKind::Q6K => 210,
        }
    }
}

/// The repacked layout of a super-block of type `K`: `d` (f16), `dmin` (f16, types with
/// minimums), `scales` bytes, `mins` bytes, then the values as GGUF stores them.
const fn has_mins(k: u8) -> bool {
    k == Q2K || k == Q4K || k == Q5K
}
/// Scales per super-block: one per 32 values (Q4_K, Q5_K) or per 16.
const fn n_scales(k: u8) -> usize {
    if k == Q4K || k == Q5K { 8 } else { 16 }
}
const fn value_bytes(k: u8) -> usize {
    match k {
        Q2K => 64,
        Q3K => 96,
        Q4K => 128,
        Q5K => 160,
        _ => 192,
    }
}
const fn scales_at(k: u8) -> usize {
    if has_mins(k) { 4 } else { 2 }
}
const fn mins_at(k: u8) -> usize {
    scales_at(k) + n_scales(k)
}
const fn values_at(k: u8) -> usize {
    mins_at(k) + if has_mins(k) { n_scales(k) } else { 0 }
}
const fn packed_bytes(k: u8) -> usize {
    values_at(k) + value_bytes(k)
}

/// Scale and minimum `j` (0..8) of a Q4_K / Q5_K super-block (llama.cpp's `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Repacks one GGUF super-block of `kind` into `out` (`packed_bytes` long).
fn repack_block(kind: KKind, b: &[u8], out: &mut [u8]) {
    let k = kind.code();
    let (header, values): (&[u8], &[u8]) = match kind {
        KKind::Q2K => (&b[80..84], &b[16..80]),
        KKind::Q3K => (&b[108..110], &b[..96]),
        KKind::Q4K | KKind::Q5K => (&b[..4], &b[16..]),
        KKind::Q6K => (&b[208..210], &b[..192]),
    };
    out[..header.len()].copy_from_slice(header);
    out[values_at(k)..].copy_from_slice(values);
    let (sc, mins) = out[scales_at(k)..values_at(k)].split_at_mut(n_scales(k));
    match kind {
        KKind::Q2K => {
            for j in 0..16 {
                sc[j] = b[j] & 0xF;
                mins[j] = b[j] >> 4;
            }
        }
        KKind::Q3K => {
            // Sixteen 6-bit scales: low nibbles in bytes 96..104, high pairs in 104..108.
            for (j, s) in sc.iter_mut().enumerate() {
                let low = if j < 8 {
                    b[96 + j] & 0xF
                } else {
                    b[88 + j] >> 4
                };
                let high = (b[104 + j % 4] >> (2 * (j / 4))) & 3;
                *s = ((low | (high << 4)) as i8 - 32) as u8;
            }
        }
        KKind::Q4K | KKind::Q5K => {
            for j in 0..8 {
                (sc[j], mins[j]) = scale_min_k4(j, &b[4..16]);
            }
        }
        KKind::Q6K => sc.copy_from_slice(&b[192..208]),
    }
}

/// The 32 unsigned values of sub-block `s` (0..8) of a repacked block of type `k`.
fn unpack_portable(k: u8, v: &[u8], s: usize) -> [u8; 32] {
    std::array::from_fn(|l| match k {
        Q2K => (v[32 * (s / 4) + l] >> (2 * (s % 4))) & 3,
        Q3K => ((v[32 + 32 * (s / 4) + l] >> (2 * (s % 4))) & 3) | (((v[l] >> s) & 1) << 2),
        Q4K => (v[32 * (s / 2) + l] >> (4 * (s % 2))) & 0xF,
        Q5K => ((v[32 + 32 * (s / 2) + l] >> (4 * (s % 2))) & 0xF) | (((v[l] >> s) & 1) << 4),
        _ => {
            let (c, j) = (s / 4, s % 4);
            ((v[64 * c + 32 * (j & 1) + l] >> (4 * (j >> 1))) & 0xF)
                | (((v[128 + 32 * c + l] >> (2 * j)) & 3) << 4)
        }
    })
}

/// What multiplies `sum(mins[j] * activation sums)` in a super-block's dot product: minus the
/// minimums' factor, or minus the value offset times `d` for the signed types.
fn bias_factor(k: u8, blk: &[u8]) -> f32 {
    let h = |i: usize| f16::from_le_bytes([blk[i], blk[i + 1]]).to_f32();
    match k {
        Q3K => -4.0 * h(0),
        Q6K => -32.0 * h(0),
        _ => -h(2),
    }
}

/// The per-16 weights of the bias sum: the minimums (one per 32 counts twice), or the scales of
/// the signed types.
fn bias_weight(k: u8, blk: &[u8], j: usize) -> i32 {
    match k {
        Q2K => blk[mins_at(k) + j] as i32,
        Q4K | Q5K => blk[mins_at(k) + j / 2] as i32,
        _ => blk[scales_at(k) + j] as i8 as i32,
    }
}

/// The scale of the 16 values `j` (0..16) of a block.
fn scale16(k: u8, blk: &[u8], j: usize) -> i32 {
    match k {
        Q4K | Q5K => blk[scales_at(k) + j / 2] as i32,
        Q2K => blk[scales_at(k) + j] as i32,
        _ => blk[scales_at(k) + j] as i8 as i32,
    }
}

/// Activations quantized as llama.cpp's `q8_K`.
struct KActs {
    q: Vec<i8>,
    /// Scale per super-block, `[rows][blocks]`.
    d: Vec<f32>,
    /// Sums of each 16 values, `[rows][blocks][16]`.
    bsums: Vec<i16>,
}

/// Quantizes rows of `x` (`cols` values each) as `quantize_row_q8_K_ref` does.
fn quantize_acts(x: &[f32], cols: usize) -> KActs {
    let blocks = x.len() / QK_K;
    let mut a = KActs {
        q: vec![0; x.len()],
        d: vec![0.0; blocks],
        bsums: vec![0; blocks * 16],
    };
    let nb = cols / QK_K;
    let (q, d, bsums) = (
        DisjointOut::new(&mut a.q),
        DisjointOut::new(&mut a.d),
        DisjointOut::new(&mut a.bsums),
    );
    per_row(x.len() / cols, |r| {
        // SAFETY: each row writes only its own ranges of the three buffers, which outlive the
        // call.
        let (q, d, bsums) = unsafe {
            (
                q.slice(r * cols..(r + 1) * cols),
                d.slice(r * nb..(r + 1) * nb),
                bsums.slice(r * nb * 16..(r + 1) * nb * 16),
            )
        };
        let xs = &x[r * cols..(r + 1) * cols];
        vectorised(
            #[inline(always)]
            || quantize_row(xs, q, d, bsums),
        )
    });
    a
}

/// One row of [`quantize_acts`].
#[inline(always)]
fn quantize_row(x: &[f32], q: &mut [i8], d: &mut [f32], bsums: &mut [i16]) {
    for (b, (xs, qs)) in x
        .chunks_exact(QK_K)
        .zip(q.chunks_exact_mut(QK_K))
        .enumerate()
    {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in xs {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in qs.iter_mut().zip(xs) {
            *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
        }
        for (j, s) in bsums[b * 16..(b + 1) * 16].iter_mut().enumerate() {
            *s = qs[j * 16..(j + 1) * 16].iter().map(|&q| q as i16).sum();
        }
        d[b] = 1.0 / iscale;
    }
}

/// A `[rows, cols]` matrix of k-quant super-blocks, repacked for the kernels.
pub struct KMatrix {
    kind: KKind,
    rows: usize,
    cols: usize,
    /// Repacked super-blocks, `[rows][cols / 256]`.
    data: Vec<u8>,
}

/// Portable dot product of weight row `row` with activation row `act`.
fn dot_portable(m: &KMatrix, a: &KActs, row: usize, act: usize) -> f32 {
    let k = m.kind.code();
    let nb = m.cols / QK_K;
    let pb = packed_bytes(k);
    let mut total = 0f32;
    for b in 0..nb {
        let blk = &m.data[(row * nb + b) * pb..(row * nb + b + 1) * pb];
        let xb = act * nb + b;
        let xq = &a.q[xb * QK_K..(xb + 1) * QK_K];
        let bs = &a.bsums[xb * 16..(xb + 1) * 16];
        let mut sumi = 0i32;
        for s in 0..8 {
            let u = unpack_portable(k, &blk[values_at(k)..], s);
            for half in 0..2 {
                let dot: i32 = (0..16)
                    .map(|l| u[half * 16 + l] as i32 * xq[s * 32 + half * 16 + l] as i32)
                    .sum();
                sumi += scale16(k, blk, 2 * s + half) * dot;
            }
        }
        let bias: i32 = (0..16).map(|j| bias_weight(k, blk, j) * bs[j] as i32).sum();
        let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
        total += a.d[xb] * (d * sumi as f32 + bias_factor(k, blk) * bias as f32);
    }
    total
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{
        KActs, KMatrix, Q2K, Q3K, Q4K, Q5K, Q6K, QK_K, TileOut, has_mins, mins_at, n_scales,
        packed_bytes, scales_at, values_at,
    };
    use std::arch::x86_64::*;

    /// Shuffles that spread the scale of each half of sub-block `s` over the eight 16-bit
    /// lanes of the pair sums of that half: for per-32 scales (eight words in both halves), word
    /// `s` everywhere; for per-16 scales (words `4*(s/4)..` in both halves), word `2*(s%4)` in
    /// the low half and `2*(s%4)+1` in the high one.
    const fn shuffles(per32: bool) -> [[u8; 32]; 8] {
        let mut t = [[0u8; 32]; 8];
        let mut s = 0;
        while s < 8 {
            let mut i = 0;
            while i < 32 {
                let word = if per32 {
                    s
                } else if i < 16 {
                    2 * (s % 4)
                } else {
                    2 * (s % 4) + 1
                };
                t[s][i] = (2 * word + i % 2) as u8;
                i += 1;
            }
            s += 1;
        }
        t
    }
    static SHUF32: [[u8; 32]; 8] = shuffles(true);
    static SHUF16: [[u8; 32]; 8] = shuffles(false);

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        // SAFETY: plain arithmetic on registers.
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
        }
    }

    /// The 32 unsigned values of sub-block `s` of the block whose values start at `v`.
    #[inline(always)]
    unsafe fn unpack<const K: u8>(v: *const u8, s: usize) -> __m256i {
        // SAFETY: `v` points at a whole repacked block's values; the loads stay inside it.
        unsafe {
            let ld = |o: usize| _mm256_loadu_si256(v.add(o) as *const __m256i);
            let shr = |x: __m256i, n: usize| _mm256_srlv_epi32(x, _mm256_set1_epi32(n as i32));
            let bits = |n: u8| _mm256_set1_epi8(n as i8);
            match K {
                Q2K => _mm256_and_si256(shr(ld(32 * (s / 4)), 2 * (s % 4)), bits(3)),
                Q3K => {
                    let lo = _mm256_and_si256(shr(ld(32 + 32 * (s / 4)), 2 * (s % 4)), bits(3));
                    let hi = _mm256_and_si256(shr(ld(0), s), bits(1));
                    _mm256_or_si256(lo, _mm256_slli_epi16(hi, 2))
                }
                Q4K => _mm256_and_si256(shr(ld(32 * (s / 2)), 4 * (s % 2)), bits(0xF)),
                Q5K => {
                    let lo = _mm256_and_si256(shr(ld(32 + 32 * (s / 2)), 4 * (s % 2)), bits(0xF));
                    let hi = _mm256_and_si256(shr(ld(0), s), bits(1));
                    _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4))
                }
                _ => {
                    let (c, j) = (s / 4, s % 4);
                    let lo =
                        _mm256_and_si256(shr(ld(64 * c + 32 * (j & 1)), 4 * (j >> 1)), bits(0xF));
                    let hi = _mm256_and_si256(shr(ld(128 + 32 * c), 2 * j), bits(3));
                    _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4))
                }
            }
        }
    }

    /// `RW` weight rows from `row` against `RA` activation rows from `act`, into `out[r][c]`.
    /// Shared by the AVX2 and VNNI kernels, which inline it and so compile it with their
    /// features.
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // r and c index several arrays at once
    unsafe fn body<const K: u8, const RW: usize, const RA: usize, const VNNI: bool>(
        m: &KMatrix,
        a: &KActs,
        row: usize,
        act: usize,
        out: &mut TileOut,
    ) {
        let nb = m.cols / QK_K;
        let pb = packed_bytes(K);
        assert!(RW <= 2 && RA <= 4);
        assert!((row + RW) * nb * pb <= m.data.len());
        assert!((act + RA) * nb * QK_K <= a.q.len() && (act + RA) * nb * 16 <= a.bsums.len());
        // SAFETY: every block and activation offset below is within the bounds asserted above;
        // the caller has checked the CPU features of the wrapper this is inlined into.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); RA]; RW];
            let shuf: &[[u8; 32]; 8] = if n_scales(K) == 8 { &SHUF32 } else { &SHUF16 };
            for b in 0..nb {
                let mut words = [[_mm256_setzero_si256(); 2]; RW];
                let mut bias_w = [_mm256_setzero_si256(); RW];
                let mut dw = [0f32; RW];
                let mut fb = [0f32; RW];
                let mut vals = [std::ptr::null::<u8>(); RW];
                for r in 0..RW {
                    let blk = m.data.as_ptr().add(((row + r) * nb + b) * pb);
                    let h = |i: usize| {
                        let bits = (blk.add(i) as *const u16).read_unaligned();
                        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
                    };
                    dw[r] = h(0);
                    fb[r] = match K {
                        Q3K => -4.0 * dw[r],
                        Q6K => -32.0 * dw[r],
                        _ => -h(2),
                    };
                    vals[r] = blk.add(values_at(K));
                    let sc = blk.add(scales_at(K));
                    if n_scales(K) == 8 {
                        let s8 = _mm_loadl_epi64(sc as *const __m128i);
                        let w = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(s8));
                        words[r] = [w, w];
                        let m8 = _mm_loadl_epi64(blk.add(mins_at(K)) as *const __m128i);
                        bias_w[r] = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
                    } else {
                        let s16 = _mm_loadu_si128(sc as *const __m128i);
                        let w = if K == Q2K {
                            _mm256_cvtepu8_epi16(s16)
                        } else {
                            _mm256_cvtepi8_epi16(s16)
                        };
                        words[r] = [
                            _mm256_permute2x128_si256(w, w, 0x00),
                            _mm256_permute2x128_si256(w, w, 0x11),
                        ];
                        bias_w[r] = if has_mins(K) {
                            let m16 = _mm_loadu_si128(blk.add(mins_at(K)) as *const __m128i);
                            _mm256_cvtepu8_epi16(m16)
                        } else {
                            w
                        };
                    }
                }
                let mut isum = [[_mm256_setzero_si256(); RA]; RW];
                for s in 0..8 {
                    let ctl = _mm256_loadu_si256(shuf[s].as_ptr() as *const __m256i);
                    let mut u = [_mm256_setzero_si256(); RW];
                    let mut scale = [_mm256_setzero_si256(); RW];
                    for r in 0..RW {
                        u[r] = unpack::<K>(vals[r], s);
                        scale[r] = _mm256_shuffle_epi8(words[r][s / 4], ctl);
                    }
                    for c in 0..RA {
                        let xq = a.q.as_ptr().add(((act + c) * nb + b) * QK_K + s * 32);
                        let x = _mm256_loadu_si256(xq as *const __m256i);
                        for r in 0..RW {
                            // Unsigned values ≤ 63 times int8 in pairs fit in i16.
                            let p = _mm256_maddubs_epi16(u[r], x);
                            isum[r][c] = if VNNI {
                                _mm256_dpwssd_epi32(isum[r][c], p, scale[r])
                            } else {
                                _mm256_add_epi32(isum[r][c], _mm256_madd_epi16(p, scale[r]))
                            };
                        }
                    }
                }
                for c in 0..RA {
                    let xb = (act + c) * nb + b;
                    let dx = *a.d.get_unchecked(xb);
                    let bs = _mm256_loadu_si256(a.bsums.as_ptr().add(xb * 16) as *const __m256i);
                    for r in 0..RW {
                        let bias = _mm256_cvtepi32_ps(_mm256_madd_epi16(bias_w[r], bs));
                        let main = _mm256_cvtepi32_ps(isum[r][c]);
                        let t = _mm256_fmadd_ps(main, _mm256_set1_ps(dx * dw[r]), acc[r][c]);
                        acc[r][c] = _mm256_fmadd_ps(bias, _mm256_set1_ps(dx * fb[r]), t);
                    }
                }
            }
            for r in 0..RW {
                for c in 0..RA {
                    out[r][c] = hsum(acc[r][c]);
                }
            }
        }
    }

    macro_rules! kernels {
        ($name:ident, $vnni:expr, $features:literal) => {
            #[target_feature(enable = $features)]
            unsafe fn $name<const K: u8, const RW: usize, const RA: usize>(
                m: &KMatrix,
                a: &KActs,
                row: usize,
                act: usize,
                out: &mut TileOut,
            ) {
                // SAFETY: forwarded from `dot`, whose caller detected the features.
                unsafe { body::<K, RW, RA, $vnni>(m, a, row, act, out) }
            }
        };
    }
    kernels!(avx2, false, "avx2,fma,f16c");
    kernels!(vnni, true, "avx2,fma,f16c,avx512f,avx512vl,avx512vnni");

    use crate::quant::x86::Isa;

    /// A tile of `rw` (1 or 2) weight rows against `ra` (1 or 4) activation rows.
    ///
    /// # Safety
    /// `isa` must come from `quant::x86::detect` on this CPU.
    pub unsafe fn dot(
        isa: Isa,
        m: &KMatrix,
        a: &KActs,
        (row, rw): (usize, usize),
        (act, ra): (usize, usize),
        out: &mut TileOut,
    ) {
        macro_rules! shapes {
            ($f:ident, $k:ident) => {
                match (rw, ra) {
                    (2, 4) => $f::<$k, 2, 4>(m, a, row, act, out),
                    (1, 4) => $f::<$k, 1, 4>(m, a, row, act, out),
                    (2, _) => $f::<$k, 2, 1>(m, a, row, act, out),
                    _ => $f::<$k, 1, 1>(m, a, row, act, out),
                }
            };
        }
        macro_rules! go {
            ($f:ident) => {
                match m.kind.code() {
                    Q2K => shapes!($f, Q2K),
                    Q3K => shapes!($f, Q3K),
                    Q4K => shapes!($f, Q4K),
                    Q5K => shapes!($f, Q5K),
                    _ => shapes!($f, Q6K),
                }
            };
        }
        // SAFETY: the features of `isa` were detected.
        unsafe {
            match isa {
                Isa::Avx2 => go!(avx2),
                Isa::Vnni => go!(vnni),
            }
        }
    }
}

impl KMatrix {
    /// Appends the rows of `other`, of the same type and width (given back otherwise).
    pub(crate) fn append(&mut self, other: KMatrix) -> Result<(), KMatrix> {
        if other.kind != self.kind || other.cols != self.cols {
            return Err(other);
        }
        self.data.extend(other.data);
        self.rows += other.rows;
        Ok(())
    }

    /// Repacks raw GGUF super-blocks of a `[rows, cols]` matrix; `None` when the sizes disagree.
    pub fn new(kind: KKind, rows: usize, cols: usize, data: &[u8]) -> Option<KMatrix> {
        Self::repack(kind, rows, cols, data, |_| {})
    }

    /// [`KMatrix::new`], telling `consumed` of each part of `data` once it has been read (see
    /// [`crate::quant::for_each_block`]).
    pub(crate) fn repack(
        kind: KKind,
        rows: usize,
        cols: usize,
        data: &[u8],
        consumed: impl FnMut(std::ops::Range<usize>),
    ) -> Option<KMatrix> {
        let bb = kind.block_bytes();
        if !cols.is_multiple_of(QK_K) || data.len() != rows.checked_mul(cols / QK_K)? * bb {
            return None;
        }
        let pb = packed_bytes(kind.code());
        let mut packed = vec![0u8; data.len() / bb * pb];
        crate::quant::for_each_block(data, bb, consumed, |i, src| {
            repack_block(kind, src, &mut packed[i * pb..(i + 1) * pb]);
        });
        Some(KMatrix {
            kind,
            rows,
            cols,
            data: packed,
        })
    }

    /// The quantization type.
    pub(crate) fn kind(&self) -> KKind {
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
        self.matmul_with(x, Plan::new(x.len() / self.cols))
    }

    fn matmul_with(&self, x: &[f32], plan: Plan) -> Vec<f32> {
        let acts = quantize_acts(x, self.cols);
        tiled(
            self.rows,
            x.len() / self.cols,
            plan,
            |(row, rw), (act, ra), res| {
                #[cfg(target_arch = "x86_64")]
                if let Some(isa) = plan.isa {
                    // SAFETY: `isa` was detected on this CPU.
                    unsafe { x86::dot(isa, self, &acts, (row, rw), (act, ra), res) };
                    return;
                }
                for (r, res) in res.iter_mut().enumerate().take(rw) {
                    for (c, v) in res.iter_mut().enumerate().take(ra) {
                        *v = dot_portable(self, &acts, row + r, act + c);
                    }
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random-looking GGUF super-blocks: any byte pattern is a valid k-quant block once its two
    /// f16 factors are finite and small.
    fn blocks(kind: KKind, n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        let mut data: Vec<u8> = (0..n * kind.block_bytes())
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (s >> 33) as u8
            })
            .collect();
        let at: &[usize] = match kind {
            KKind::Q2K => &[80, 82],
            KKind::Q3K => &[108],
            KKind::Q4K | KKind::Q5K => &[0, 2],
            KKind::Q6K => &[208],
        };
        for (i, blk) in data.chunks_exact_mut(kind.block_bytes()).enumerate() {
            for (j, &o) in at.iter().enumerate() {
                let v = 0.001 + 0.0003 * ((i * 7 + j * 3) % 11) as f32;
                blk[o..o + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
            }
        }
        data
    }

    /// llama.cpp's `dequantize_row_q*_K`, written from the GGUF layout (not from the repack).
    fn dequantize(kind: KKind, data: &[u8]) -> Vec<f32> {
        let mut y = Vec::new();
        let h = |b: &[u8], i: usize| f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
        for b in data.chunks_exact(kind.block_bytes()) {
            match kind {
                KKind::Q2K => {
                    let (d, dmin) = (h(b, 80), h(b, 82));
                    for n in 0..2 {
                        for j in 0..4 {
                            for half in 0..2 {
                                let sc = b[n * 8 + j * 2 + half];
                                for l in 0..16 {
                                    let q = (b[16 + n * 32 + half * 16 + l] >> (2 * j)) & 3;
                                    y.push(
                                        d * (sc & 0xF) as f32 * q as f32 - dmin * (sc >> 4) as f32,
                                    );
                                }
                            }
                        }
                    }
                }
                KKind::Q3K => {
                    let d = h(b, 108);
                    let mut sc = [0i32; 16];
                    for (j, s) in sc.iter_mut().enumerate() {
                        let low = if j < 8 {
                            b[96 + j] & 0xF
                        } else {
                            b[96 + j - 8] >> 4
                        };
                        let high = (b[104 + j % 4] >> (2 * (j / 4))) & 3;
                        *s = (low | (high << 4)) as i32 - 32;
                    }
                    for n in 0..2 {
                        for j in 0..4 {
                            for half in 0..2 {
                                for l in 0..16 {
                                    let i = half * 16 + l;
                                    let q = ((b[32 + n * 32 + i] >> (2 * j)) & 3) as i32;
                                    let hbit = b[i] & (1 << (n * 4 + j)) != 0;
                                    let v = q - if hbit { 0 } else { 4 };
                                    y.push(d * sc[n * 8 + j * 2 + half] as f32 * v as f32);
                                }
                            }
                        }
                    }
                }
                KKind::Q4K | KKind::Q5K => {
                    let (d, dmin) = (h(b, 0), h(b, 2));
                    let q5 = kind == KKind::Q5K;
                    let qs = if q5 { &b[48..] } else { &b[16..] };
                    for s in 0..8 {
                        let (sc, m) = scale_min_k4(s, &b[4..16]);
                        for l in 0..32 {
                            let mut q = (qs[32 * (s / 2) + l] >> (4 * (s % 2))) & 0xF;
                            if q5 && b[16 + l] & (1 << s) != 0 {
                                q += 16;
                            }
                            y.push(d * sc as f32 * q as f32 - dmin * m as f32);
                        }
                    }
                }
                KKind::Q6K => {
                    let d = h(b, 208);
                    let mut out = [0f32; 256];
                    for n in 0..2 {
                        let (ql, qh, sc) = (&b[n * 64..], &b[128 + n * 32..], &b[192 + n * 8..]);
                        for l in 0..32 {
                            let is = l / 16;
                            let q =
                                |lo: u8, sh: usize| (lo | (((qh[l] >> sh) & 3) << 4)) as i32 - 32;
                            let v = [
                                q(ql[l] & 0xF, 0),
                                q(ql[l + 32] & 0xF, 2),
                                q(ql[l] >> 4, 4),
                                q(ql[l + 32] >> 4, 6),
                            ];
                            for (k, v) in v.iter().enumerate() {
                                let s = sc[is + 2 * k] as i8 as f32;
                                out[n * 128 + l + 32 * k] = d * s * *v as f32;
                            }
                        }
                    }
                    y.extend(out);
                }
            }
        }
        y
    }

    const KINDS: [KKind; 5] = [KKind::Q2K, KKind::Q3K, KKind::Q4K, KKind::Q5K, KKind::Q6K];

    #[test]
    fn every_kernel_matches_the_dequantized_product() {
        // 7 rows: pairs and a remainder; 6 activation rows: a tile of 4 and two single rows.
        let (rows, cols, n) = (7, 512, 6);
        let x: Vec<f32> = (0..n * cols)
            .map(|i| ((i * 104_729 % 997) as f32 / 498.0 - 1.0) * 2.0)
            .collect();
        for kind in KINDS {
            let data = blocks(kind, rows * cols / QK_K, kind as u64 + 1);
            let w = dequantize(kind, &data);
            let m = KMatrix::new(kind, rows, cols, &data).unwrap();
            let acts = quantize_acts(&x, cols);
            let mut plans = vec![Plan {
                #[cfg(target_arch = "x86_64")]
                isa: None,
                rw: 2,
                ra: 4,
                lanes: false,
            }];
            #[cfg(target_arch = "x86_64")]
            if let Some(best) = crate::quant::x86::detect() {
                for isa in [crate::quant::x86::Isa::Avx2, best] {
                    for (rw, ra) in [(1, 1), (2, 4), (1, 4), (2, 1)] {
                        plans.push(Plan {
                            isa: Some(isa),
                            rw,
                            ra,
                            lanes: false,
                        });
                    }
                }
            }
            for plan in plans {
                let y = m.matmul_with(&x, plan);
                for i in 0..n {
                    for r in 0..rows {
                        let exact: f32 = (0..cols).map(|k| w[r * cols + k] * x[i * cols + k]).sum();
                        let got = y[i * rows + r];
                        let portable = dot_portable(&m, &acts, r, i);
                        let scale: f32 = (0..cols)
                            .map(|k| (w[r * cols + k] * x[i * cols + k]).abs())
                            .sum();
                        // Activation quantization (8 bits per 256) is the only difference.
                        assert!(
                            (got - exact).abs() <= 0.02 * scale,
                            "{kind:?} [{i}, {r}]: {got} vs {exact}"
                        );
                        assert!(
                            (got - portable).abs() <= 1e-5 * scale,
                            "{kind:?} [{i}, {r}]: kernel {got} vs portable {portable}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn activations_round_as_llama_cpp() {
        // The largest magnitude maps to -127 whatever its sign (llama.cpp's `-127 / max`), ties
        // round to even, and an all-zero block stays zero.
        let mut x = vec![0f32; 768];
        x[..4].copy_from_slice(&[-127.0, 2.5, 3.5, -0.5]);
        x[256] = 127.0;
        x[257] = 1.5;
        let a = quantize_acts(&x, 256);
        assert_eq!(&a.q[..4], &[-127, 2, 4, 0]);
        assert_eq!((a.d[0], a.bsums[0]), (1.0, -121));
        assert_eq!((a.q[256], a.q[257], a.d[1]), (-127, -2, -1.0));
        assert_eq!((a.d[2], a.bsums[32]), (0.0, 0));
    }
}
