//! GGUF v2/v3 reader. Owns parsing of the header, every metadata value type (nested arrays
//! included), tensor infos and alignment, over a memory map of the file.
//!
//! A GGUF file is untrusted input: every count, length, offset and dimension is checked
//! against the bytes that remain in the file *before* anything is allocated for it, so a
//! corrupt or hostile header yields an [`Error::Format`] naming the file, never a panic or a
//! huge allocation. Quantized tensors stay quantized: [`GgufFile::qtensor`] hands candle the
//! raw blocks.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QTensor};
use candle_core::Device;
use memmap2::Mmap;
use plinth_core::{Error, Result};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml supports at most 4 dimensions; anything more is corruption.
const MAX_DIMS: u32 = 4;
/// Arrays of arrays exist (rarely); deeper nesting than this is corruption.
const MAX_NESTING: u32 = 8;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// Any integer type widened to u64 (negative values give `None`).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    /// Any integer type as i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v as i64),
            Value::I16(v) => Some(v as i64),
            Value::I32(v) => Some(v as i64),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }
    /// Any float or integer type as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
    /// Name of the GGUF value type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F32(_) => "f32",
            Value::F64(_) => "f64",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) => write!(f, "{s:?}"),
            Value::Array(a) => write!(f, "[{} items]", a.len()),
            Value::Bool(b) => write!(f, "{b}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            other => write!(f, "{}", other.as_i64().map(|v| v.to_string()).unwrap_or_default()),
        }
    }
}

/// Tensor element types as numbered by ggml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TensorType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
}

impl TensorType {
    /// Maps a ggml type id; `Err` carries a printable name of an unsupported one.
    fn from_id(id: u32) -> std::result::Result<Self, String> {
        Ok(match id {
            0 => TensorType::F32,
            1 => TensorType::F16,
            2 => TensorType::Q4_0,
            3 => TensorType::Q4_1,
            6 => TensorType::Q5_0,
            7 => TensorType::Q5_1,
            8 => TensorType::Q8_0,
            9 => TensorType::Q8_1,
            10 => TensorType::Q2K,
            11 => TensorType::Q3K,
            12 => TensorType::Q4K,
            13 => TensorType::Q5K,
            14 => TensorType::Q6K,
            15 => TensorType::Q8K,
            30 => TensorType::BF16,
            16..=23 | 29 => return Err(format!("IQ quantization (ggml type {id})")),
            4 | 5 => return Err(format!("removed ggml type Q4_2/Q4_3 ({id})")),
            other => return Err(format!("ggml type {other}")),
        })
    }

    pub fn ggml(self) -> GgmlDType {
        match self {
            TensorType::F32 => GgmlDType::F32,
            TensorType::F16 => GgmlDType::F16,
            TensorType::BF16 => GgmlDType::BF16,
            TensorType::Q4_0 => GgmlDType::Q4_0,
            TensorType::Q4_1 => GgmlDType::Q4_1,
            TensorType::Q5_0 => GgmlDType::Q5_0,
            TensorType::Q5_1 => GgmlDType::Q5_1,
            TensorType::Q8_0 => GgmlDType::Q8_0,
            TensorType::Q8_1 => GgmlDType::Q8_1,
            TensorType::Q2K => GgmlDType::Q2K,
            TensorType::Q3K => GgmlDType::Q3K,
            TensorType::Q4K => GgmlDType::Q4K,
            TensorType::Q5K => GgmlDType::Q5K,
            TensorType::Q6K => GgmlDType::Q6K,
            TensorType::Q8K => GgmlDType::Q8K,
        }
    }

    /// Elements per block.
    pub fn block_size(self) -> usize {
        self.ggml().block_size()
    }
    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.ggml().type_size()
    }
    pub fn name(self) -> &'static str {
        match self {
            TensorType::F32 => "F32",
            TensorType::F16 => "F16",
            TensorType::BF16 => "BF16",
            TensorType::Q4_0 => "Q4_0",
            TensorType::Q4_1 => "Q4_1",
            TensorType::Q5_0 => "Q5_0",
            TensorType::Q5_1 => "Q5_1",
            TensorType::Q8_0 => "Q8_0",
            TensorType::Q8_1 => "Q8_1",
            TensorType::Q2K => "Q2_K",
            TensorType::Q3K => "Q3_K",
            TensorType::Q4K => "Q4_K",
            TensorType::Q5K => "Q5_K",
            TensorType::Q6K => "Q6_K",
            TensorType::Q8K => "Q8_K",
        }
    }
}

/// Where one tensor lives in the file.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// Row-major shape (ggml stores dimensions innermost first; this is reversed).
    pub shape: Vec<usize>,
    pub dtype: TensorType,
    /// Absolute byte offset of the tensor data in the file.
    pub offset: usize,
    /// Size of the tensor data in bytes.
    pub size: usize,
}

impl TensorInfo {
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A parsed, memory-mapped GGUF file.
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    pub version: u32,
    pub alignment: u64,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    index: BTreeMap<String, usize>,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens and validates a GGUF file. Tensor data is not read until asked for.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        // SAFETY: the map is read-only; a file truncated underneath us by another process is the
        // same hazard every mmap-based loader (llama.cpp included) accepts.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let parsed = Parser { buf: &mmap, pos: 0, path: &path }.parse()?;
        let index = parsed.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(GgufFile {
            version: parsed.version,
            alignment: parsed.alignment,
            metadata: parsed.metadata,
            tensors: parsed.tensors,
            index,
            path,
            mmap,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Total file size in bytes.
    pub fn file_size(&self) -> usize {
        self.mmap.len()
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// A required metadata value; a missing one is an error naming the key.
    pub fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| Error::missing(&self.path, format!("metadata key '{key}'")))
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// A required unsigned integer; wrong types are reported with the type found.
    pub fn require_usize(&self, key: &str) -> Result<usize> {
        let v = self.require(key)?;
        v.as_u64().and_then(|v| usize::try_from(v).ok()).ok_or_else(|| {
            Error::format(&self.path, format!("metadata key '{key}' should be an unsigned integer, found {}", v.type_name()))
        })
    }

    pub fn get_usize(&self, key: &str) -> Option<usize> {
        self.get(key).and_then(Value::as_u64).and_then(|v| usize::try_from(v).ok())
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64)
    }

    /// `general.architecture`, required by the spec.
    pub fn architecture(&self) -> Result<&str> {
        let v = self.require("general.architecture")?;
        v.as_str().ok_or_else(|| Error::format(&self.path, "general.architecture is not a string"))
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// Raw bytes of a tensor, straight from the map.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.mmap[info.offset..info.offset + info.size]
    }

    /// Loads a tensor as a candle `QTensor`, keeping its quantization.
    pub fn qtensor(&self, name: &str, device: &Device) -> Result<QTensor> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| Error::missing(&self.path, format!("tensor '{name}'")))?;
        let t = qtensor_from_ggml(info.dtype.ggml(), self.tensor_bytes(info), info.shape.clone(), device)
            .map_err(|e| Error::format(&self.path, format!("tensor '{name}': {e}")))?;
        self.release(info);
        Ok(t)
    }

    /// Drops the mapped pages of a tensor that has just been copied out, so that they stop
    /// counting in this process's memory: otherwise loading holds every weight twice (the map
    /// and the copy) and peak RSS is twice the file. The pages stay in the page cache and are
    /// read back from the file if the tensor is read again. Best effort: errors are ignored.
    fn release(&self, info: &TensorInfo) {
        #[cfg(unix)]
        // SAFETY: the map is read-only and backed by a file that is not modified: MADV_DONTNEED
        // only drops resident pages, and any later read faults the same bytes back in from the
        // file, so no reference into the map ever observes a change. The range is in bounds
        // (it was just sliced by `tensor_bytes`).
        let _ = unsafe { self.mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, info.offset, info.size) };
    }
}

struct Parsed {
    version: u32,
    alignment: u64,
    metadata: BTreeMap<String, Value>,
    tensors: Vec<TensorInfo>,
}

/// A cursor over the mapped bytes. Every read checks the remaining length first.
struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Parser<'a> {
    fn err(&self, what: impl fmt::Display) -> Error {
        Error::format(self.path, format!("{what} (at byte {})", self.pos))
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "truncated file: {what} needs {n} bytes, only {} remain",
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("take returned N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items that each occupy at least `min_item_bytes`: rejected if the file
    /// cannot possibly hold that many, which bounds every allocation by the file size.
    fn count(&mut self, what: &str, min_item_bytes: usize) -> Result<usize> {
        let n = self.u64(what)?;
        let max = (self.remaining() / min_item_bytes.max(1)) as u64;
        if n > max {
            return Err(self.err(format!(
                "truncated file or corrupt header: {what} is {n}, but only {} bytes remain (room for at most {max})",
                self.remaining()
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.count(what, 1)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.err(format!("{what} is not valid UTF-8")))
    }

    fn parse(mut self) -> Result<Parsed> {
        let magic = self.take(4, "magic").map_err(|_| Error::format(self.path, "not a GGUF file: shorter than the 4-byte magic"))?;
        if magic != MAGIC {
            let hint = if magic == b"FUGG" { " (big-endian GGUF is not supported)" } else { "" };
            return Err(Error::format(
                self.path,
                format!("not a GGUF file: magic is {:?}, expected \"GGUF\"{hint}", String::from_utf8_lossy(magic)),
            ));
        }
        let version = self.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::unsupported(self.path, format!("GGUF version {version} (plinth reads versions 2 and 3)")));
        }
        // A tensor info is at least: name length (8) + n_dims (4) + type (4) + offset (8).
        let n_tensors = self.count("tensor count", 24)?;
        // A metadata pair is at least: key length (8) + value type (4) + 1 byte of value.
        let n_kv = self.count("metadata count", 13)?;

        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = self.string("metadata key")?;
            let ty = self.u32("metadata value type")?;
            let value = self.value(ty, &key, 0)?;
            metadata.insert(key, value);
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
                _ => return Err(self.err(format!("general.alignment must be a power of two, found {v}"))),
            },
        };

        let mut raw = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = self.string("tensor name")?;
            let n_dims = self.u32("tensor dimension count")?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(self.err(format!("tensor '{name}' has {n_dims} dimensions (ggml allows 1..={MAX_DIMS})")));
            }
            let mut shape = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                let d = self.u64("tensor dimension")?;
                // No real tensor dimension comes near 2^40; larger values are corruption and
                // would overflow the element count below.
                if d == 0 || d > 1 << 40 {
                    return Err(self.err(format!("tensor '{name}' has absurd dimension {d}")));
                }
                shape.push(d as usize);
            }
            shape.reverse();
            let type_id = self.u32("tensor type")?;
            let dtype = TensorType::from_id(type_id).map_err(|t| {
                Error::unsupported(self.path, format!("tensor type {t} in tensor '{name}'"))
            })?;
            let offset = self.u64("tensor offset")?;
            raw.push((name, shape, dtype, offset));
        }

        let data_start = (self.pos as u64).div_ceil(alignment) * alignment;
        let file_len = self.buf.len() as u64;
        let mut tensors = Vec::with_capacity(raw.len());
        for (name, shape, dtype, offset) in raw {
            let elems = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
            let elems = elems.filter(|&e| e <= 1 << 42).ok_or_else(|| {
                self.err(format!("tensor '{name}' has an absurd element count (shape {shape:?})"))
            })?;
            let block = dtype.block_size() as u64;
            let inner = *shape.last().expect("n_dims >= 1") as u64;
            if !inner.is_multiple_of(block) {
                return Err(self.err(format!(
                    "tensor '{name}' row length {inner} is not a multiple of the {} block size {block}",
                    dtype.name()
                )));
            }
            let size = elems / block * dtype.block_bytes() as u64;
            if offset % alignment != 0 {
                return Err(self.err(format!("tensor '{name}' offset {offset} is not aligned to {alignment}")));
            }
            let start = data_start.checked_add(offset);
            let end = start.and_then(|s| s.checked_add(size));
            match (start, end) {
                (Some(start), Some(end)) if end <= file_len => tensors.push(TensorInfo {
                    name,
                    shape,
                    dtype,
                    offset: start as usize,
                    size: size as usize,
                }),
                _ => {
                    return Err(Error::format(
                        self.path,
                        format!(
                            "truncated file: tensor '{name}' needs bytes {}..{} but the file has {file_len} bytes",
                            data_start.saturating_add(offset),
                            data_start.saturating_add(offset).saturating_add(size)
                        ),
                    ))
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for t in &tensors {
            if !seen.insert(t.name.as_str()) {
                return Err(Error::format(self.path, format!("duplicate tensor name '{}'", t.name)));
            }
        }
        Ok(Parsed { version, alignment, metadata, tensors })
    }

    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>(key)?[0]),
            1 => Value::I8(self.array::<1>(key)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(key)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(key)?)),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(i32::from_le_bytes(self.array(key)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.err(format!("metadata key '{key}': invalid bool byte {b}"))),
            },
            8 => Value::String(self.string(key)?),
            9 => {
                if depth >= MAX_NESTING {
                    return Err(self.err(format!("metadata key '{key}': arrays nested deeper than {MAX_NESTING}")));
                }
                let item_ty = self.u32(key)?;
                let min = match item_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    10..=12 => 8,
                    8 => 8,
                    9 => 12,
                    other => return Err(self.err(format!("metadata key '{key}': unknown array item type {other}"))),
                };
                let n = self.count(&format!("length of array '{key}'"), min)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(item_ty, key, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(i64::from_le_bytes(self.array(key)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(key)?)),
            other => return Err(self.err(format!("metadata key '{key}': unknown value type {other}"))),
        })
    }
}
