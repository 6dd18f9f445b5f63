//! Test harness shared by the weight formats added after Q4_1 (test builds only): each format
//! describes itself as a [`Case`] (its candle dtype, its [`Format`], its activation quantizer
//! and an independent per-element decoding of its blocks), and these functions run the house
//! checks on it: layout against candle's `dequantize`, every [`Isa::available`] path against an
//! f64 reference, closeness to an f32 matmul, shape rejection and a speed probe.

use super::q4_1::tests::Rng;
use super::{matmul_rows, ActBlock, Format, Isa};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

/// Decodes one weight block to `(s, q, o)` per element (see [`Case::unpack`]).
pub(crate) type Unpack = fn(&[u8]) -> Vec<(f32, i32, f32)>;

/// One weight format under test.
pub(crate) struct Case<A: ActBlock + 'static> {
    pub dtype: GgmlDType,
    pub format: &'static Format<A>,
    /// Quantizes an activation row with a forced path.
    pub quantize: fn(Isa, &[f32]) -> Vec<A>,
    /// The exact values `d_a·q_a` of an activation row, in f64.
    pub act: fn(&[A]) -> Vec<f64>,
    /// One weight block decoded as `(s, q, o)` per element, value = `s·q − o`, with `s` and
    /// `o` the f32 products candle forms (exact in f32 for these formats: an f16 times a
    /// 6- to 8-bit integer), written independently of the kernels.
    pub unpack: Unpack,
}

/// A random `[rows, cols]` weight (normal, σ 0.05, mean 0.01) quantized by candle, with its bytes.
pub(crate) fn weight(rng: &mut Rng, dtype: GgmlDType, rows: usize, cols: usize) -> (QTensor, Vec<u8>) {
    let v: Vec<f32> = (0..rows * cols).map(|_| rng.normal() * 0.05 + 0.01).collect();
    let t = Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&t, dtype).unwrap();
    let bytes = q.data().unwrap().into_owned();
    (q, bytes)
}

fn dequantize(q: &QTensor) -> Vec<f32> {
    q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// The layout `unpack` assumes decodes bit-exactly to candle's `dequantize` of the same bytes.
pub(crate) fn check_layout<A: ActBlock>(c: &Case<A>, rows: usize, cols: usize) {
    let mut rng = Rng(1);
    let (q, bytes) = weight(&mut rng, c.dtype, rows, cols);
    let want = dequantize(&q);
    let got: Vec<f32> = bytes.chunks_exact(c.format.block_bytes).flat_map(|b| (c.unpack)(b)).map(|(s, q, o)| s * q as f32 - o).collect();
    assert_eq!(got, want, "{}: bit-exact dequantization expected", c.format.name);
}

/// `(value, Σ|terms|)` of one weight row times one activation row, in f64, element by element:
/// every term `(s·q − o)·d_a·q_a` is exact in f64 up to its last rounding, and the magnitude
/// `Σ(|s·q| + |o|)·|d_a·q_a|` bounds what the kernels' f32 roundings scale with (the `s·q` and
/// `o` parts can cancel within a block).
fn reference<A: ActBlock>(c: &Case<A>, row: &[u8], x: &[f64]) -> (f64, f64) {
    let (mut v, mut m) = (0f64, 1e-30f64);
    let elems = row.chunks_exact(c.format.block_bytes).flat_map(|b| (c.unpack)(b));
    for ((s, q, o), &a) in elems.zip(x) {
        let (p, off) = (s as f64 * q as f64, o as f64);
        v += (p - off) * a;
        m += (p.abs() + off.abs()) * a.abs();
    }
    (v, m)
}

/// Every available path against the f64 reference on awkward sizes (rows 1, 3, 17, 100 over
/// the given column counts; 1 and 3 activation rows). The integer block sums are exact on every
/// path; what remains is f32 rounding of the block scales and of the running sum, bounded by
/// `tol·Σ|terms|` (stated by the caller). Returns the worst `|Δ| / Σ|terms|`.
pub(crate) fn check_paths<A: ActBlock>(c: &Case<A>, cols_list: &[usize], tol: f64) -> f64 {
    let mut rng = Rng(3);
    let mut worst = 0f64;
    for &cols in cols_list {
        for rows in [1, 3, 17, 100] {
            let (_, w) = weight(&mut rng, c.dtype, rows, cols);
            let rb = w.len() / rows;
            for n_x in [1, 3] {
                let x: Vec<f32> = (0..n_x * cols).map(|_| rng.normal()).collect();
                let xs = (c.quantize)(Isa::Scalar, &x);
                let xf = (c.act)(&xs);
                for isa in Isa::available() {
                    let mut out = vec![f32::NAN; n_x * rows];
                    matmul_rows(c.format, isa, &w, rows, cols, &xs, &mut out).unwrap();
                    for i in 0..n_x {
                        for r in 0..rows {
                            let (want, mag) = reference(c, &w[r * rb..(r + 1) * rb], &xf[i * cols..(i + 1) * cols]);
                            let got = out[i * rows + r] as f64;
                            let err = (got - want).abs();
                            worst = worst.max(err / mag);
                            assert!(err <= tol * mag, "{} {isa:?} rows {rows} cols {cols} x {i} row {r}: {got} vs {want} (Σ|terms| {mag})", c.format.name);
                        }
                    }
                }
            }
        }
    }
    println!("{} matmul: max |Δ| / Σ|terms| = {worst:.2e} over {:?} (tolerance {tol:.0e})", c.format.name, Isa::available());
    worst
}

/// The result (best path) is close to candle's f32 matmul of the dequantized weight: the only
/// difference is the 8-bit activation rounding (≤ d_a/2 per value). Tolerance 1% of Σ|w·x|,
/// printed.
pub(crate) fn check_close_to_f32<A: ActBlock>(c: &Case<A>, rows: usize, cols: usize) {
    let mut rng = Rng(5);
    let (q, w) = weight(&mut rng, c.dtype, rows, cols);
    let x: Vec<f32> = (0..cols).map(|_| rng.normal()).collect();
    let wf = dequantize(&q);
    let xs = (c.quantize)(Isa::detect(), &x);
    let mut out = vec![0f32; rows];
    matmul_rows(c.format, Isa::detect(), &w, rows, cols, &xs, &mut out).unwrap();
    let mut worst = 0f32;
    for r in 0..rows {
        let wr = &wf[r * cols..(r + 1) * cols];
        let exact: f32 = wr.iter().zip(&x).map(|(a, b)| a * b).sum();
        let mag: f32 = wr.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
        worst = worst.max((out[r] - exact).abs() / mag);
        assert!((out[r] - exact).abs() <= 0.01 * mag, "{} row {r}: {} vs {exact}", c.format.name, out[r]);
    }
    println!("{} vs f32: max |Δ| / Σ|w·x| = {worst:.2e} (tolerance 1e-2)", c.format.name);
}

/// Bad shapes are errors, not panics: byte counts, column counts, activation and output sizes.
pub(crate) fn check_rejects<A: ActBlock + Default>(c: &Case<A>) {
    let f = c.format;
    let cols = f.block_values.max(A::VALUES) * 2;
    let bytes = 2 * cols / f.block_values * f.block_bytes;
    let xs = vec![A::default(); cols / A::VALUES];
    let mut out = vec![0f32; 2];
    let w = vec![0u8; bytes];
    let run = |w: &[u8], cols: usize, xs: &[A], out: &mut [f32]| matmul_rows(f, Isa::detect(), w, 2, cols, xs, out);
    assert!(run(&w, cols, &xs, &mut out).is_ok());
    assert!(run(&w[..bytes - 1], cols, &xs, &mut out).is_err());
    assert!(run(&w, cols - 1, &xs, &mut out).is_err());
    assert!(run(&w, 0, &xs, &mut out).is_err());
    assert!(run(&w, cols, &xs[..xs.len() - 1], &mut out).is_err());
    assert!(run(&w, cols, &[], &mut out).is_err());
    assert!(run(&w, cols, &xs, &mut out[..1]).is_err());
}

/// Time per `[rows, cols]` matvec on each path, and weight bytes per second (run by hand with
/// `--ignored --nocapture`; nothing asserted). The machine is shared and a preempted pool
/// worker stalls a whole call for a time slice, so each call is timed alone and the median
/// and the best are printed rather than the mean.
pub(crate) fn speed<A: ActBlock>(c: &Case<A>, rows: usize, cols: usize) {
    let mut rng = Rng(9);
    let (_, w) = weight(&mut rng, c.dtype, rows, cols);
    let x: Vec<f32> = (0..cols).map(|_| rng.normal()).collect();
    let xs = (c.quantize)(Isa::Scalar, &x);
    let mut out = vec![0f32; rows];
    for isa in Isa::available() {
        // About 2 GB of weight traffic per path, at least 20 runs.
        let n = (2e9 / w.len() as f64).clamp(20.0, 5000.0) as usize;
        matmul_rows(c.format, isa, &w, rows, cols, &xs, &mut out).unwrap();
        let mut t: Vec<f64> = (0..n)
            .map(|_| {
                let t0 = std::time::Instant::now();
                matmul_rows(c.format, isa, &w, rows, cols, &xs, &mut out).unwrap();
                t0.elapsed().as_secs_f64()
            })
            .collect();
        t.sort_by(f64::total_cmp);
        let (med, best) = (t[n / 2], t[0]);
        let gbs = |dt: f64| w.len() as f64 / dt / 1e9;
        println!("{} {isa:?}: [{rows}x{cols}] matvec median {:.1} us ({:.1} GB/s of weights), best {:.1} us ({:.1} GB/s)", c.format.name, med * 1e6, gbs(med), best * 1e6, gbs(best));
    }
}

/// `quantized_matmul` routes each new format to its kernel: a result close to the f32 product
/// of the dequantized weight (1% of Σ|w·x|), for 1 and 3 activation rows.
#[test]
fn dispatch_new_formats() {
    let mut rng = Rng(21);
    for (dtype, cols) in [(GgmlDType::Q8_0, 576), (GgmlDType::Q4_0, 576), (GgmlDType::Q4K, 512), (GgmlDType::Q6K, 512)] {
        let rows = 48;
        let (q, _) = weight(&mut rng, dtype, rows, cols);
        let wf = dequantize(&q);
        for n_x in [1, 3] {
            let x: Vec<f32> = (0..n_x * cols).map(|_| rng.normal()).collect();
            let xt = Tensor::from_vec(x.clone(), (n_x, cols), &Device::Cpu).unwrap();
            let y = super::quantized_matmul(&q, &xt).unwrap().expect("a kernel for this format");
            assert_eq!(y.dims(), &[n_x, rows]);
            let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for i in 0..n_x {
                for r in 0..rows {
                    let (wr, xr) = (&wf[r * cols..(r + 1) * cols], &x[i * cols..(i + 1) * cols]);
                    let exact: f32 = wr.iter().zip(xr).map(|(a, b)| a * b).sum();
                    let mag: f32 = wr.iter().zip(xr).map(|(a, b)| (a * b).abs()).sum();
                    assert!((y[i * rows + r] - exact).abs() <= 0.01 * mag, "{dtype:?} x {i} row {r}: {} vs {exact}", y[i * rows + r]);
                }
            }
        }
    }
    // Q8_0 takes any multiple of 32 columns (288 is no multiple of 256).
    let t = Tensor::from_vec((0..32 * 288).map(|i| (i % 7) as f32 * 0.1).collect::<Vec<_>>(), (32, 288), &Device::Cpu).unwrap();
    let x = Tensor::ones((1, 288), candle_core::DType::F32, &Device::Cpu).unwrap();
    let q = QTensor::quantize(&t, GgmlDType::Q8_0).unwrap();
    assert!(super::quantized_matmul(&q, &x).unwrap().is_some());
}
