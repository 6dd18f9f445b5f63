//! Linear layers. [`Linear`] is the seam that quantization and LoRA wrap: a model holds
//! `Box<dyn Linear>`-compatible layers and never knows whether the weight is f32, quantized, or
//! carries an adapter.

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Module, Tensor, D};
use plinth_core::Result;
use std::sync::{Arc, RwLock};

/// `y = x W^T (+ b)` for `x` of shape `[..., in]`.
pub trait Linear: Send + Sync {
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
    /// Parameter count, for `plinth inspect`.
    fn params(&self) -> usize;
}

/// From this many input rows on, a quantized weight is dequantized and multiplied in f32.
///
/// The quantized kernels quantize activations to 8 bits (as llama.cpp does), which costs
/// accuracy: on SmolLM2 Q4_1 greedy answers visibly drift from the f32 reference. For a
/// prompt (many rows) dequantizing the weight once per call is cheap next to the GEMM and
/// gives the reference's numbers; single-token decode stays on the bandwidth-bound
/// quantized path.
pub const DEQUANT_MIN_ROWS: usize = 32;

/// A low-rank adapter on a linear layer: `y += scale * (x A^T) B^T`, with `a` `[r, in]` and
/// `b` `[out, r]` (PEFT's `lora_A` / `lora_B`). During training `a` and `b` are candle `Var`s
/// (their tensors share storage with the optimizer's), so the same forward pass carries
/// gradients to them.
#[derive(Debug, Clone)]
pub struct Lora {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
    /// Dropout on the adapter's input while training (PEFT's `lora_dropout`): applied only
    /// when `a` is a trainable variable, with masks drawn from [`dropout_seed`]'s stream.
    pub dropout: f32,
}

thread_local! {
    static DROPOUT_STATE: std::cell::Cell<u64> = const { std::cell::Cell::new(0x9E37_79B9_7F4A_7C15) };
}

/// Seeds this thread's dropout masks. The training loop seeds each sequence's pass from the
/// run's seed, step and example, so masks (and results) are the same in a resumed run.
pub fn dropout_seed(seed: u64) {
    DROPOUT_STATE.with(|s| s.set(seed ^ 0x9E37_79B9_7F4A_7C15));
}

/// A `[.., n]` keep-mask scaled by `1 / (1 - p)` (inverted dropout), from a SplitMix64 stream.
fn dropout_mask(shape: &candle_core::Shape, p: f32) -> Result<Tensor> {
    let n = shape.elem_count();
    let keep = 1.0 / (1.0 - p);
    let threshold = (p as f64 * u32::MAX as f64) as u32;
    let mut state = DROPOUT_STATE.with(|s| s.get());
    let mask: Vec<f32> = (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            if ((z >> 32) as u32) < threshold { 0.0 } else { keep }
        })
        .collect();
    DROPOUT_STATE.with(|s| s.set(state));
    Ok(Tensor::from_vec(mask, shape.clone(), &candle_core::Device::Cpu)?)
}

/// A linear layer over a quantized or plain weight (candle's `QMatMul` covers both), with an
/// optional LoRA adapter attached at run time.
pub struct QLinear {
    w: QMatMul,
    bias: Option<Tensor>,
    params: usize,
    lora: RwLock<Option<Lora>>,
    /// Served adapters by slot (slot `i` is `slots[i]`), chosen per batch row through
    /// [`RowAdapters`].
    slots: RwLock<Vec<Option<Lora>>>,
    /// A quantized weight dequantized once for autodiff (training), kept for the next pass.
    f32_for_grad: std::sync::OnceLock<Tensor>,
}

thread_local! {
    static ROW_ADAPTERS: std::cell::RefCell<Vec<Option<usize>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Which adapter slot each batch row (dimension 0 of a linear layer's input) uses, for the
/// duration of one model forward pass on this thread. Set by the model from its KV caches;
/// dropped at the end of the pass.
pub struct RowAdapters(());

impl RowAdapters {
    pub fn set(rows: Vec<Option<usize>>) -> Self {
        ROW_ADAPTERS.with(|r| *r.borrow_mut() = rows);
        RowAdapters(())
    }
}

impl Drop for RowAdapters {
    fn drop(&mut self) {
        ROW_ADAPTERS.with(|r| r.borrow_mut().clear());
    }
}

impl QLinear {
    pub fn from_qtensor(w: Arc<QTensor>, bias: Option<Tensor>) -> Result<Self> {
        let params = w.shape().elem_count() + bias.as_ref().map_or(0, |b| b.elem_count());
        Ok(QLinear { w: QMatMul::from_arc(w)?, bias, params, lora: RwLock::new(None), slots: RwLock::new(Vec::new()), f32_for_grad: std::sync::OnceLock::new() })
    }

    pub fn from_tensor(w: Tensor, bias: Option<Tensor>) -> Self {
        let params = w.elem_count() + bias.as_ref().map_or(0, |b| b.elem_count());
        QLinear { w: QMatMul::Tensor(w), bias, params, lora: RwLock::new(None), slots: RwLock::new(Vec::new()), f32_for_grad: std::sync::OnceLock::new() }
    }
}

impl QLinear {
    /// `[out, in]`.
    pub fn dims(&self) -> (usize, usize) {
        match &self.w {
            QMatMul::QTensor(q) => {
                let d = q.shape().dims();
                (d[0], d[1])
            }
            QMatMul::Tensor(t) | QMatMul::TensorF16(t) => (t.dims()[0], t.dims()[1]),
        }
    }

    /// Whether the weight is block-quantized (Q4_0, Q4_K, ...), not a float tensor.
    pub fn is_block_quantized(&self) -> bool {
        use candle_core::quantized::GgmlDType::{BF16, F16, F32};
        matches!(&self.w, QMatMul::QTensor(q) if !matches!(q.dtype(), F32 | F16 | BF16))
    }

    /// Attaches (or with `None` removes) a LoRA adapter; shapes are checked against the layer.
    pub fn set_lora(&self, lora: Option<Lora>) -> Result<()> {
        if let Some(l) = &lora {
            self.check(l)?;
        }
        *self.lora.write().unwrap_or_else(|p| p.into_inner()) = lora;
        Ok(())
    }

    /// Puts (or with `None` clears) a served adapter in `slot`.
    pub fn set_slot(&self, slot: usize, lora: Option<Lora>) -> Result<()> {
        if let Some(l) = &lora {
            self.check(l)?;
        }
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        if slots.len() <= slot {
            slots.resize(slot + 1, None);
        }
        slots[slot] = lora;
        Ok(())
    }

    fn check(&self, l: &Lora) -> Result<()> {
        let (out, inp) = self.dims();
        let (r, a_in) = l.a.dims2()?;
        let (b_out, b_r) = l.b.dims2()?;
        if a_in != inp || b_out != out || b_r != r {
            return Err(plinth_core::Error::Shape { name: "lora".into(), expected: vec![r, inp, out, r], found: vec![r, a_in, b_out, b_r] });
        }
        Ok(())
    }

    pub fn lora(&self) -> Option<Lora> {
        self.lora.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The weight as f32 `[out, in]` (dequantized if needed), for merging adapters.
    pub fn weight_f32(&self) -> Result<Tensor> {
        Ok(match &self.w {
            QMatMul::QTensor(q) => q.dequantize(&candle_core::Device::Cpu)?,
            QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.to_dtype(candle_core::DType::F32)?,
        })
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

/// `x W^T` for a frozen `W` under autodiff. candle's matmul backward always computes the
/// gradient of both operands; for a frozen base weight that is as much work again as the
/// forward product, thrown away. This op's backward returns only `dL/dx = dL/dy W`.
fn frozen_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(FrozenMatMul { w: w.clone() })?)
}

struct FrozenMatMul {
    /// `[out, in]`.
    w: Tensor,
}

impl candle_core::CustomOp1 for FrozenMatMul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, s: &candle_core::CpuStorage, l: &candle_core::Layout) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let candle_core::CpuStorage::F32(v) = s else {
            candle_core::bail!("frozen-matmul: f32 input expected");
        };
        let (a, b) = l.contiguous_offsets().ok_or(candle_core::Error::RequiresContiguous { op: "frozen-matmul" })?;
        let x = Tensor::from_slice(&v[a..b], l.shape(), &candle_core::Device::Cpu)?;
        let y = x.broadcast_matmul(&self.w.t()?)?;
        let shape = y.shape().clone();
        Ok((candle_core::CpuStorage::F32(y.flatten_all()?.to_vec1::<f32>()?), shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.broadcast_matmul(&self.w)?))
    }
}

impl Lora {
    /// `scale * (dropout(x) A^T) B^T`.
    fn delta(&self, x: &Tensor) -> Result<Tensor> {
        let x = if self.dropout > 0.0 && self.a.is_variable() { (x * dropout_mask(x.shape(), self.dropout)?)? } else { x.clone() };
        Ok((x.broadcast_matmul(&self.a.t()?)?.broadcast_matmul(&self.b.t()?)? * self.scale)?)
    }
}

impl QLinear {
    /// Adds each row's served adapter (see [`RowAdapters`]); rows without one are untouched.
    fn add_served(&self, x: &Tensor, mut y: Tensor) -> Result<Tensor> {
        // The common case (no served adapter in this batch) stays allocation-free.
        if ROW_ADAPTERS.with(|r| r.borrow().iter().all(Option::is_none)) {
            return Ok(y);
        }
        let rows = ROW_ADAPTERS.with(|r| r.borrow().clone());
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        let b = x.dim(0)?;
        let mut ids: Vec<usize> = rows.iter().flatten().copied().collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            let Some(Some(l)) = slots.get(id) else { continue };
            let mine: Vec<u32> = rows.iter().enumerate().filter(|(_, r)| **r == Some(id)).map(|(i, _)| i as u32).collect();
            if b < DEQUANT_MIN_ROWS {
                // A decode batch: each row is its own sequence. Its delta is computed alone, as
                // it would be without the batch; a GEMM over several rows may sum in another
                // order, and a near-tie then flips a greedy token with the batch's make-up.
                for &i in &mine {
                    let d = l.delta(&x.narrow(0, i as usize, 1)?)?;
                    y = y.index_add(&Tensor::new(&[i], x.device())?, &d, 0)?;
                }
            } else if mine.len() == b && rows.len() == b {
                y = (y + l.delta(x)?)?;
            } else {
                let idx = Tensor::new(mine.as_slice(), x.device())?;
                let d = l.delta(&x.index_select(&idx, 0)?)?;
                y = y.index_add(&idx, &d, 0)?;
            }
        }
        Ok(y)
    }
}

impl Linear for QLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let rows = x.elem_count() / x.dim(D::Minus1)?.max(1);
        let y = match &self.w {
            // Under autodiff the quantized kernel (no backward pass) would silently cut the
            // graph; the dequantized weight is an ordinary matmul that carries gradients to x.
            // Training runs many passes over the same weights: dequantize once and keep it
            // (the f32 copy exists only in a process that trains).
            QMatMul::QTensor(q) if x.track_op() => {
                let w = match self.f32_for_grad.get() {
                    Some(w) => w.clone(),
                    None => {
                        let w = q.dequantize(&x.device().clone())?;
                        let _ = self.f32_for_grad.set(w.clone());
                        w
                    }
                };
                frozen_matmul(x, &w)?
            }
            QMatMul::Tensor(w) if x.track_op() => frozen_matmul(x, w)?,
            QMatMul::QTensor(q) if rows >= DEQUANT_MIN_ROWS => QMatMul::Tensor(q.dequantize(&x.device().clone())?).forward(x)?,
            // Decode: the hand-written SIMD kernels where one covers this weight type.
            QMatMul::QTensor(q) if crate::kernels::enabled() => match crate::kernels::quantized_matmul(q, x)? {
                Some(y) => y,
                None => self.w.forward(x)?,
            },
            w => w.forward(x)?,
        };
        self.finish(x, y)
    }
    fn params(&self) -> usize {
        self.params
    }
}

impl QLinear {
    /// Several layers applied to the same input (a block's q/k/v or gate/up projections): in
    /// decode, through one quantization of `x` and one hand-off to the worker pool; otherwise
    /// each layer's own [`Linear::forward`].
    pub fn forward_many(layers: &[&QLinear], x: &Tensor) -> Result<Vec<Tensor>> {
        let rows = x.elem_count() / x.dim(D::Minus1)?.max(1);
        if rows < DEQUANT_MIN_ROWS && !x.track_op() && crate::kernels::enabled() {
            let qs: Option<Vec<&QTensor>> = layers.iter().map(|l| if let QMatMul::QTensor(q) = &l.w { Some(q.as_ref()) } else { None }).collect();
            if let Some(qs) = qs {
                if let Some(ys) = crate::kernels::quantized_matmul_many(&qs, x)? {
                    return layers.iter().zip(ys).map(|(l, y)| l.finish(x, y)).collect();
                }
            }
        }
        layers.iter().map(|l| l.forward(x)).collect()
    }

    /// Bias, the attached adapter and the served adapters on top of `x W^T`.
    fn finish(&self, x: &Tensor, y: Tensor) -> Result<Tensor> {
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let lora = self.lora.read().unwrap_or_else(|p| p.into_inner());
        let y = match lora.as_ref() {
            Some(l) => (y + l.delta(x)?)?,
            None => y,
        };
        self.add_served(x, y)
    }
}
