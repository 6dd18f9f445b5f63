//! Attention for one new token per sequence (decode), reading the KV cache in place.
//!
//! The general path ([`super::scaled_dot_product_attention`]) copies the cached keys and
//! values into contiguous tensors and runs two small GEMMs with a softmax between them: per
//! decoded token that is one read and one write of the whole cache per layer plus GEMM packing,
//! several times the work of reading the cache once. Here each query head streams its kv head's
//! keys (scores), takes the softmax, and streams the values (weighted sum), straight from the
//! cache's strided storage; the work is split by kv head and block of positions across
//! candle's worker pool (see `DecodeAttention::run`). The cache may hold
//! f32 or f16 (converted 8 values at a time as they are read).

use super::fused::exp;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use plinth_core::Result;

/// `softmax(q k^T * scale + mask) v` for `q` `[1, heads, 1, d]` and `k`, `v`
/// `[1, kv_heads, total, d]` (any strides with a contiguous last dimension, e.g. a view of a
/// cache buffer), `q` f32 and `k`, `v` both f32 or both f16; `mask` holds `total` additive
/// values. Returns `None` where the
/// inputs do not fit (other dtypes or shapes, or tensors that need gradients), so the caller
/// keeps the general path.
pub fn decode_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, scale: f32, softcap: Option<f32>) -> Result<Option<Tensor>> {
    use candle_core::DType;
    let kv_ok = k.dtype() == v.dtype() && matches!(k.dtype(), DType::F32 | DType::F16);
    let fits = q.dtype() == DType::F32 && kv_ok && [q, k, v].iter().all(|t| !t.track_op());
    if !fits || q.rank() != 4 || k.rank() != 4 || v.rank() != 4 {
        return Ok(None);
    }
    let (b, heads, seq, d) = q.dims4()?;
    let (kb, kv_heads, total, kd) = k.dims4()?;
    if b != 1 || seq != 1 || kb != 1 || kd != d || v.dims() != k.dims() || kv_heads == 0 || heads % kv_heads != 0 {
        return Ok(None);
    }
    let mask = match mask {
        Some(m) if m.elem_count() == total => Some(m.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
        Some(_) => return Ok(None),
        None => None,
    };
    let op = DecodeAttention { heads, kv_heads, total, d, scale, softcap, mask };
    Ok(Some(q.apply_op3_no_bwd(k, v, &op)?))
}

struct DecodeAttention {
    heads: usize,
    kv_heads: usize,
    total: usize,
    d: usize,
    scale: f32,
    softcap: Option<f32>,
    mask: Option<Vec<f32>>,
}

/// An element type the cache may hold.
trait KvElem: Copy + Send + Sync {
    fn f32(self) -> f32;
    /// Eight values from `p` as f32 lanes.
    ///
    /// # Safety
    /// `p` points at 8 readable values; AVX2/F16C enabled at compile time.
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

impl KvElem for f32 {
    #[inline(always)]
    fn f32(self) -> f32 {
        self
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        std::arch::x86_64::_mm256_loadu_ps(p)
    }
}

impl KvElem for half::f16 {
    #[inline(always)]
    fn f32(self) -> f32 {
        self.to_f32()
    }
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
}

/// A `[1, kv_heads, total, d]` view: the storage, the offset of `(h, t)` rows and their strides.
struct Rows<'a, T> {
    data: &'a [T],
    start: usize,
    head_stride: usize,
    pos_stride: usize,
}

impl<'a, T: KvElem> Rows<'a, T> {
    fn new(data: &'a [T], l: &Layout, d: usize, op: &'static str) -> candle_core::Result<Self> {
        let st = l.stride();
        if st.len() != 4 || (st[3] != 1 && d > 1) {
            return Err(candle_core::Error::RequiresContiguous { op });
        }
        let (kvh, total) = (l.dims()[1], l.dims()[2]);
        // The farthest element read must lie inside the storage.
        let last = l.start_offset() + (kvh.max(1) - 1) * st[1] + (total.max(1) - 1) * st[2] + d;
        if last > data.len() {
            return Err(candle_core::Error::Msg(format!("{op}: view of {last} values over {}", data.len())));
        }
        Ok(Rows { data, start: l.start_offset(), head_stride: st[1], pos_stride: st[2] })
    }

    #[inline]
    fn row(&self, h: usize, t: usize, d: usize) -> &'a [T] {
        let o = self.start + h * self.head_stride + t * self.pos_stride;
        &self.data[o..o + d]
    }
}

struct SharedOut(*mut f32);
// SAFETY: each worker writes only the output rows of the heads it was handed.
unsafe impl Sync for SharedOut {}

impl CustomOp3 for DecodeAttention {
    fn name(&self) -> &'static str {
        "decode-attention"
    }

    fn cpu_fwd(&self, qs: &CpuStorage, ql: &Layout, ks: &CpuStorage, kl: &Layout, vs: &CpuStorage, vl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (heads, d) = (self.heads, self.d);
        let q = match (qs, ql.contiguous_offsets()) {
            (CpuStorage::F32(v), Some((a, b))) if b - a == heads * d => &v[a..b],
            _ => return Err(candle_core::Error::RequiresContiguous { op: "decode-attention q" }),
        };
        let out = match (ks, vs) {
            (CpuStorage::F32(k), CpuStorage::F32(v)) => self.run(q, Rows::new(k, kl, d, "decode-attention k")?, Rows::new(v, vl, d, "decode-attention v")?),
            (CpuStorage::F16(k), CpuStorage::F16(v)) => self.run(q, Rows::new(k, kl, d, "decode-attention k")?, Rows::new(v, vl, d, "decode-attention v")?),
            _ => candle_core::bail!("decode-attention: keys and values must both be f32 or both f16"),
        };
        Ok((CpuStorage::F32(out), Shape::from((1, heads, 1, d))))
    }
}

/// Positions per unit of work: a block's keys and values (8 KB per kv head at d = 64 in f16)
/// stay in L1 while every query head of the group reads them.
const BLOCK: usize = 64;

impl DecodeAttention {
    /// Work items are (kv head, block of positions): each reads its keys and values once for
    /// all the query heads sharing that kv head, and yields per head a partial softmax (block
    /// max, sum of exponentials, unnormalized weighted sum of values); the partials are then
    /// merged per head (the flash-decoding split, which also balances the two threads however
    /// few kv heads there are).
    fn run<T: KvElem>(&self, q: &[f32], k: Rows<'_, T>, v: Rows<'_, T>) -> Vec<f32> {
        let (heads, d, total) = (self.heads, self.d, self.total);
        let group = heads / self.kv_heads;
        let blocks = total.div_ceil(BLOCK).max(1);
        let items = self.kv_heads * blocks;
        // Per item and head of its group: [max, sum, o[0..d]].
        let stride = 2 + d;
        let mut partial = vec![0f32; items * group * stride];
        let dst = SharedOut(partial.as_mut_ptr());
        let (dst, k, v) = (&dst, &k, &v);
        candle_core::utils::barrier_pool().execute_chunked(items, |range| {
            let mut p = vec![0f32; BLOCK];
            for item in range {
                let (g, b) = (item / blocks, item % blocks);
                let (t0, t1) = (b * BLOCK, ((b + 1) * BLOCK).min(total));
                let p = &mut p[..t1 - t0];
                for j in 0..group {
                    let h = g * group + j;
                    let qh = &q[h * d..(h + 1) * d];
                    match d {
                        64 => scores::<64, T>(qh, k, g, t0, p),
                        128 => scores::<128, T>(qh, k, g, t0, p),
                        _ => p.iter_mut().enumerate().for_each(|(t, pt)| *pt = dot_any(qh, k.row(g, t0 + t, d))),
                    }
                    for s in p.iter_mut() {
                        *s *= self.scale;
                        if let Some(c) = self.softcap {
                            *s = c * (2.0 / (1.0 + exp(-2.0 * *s / c)) - 1.0);
                        }
                    }
                    if let Some(m) = &self.mask {
                        p.iter_mut().zip(&m[t0..t1]).for_each(|(s, m)| *s += m);
                    }
                    let max = p.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                    // A fully masked block (max = -inf) contributes nothing, not NaN.
                    let safe_max = if max.is_finite() { max } else { 0.0 };
                    p.iter_mut().for_each(|s| *s = exp(*s - safe_max));
                    // SAFETY: items are handed out in disjoint ranges, and each item owns its
                    // `group` records of `stride` values; `partial` outlives `execute_chunked`,
                    // which waits for all workers.
                    let rec = unsafe { std::slice::from_raw_parts_mut(dst.0.add((item * group + j) * stride), stride) };
                    rec[0] = max;
                    rec[1] = super::fused::sum8(p);
                    let o = &mut rec[2..];
                    match d {
                        64 => weighted_sum::<64, T>(p, v, g, t0, o),
                        128 => weighted_sum::<128, T>(p, v, g, t0, o),
                        _ => {
                            for (t, &w) in p.iter().enumerate() {
                                o.iter_mut().zip(v.row(g, t0 + t, d)).for_each(|(o, &x)| *o += w * x.f32());
                            }
                        }
                    }
                }
            }
        });
        // Merge each head's blocks: rescale to the overall max, then normalize.
        let mut out = vec![0f32; heads * d];
        for (h, o) in out.chunks_exact_mut(d).enumerate() {
            let (g, j) = (h / group, h % group);
            let rec = |b: usize| &partial[((g * blocks + b) * group + j) * stride..][..stride];
            let max = (0..blocks).map(|b| rec(b)[0]).fold(f32::NEG_INFINITY, f32::max);
            if !max.is_finite() {
                continue; // every position masked: zeros, as the general path's softmax gives
            }
            let mut sum = 0f32;
            for b in 0..blocks {
                let r = rec(b);
                if !r[0].is_finite() {
                    continue;
                }
                let scale = exp(r[0] - max);
                sum += r[1] * scale;
                o.iter_mut().zip(&r[2..]).for_each(|(o, &x)| *o += scale * x);
            }
            let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
            o.iter_mut().for_each(|x| *x *= inv);
        }
        out
    }
}

/// A dot product of any length with a row of any cache element type.
#[inline(always)]
fn dot_any<T: KvElem>(q: &[f32], r: &[T]) -> f32 {
    let mut acc = [0f32; 8];
    let (mut cq, mut cr) = (q.chunks_exact(8), r.chunks_exact(8));
    for (x, y) in (&mut cq).zip(&mut cr) {
        for l in 0..8 {
            acc[l] += x[l] * y[l].f32();
        }
    }
    acc.iter().sum::<f32>() + cq.remainder().iter().zip(cr.remainder()).map(|(x, y)| x * y.f32()).sum::<f32>()
}

/// `p[t] = q · k[g, t0 + t]` for a head size known at compile time, four positions at a time: four
/// independent FMA chains instead of one dependent chain per position (a lone 64-value dot
/// product is latency-bound on its additions).
#[inline(always)]
fn scores<const D: usize, T: KvElem>(q: &[f32], k: &Rows<'_, T>, g: usize, t0: usize, p: &mut [f32]) {
    let total = p.len();
    let mut t = 0;
    while t + 4 <= total {
        let rows: [&[T]; 4] = std::array::from_fn(|j| k.row(g, t0 + t + j, D));
        p[t..t + 4].copy_from_slice(&dot4::<D, T>(q, rows));
        t += 4;
    }
    for (j, pt) in p[t..].iter_mut().enumerate() {
        *pt = dot_any(q, k.row(g, t0 + t + j, D));
    }
}

/// Four dot products of `q` with rows of length `D` (a multiple of 8; every slice holds `D`).
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
#[inline(always)]
fn dot4<const D: usize, T: KvElem>(q: &[f32], rows: [&[T]; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
    assert!(q.len() >= D && rows.iter().all(|r| r.len() >= D) && D.is_multiple_of(8));
    // SAFETY: AVX2/FMA/F16C are enabled at compile time (the cfg above); every load reads 8
    // values at offset c·8 < D of a slice of at least D (asserted).
    unsafe {
        let mut acc = [_mm256_setzero_ps(); 4];
        for c in 0..D / 8 {
            let qc = _mm256_loadu_ps(q.as_ptr().add(c * 8));
            for (a, r) in acc.iter_mut().zip(&rows) {
                *a = _mm256_fmadd_ps(qc, T::load8(r.as_ptr().add(c * 8)), *a);
            }
        }
        acc.map(|v| {
            let s = _mm_add_ps(_mm256_extractf128_ps::<1>(v), _mm256_castps256_ps128(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
        })
    }
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c")))]
#[inline(always)]
fn dot4<const D: usize, T: KvElem>(q: &[f32], rows: [&[T]; 4]) -> [f32; 4] {
    rows.map(|r| dot_any(&q[..D], &r[..D]))
}

/// `o = Σ_t p[t] · v[g, t0 + t]` for a head size known at compile time: the output row stays
/// in registers across positions instead of being loaded and stored once per position.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
#[inline(always)]
fn weighted_sum<const D: usize, T: KvElem>(p: &[f32], v: &Rows<'_, T>, g: usize, t0: usize, o: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!(o.len() == D && D.is_multiple_of(8) && D <= 128);
    // SAFETY: AVX2/FMA/F16C are enabled at compile time (the cfg above); `v.row` returns exactly
    // D values and `o` holds D (asserted), read and written 8 at a time below D.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); 16];
        let acc = &mut acc[..D / 8];
        for (t, &pt) in p.iter().enumerate() {
            let w = _mm256_set1_ps(pt);
            let r = v.row(g, t0 + t, D).as_ptr();
            for (c, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(w, T::load8(r.add(c * 8)), *a);
            }
        }
        for (c, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(o.as_mut_ptr().add(c * 8), *a);
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c")))]
#[inline(always)]
fn weighted_sum<const D: usize, T: KvElem>(p: &[f32], v: &Rows<'_, T>, g: usize, t0: usize, o: &mut [f32]) {
    for (t, &w) in p.iter().enumerate() {
        o.iter_mut().zip(v.row(g, t0 + t, D)).for_each(|(o, &x)| *o += w * x.f32());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::attention::general_attention;
    use crate::layers::{causal_mask, AttentionOptions};
    use candle_core::{Device, IndexOp};

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let v: Vec<f32> = (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Against the general path on a strided cache view (capacity > length, as the KV cache
    /// hands out), grouped heads, with and without a sliding-window mask and soft-capping.
    #[test]
    fn decode_attention_matches_general_path() {
        for (heads, kvh, total, d, window, cap) in
            [(9, 3, 37, 64, None, None), (9, 3, 300, 64, None, None), (8, 2, 200, 16, Some(70), None), (4, 2, 21, 128, None, None), (4, 4, 1, 8, None, None), (8, 2, 50, 16, Some(20), None), (6, 3, 33, 24, None, Some(5.0))]
        {
            let cap_buf = total + 11;
            let kbuf = rand(&[1, kvh, cap_buf, d], 1);
            let vbuf = rand(&[1, kvh, cap_buf, d], 2);
            let (k, v) = (kbuf.narrow(2, 0, total).unwrap(), vbuf.narrow(2, 0, total).unwrap());
            let q = rand(&[1, heads, 1, d], 3);
            let mask = window.map(|w| causal_mask(1, total - 1, Some(w), &Device::Cpu).unwrap());
            let opts = AttentionOptions { scale: None, softcap: cap };
            let want = general_attention(&q, &k, &v, mask.as_ref(), opts).unwrap();
            let scale = 1.0 / (d as f32).sqrt();
            let got = decode_attention(&q, &k, &v, mask.as_ref(), scale, cap.map(|c| c as f32)).unwrap().expect("applies");
            let diff = (got - &want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 2e-5, "heads {heads} kv {kvh} total {total}: max |Δ| {diff}");
            assert_eq!(want.i((0, 0, 0)).unwrap().dims(), [d]);
        }
    }

    /// An f16 cache gives the general path's result on the same (f16-rounded) values.
    #[test]
    fn decode_attention_reads_f16_caches() {
        use candle_core::DType;
        for (heads, kvh, total, d) in [(9, 3, 37, 64), (9, 3, 260, 64), (4, 2, 21, 128), (6, 3, 10, 24)] {
            let kbuf = rand(&[1, kvh, total + 5, d], 4).to_dtype(DType::F16).unwrap();
            let vbuf = rand(&[1, kvh, total + 5, d], 5).to_dtype(DType::F16).unwrap();
            let (k, v) = (kbuf.narrow(2, 0, total).unwrap(), vbuf.narrow(2, 0, total).unwrap());
            let q = rand(&[1, heads, 1, d], 6);
            let (kf, vf) = (k.to_dtype(DType::F32).unwrap(), v.to_dtype(DType::F32).unwrap());
            let want = general_attention(&q, &kf, &vf, None, AttentionOptions::default()).unwrap();
            let got = decode_attention(&q, &k, &v, None, 1.0 / (d as f32).sqrt(), None).unwrap().expect("applies");
            let diff = (got - &want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert!(diff < 2e-5, "f16 heads {heads} total {total} d {d}: max |Δ| {diff}");
        }
    }

    #[test]
    fn decode_attention_declines_what_it_cannot_do() {
        let q = rand(&[1, 4, 2, 8], 1); // two query positions
        let k = rand(&[1, 2, 5, 8], 2);
        assert!(decode_attention(&q, &k, &k, None, 1.0, None).unwrap().is_none());
        let q = rand(&[1, 3, 1, 8], 1); // 3 heads on 2 kv heads
        assert!(decode_attention(&q, &k, &k, None, 1.0, None).unwrap().is_none());
    }
}
