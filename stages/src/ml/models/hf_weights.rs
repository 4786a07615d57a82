//! A Hugging Face folder's safetensors weights, single-file or sharded, read one tensor at a
//! time straight onto a device.
//!
//! Layouts: `model.safetensors`, or `model.safetensors.index.json` whose `weight_map` names the
//! shard (`model-0000X-of-0000N.safetensors`) of every tensor. [`SafetensorsDir::open`] reads
//! only the headers (names, dtypes, shapes, byte ranges). [`SafetensorsDir::take`] then reads
//! one tensor's bytes with a positioned read, converts them to the requested [`WeightDtype`],
//! builds the device tensor and drops the host bytes before the next tensor is read.
//!
//! Memory: the host never holds more than one tensor of the checkpoint at a time (its bytes,
//! its typed values, and a converted copy when the dtype changes: at most about 4× the largest
//! tensor's size in the file — for Llama-3-8B the 128256 × 4096 embedding, 1 GiB in bf16). So
//! an 8B judge in bf16 loads onto one 80 GB GPU with about 16 GB of GPU memory for the weights
//! (15 GB without an LM head) and about 2–4 GB of host memory beyond the page cache; no second
//! copy of the weights is ever built on the host. On a CPU device the weights themselves live
//! in host memory (once). [`write_streaming`] is the same bound for writing.
//!
//! Backends and bf16 (burn 0.22.1): burn-flex (`cpu`) stores bf16 and computes a bf16 matmul by
//! widening both operands to f32, multiplying in f32 and rounding the result (correct, not
//! faster than f32); burn-tch (`libtorch-cpu`, `cuda`) hands bf16 tensors to libtorch's native
//! kernels (cuBLAS on CUDA; not exercised on a GPU by the tests). Both pass the bf16 parity
//! tests on CPU.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::tensor::{bf16, f16, DType, Device, Tensor, TensorData};

use crate::ml::error::{MlError, Result};

/// Single-file weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Index of sharded weights.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The dtype weights are loaded in.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum WeightDtype {
    /// float32 (F16/BF16 checkpoints are widened exactly).
    #[default]
    F32,
    /// bfloat16 (F32/F16 checkpoints are rounded); the decoder then computes in bfloat16 with
    /// norms, softmax and activations in float32, as transformers does.
    Bf16,
}

impl WeightDtype {
    /// The burn dtype.
    pub fn dtype(self) -> DType {
        match self {
            WeightDtype::F32 => DType::F32,
            WeightDtype::Bf16 => DType::BF16,
        }
    }

    /// Round a float32 value to this dtype (what casting a scalar to it gives).
    pub fn round(self, x: f32) -> f32 {
        match self {
            WeightDtype::F32 => x,
            WeightDtype::Bf16 => half::bf16::from_f32(x).to_f32(),
        }
    }
}

impl std::str::FromStr for WeightDtype {
    type Err = MlError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" | "fp32" => Ok(WeightDtype::F32),
            "bf16" | "bfloat16" => Ok(WeightDtype::Bf16),
            _ => Err(MlError::Invalid(format!(
                "unknown dtype `{s}` (expected `f32` or `bf16`)"
            ))),
        }
    }
}

impl std::fmt::Display for WeightDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WeightDtype::F32 => "f32",
            WeightDtype::Bf16 => "bf16",
        })
    }
}

/// Where one tensor lives.
#[derive(Debug, Clone)]
struct Entry {
    /// Index into [`SafetensorsDir::files`].
    file: usize,
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    start: u64,
    end: u64,
}

/// The tensors of a model folder, not yet read.
#[derive(Debug)]
pub struct SafetensorsDir {
    files: Vec<PathBuf>,
    entries: BTreeMap<String, Entry>,
}

/// One header entry as safetensors writes it.
#[derive(serde::Deserialize)]
struct HeaderEntry {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

fn st_err(path: &Path, message: impl Into<String>) -> MlError {
    MlError::Safetensors {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Read the header of a safetensors file: every tensor's entry (absolute offsets).
fn read_header(path: &Path, file: usize) -> Result<Vec<(String, Entry)>> {
    use std::io::Read;
    let mut f = File::open(path).map_err(|e| MlError::io(path, e))?;
    let len = f.metadata().map_err(|e| MlError::io(path, e))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|e| MlError::io(path, e))?;
    let n = u64::from_le_bytes(n);
    if n > 100 << 20 || 8 + n > len {
        return Err(st_err(path, format!("header length {n} is invalid")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| MlError::io(path, e))?;
    let map: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| MlError::json(path, e))?;
    let base = 8 + n;
    let mut out = Vec::with_capacity(map.len());
    for (name, value) in map {
        if name == "__metadata__" {
            continue;
        }
        let h: HeaderEntry = serde_json::from_value(value)
            .map_err(|e| st_err(path, format!("tensor `{name}`: {e}")))?;
        let (start, end) = (base + h.data_offsets.0, base + h.data_offsets.1);
        let numel: usize = h.shape.iter().product();
        let expected = (numel * h.dtype.bitsize() / 8) as u64;
        if end < start || end > len || end - start != expected {
            return Err(st_err(
                path,
                format!("tensor `{name}`: byte range does not match its shape and dtype"),
            ));
        }
        out.push((
            name,
            Entry {
                file,
                dtype: h.dtype,
                shape: h.shape,
                start,
                end,
            },
        ));
    }
    Ok(out)
}

impl SafetensorsDir {
    /// Index the weights of `dir` (sharded when `model.safetensors.index.json` exists).
    pub fn open(dir: &Path) -> Result<Self> {
        let index = dir.join(INDEX_FILE);
        let single = dir.join(WEIGHTS_FILE);
        let mut files = Vec::new();
        let mut entries = BTreeMap::new();
        if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| MlError::io(&index, e))?;
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| MlError::json(&index, e))?;
            let map = value
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| st_err(&index, "no `weight_map` object"))?;
            let mut shards: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (name, shard) in map {
                let shard = shard
                    .as_str()
                    .ok_or_else(|| st_err(&index, format!("`{name}`: shard is not a string")))?;
                shards
                    .entry(shard.to_string())
                    .or_default()
                    .push(name.clone());
            }
            for (shard, names) in shards {
                let path = dir.join(&shard);
                let found: BTreeMap<String, Entry> =
                    read_header(&path, files.len())?.into_iter().collect();
                for name in names {
                    let entry = found.get(&name).ok_or_else(|| MlError::MissingTensor {
                        path: path.clone(),
                        name: name.clone(),
                    })?;
                    entries.insert(name, entry.clone());
                }
                files.push(path);
            }
        } else if single.exists() {
            entries.extend(read_header(&single, 0)?);
            files.push(single);
        } else {
            return Err(MlError::Invalid(format!(
                "{}: no {WEIGHTS_FILE} or {INDEX_FILE} (dagrun reads safetensors weights only; \
                 convert pytorch_model.bin with transformers' \
                 save_pretrained(safe_serialization=True))",
                dir.display()
            )));
        }
        Ok(SafetensorsDir { files, entries })
    }

    /// The names not taken yet.
    pub fn remaining(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// Whether `name` is present (and not taken yet).
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Forget `name` (a tensor the model does not use, such as a tied `lm_head.weight`).
    pub fn skip(&mut self, name: &str) {
        self.entries.remove(name);
    }

    /// The file holding `name`, for error messages (the index when it is unknown).
    pub fn file_of(&self, name: &str) -> PathBuf {
        self.entries
            .get(name)
            .map(|e| self.files[e.file].clone())
            .or_else(|| self.files.first().cloned())
            .unwrap_or_default()
    }

    /// Read tensor `name`, check it has shape `expected`, and build it on `device` in `dtype`.
    pub fn take<const D: usize>(
        &mut self,
        name: &str,
        expected: [usize; D],
        dtype: WeightDtype,
        device: &Device,
    ) -> Result<Tensor<D>> {
        let path = self.file_of(name);
        let entry = self
            .entries
            .remove(name)
            .ok_or_else(|| MlError::MissingTensor {
                path: path.clone(),
                name: name.to_string(),
            })?;
        if entry.shape != expected {
            return Err(MlError::ShapeMismatch {
                path,
                name: name.to_string(),
                expected: expected.to_vec(),
                actual: entry.shape,
            });
        }
        let bytes = read_range(&path, entry.start, entry.end)?;
        let shape = expected.to_vec();
        // Typed (hence aligned) host values in the file's dtype; burn converts them to `dtype`.
        let data = match entry.dtype {
            safetensors::Dtype::F32 => TensorData::new(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect::<Vec<f32>>(),
                shape,
            ),
            safetensors::Dtype::BF16 => TensorData::new(
                bytes
                    .chunks_exact(2)
                    .map(|b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]])))
                    .collect::<Vec<bf16>>(),
                shape,
            ),
            safetensors::Dtype::F16 => TensorData::new(
                bytes
                    .chunks_exact(2)
                    .map(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]])))
                    .collect::<Vec<f16>>(),
                shape,
            ),
            other => {
                return Err(MlError::UnsupportedDtype {
                    path,
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        drop(bytes);
        Ok(Tensor::from_data(data, (device, dtype.dtype())))
    }
}

/// The bytes `start..end` of `path`.
fn read_range(path: &Path, start: u64, end: u64) -> Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path).map_err(|e| MlError::io(path, e))?;
    f.seek(SeekFrom::Start(start))
        .map_err(|e| MlError::io(path, e))?;
    let mut bytes = vec![0u8; (end - start) as usize];
    f.read_exact(&mut bytes).map_err(|e| MlError::io(path, e))?;
    Ok(bytes)
}

/// A parameter of rank 1 or 2 (all a decoder has), for [`write_streaming`].
pub enum NamedTensor {
    /// A vector (norm gains, biases).
    Rank1(String, Tensor<1>),
    /// A matrix (embeddings, projections).
    Rank2(String, Tensor<2>),
}

impl NamedTensor {
    fn name(&self) -> &str {
        match self {
            NamedTensor::Rank1(n, _) | NamedTensor::Rank2(n, _) => n,
        }
    }
    fn shape(&self) -> Vec<usize> {
        match self {
            NamedTensor::Rank1(_, t) => t.dims().to_vec(),
            NamedTensor::Rank2(_, t) => t.dims().to_vec(),
        }
    }
    fn data(&self) -> TensorData {
        match self {
            NamedTensor::Rank1(_, t) => t.to_data(),
            NamedTensor::Rank2(_, t) => t.to_data(),
        }
    }
}

/// Write `tensors` as one safetensors file in `dtype`, streaming: the header first, then each
/// tensor read from its device, converted and written before the next is read (the host holds
/// one tensor at a time). Written to a temporary name and renamed into place.
pub fn write_streaming(path: &Path, tensors: &[NamedTensor], dtype: WeightDtype) -> Result<()> {
    use std::io::Write;
    let (tag, width) = match dtype {
        WeightDtype::F32 => ("F32", 4),
        WeightDtype::Bf16 => ("BF16", 2),
    };
    let mut order: Vec<&NamedTensor> = tensors.iter().collect();
    order.sort_by(|a, b| a.name().cmp(b.name()));
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut offset = 0usize;
    for t in &order {
        let shape = t.shape();
        let len = shape.iter().product::<usize>() * width;
        header.insert(
            t.name().to_string(),
            serde_json::json!({"dtype": tag, "shape": shape, "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    let mut header = serde_json::to_vec(&header).expect("json");
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    crate::files::write_atomic_with(path, |f| {
        f.write_all(&(header.len() as u64).to_le_bytes())?;
        f.write_all(&header)?;
        for t in order {
            let data = t.data();
            let bytes: Vec<u8> = match dtype {
                WeightDtype::F32 => data
                    .convert::<f32>()
                    .iter::<f32>()
                    .flat_map(f32::to_le_bytes)
                    .collect(),
                WeightDtype::Bf16 => data
                    .convert::<bf16>()
                    .iter::<bf16>()
                    .flat_map(|x| x.to_bits().to_le_bytes())
                    .collect(),
            };
            f.write_all(&bytes)?;
        }
        Ok(())
    })
    .map_err(|e| MlError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::models::weights::{to_f32_vec, HostTensor, HostTensors};

    #[test]
    fn single_file_tensors_read_back_in_both_dtypes() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = HostTensors::new(dir.path().join(WEIGHTS_FILE));
        let values = vec![1.0, -2.5, 0.1, 3.0e-3, 7.0, -0.0];
        set.tensors.insert(
            "a.weight".into(),
            HostTensor {
                shape: vec![2, 3],
                values: values.clone(),
            },
        );
        set.write(&dir.path().join(WEIGHTS_FILE)).unwrap();
        let device = Device::flex();
        let mut st = SafetensorsDir::open(dir.path()).unwrap();
        let err = st
            .take::<2>("a.weight", [3, 2], WeightDtype::F32, &device)
            .unwrap_err()
            .to_string();
        assert!(err.contains("a.weight") && err.contains("[3, 2]"), "{err}");
        let mut st = SafetensorsDir::open(dir.path()).unwrap();
        let t = st
            .take::<2>("a.weight", [2, 3], WeightDtype::F32, &device)
            .unwrap();
        assert_eq!(to_f32_vec(t), values);
        assert!(st.remaining().is_empty());
        let err = st
            .take::<2>("a.weight", [2, 3], WeightDtype::F32, &device)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing tensor `a.weight`"), "{err}");
        let mut st = SafetensorsDir::open(dir.path()).unwrap();
        let t = st
            .take::<2>("a.weight", [2, 3], WeightDtype::Bf16, &device)
            .unwrap();
        assert_eq!(t.dtype(), DType::BF16);
        let rounded: Vec<f32> = values.iter().map(|&x| WeightDtype::Bf16.round(x)).collect();
        assert_eq!(to_f32_vec(t), rounded);
    }

    #[test]
    fn a_folder_without_safetensors_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = SafetensorsDir::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("safe_serialization=True"), "{err}");
        assert_eq!("bf16".parse::<WeightDtype>().unwrap(), WeightDtype::Bf16);
        assert!("f8".parse::<WeightDtype>().is_err());
    }
}
