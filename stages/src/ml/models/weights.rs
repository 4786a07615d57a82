//! Named float32 tensors on the host, read from and written to safetensors files.
//!
//! The GPT-2 loader and exporter, the reward-head files and the training checkpoints all go
//! through [`HostTensors`]: a name → (shape, f32 values) map. F16 and BF16 files are widened to
//! f32 on load; files are always written as F32 with `{"format": "pt"}` metadata, the layout
//! Hugging Face transformers expects.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use crate::ml::error::{MlError, Result};

/// One tensor on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

impl HostTensor {
    /// Copy a device tensor to the host.
    pub fn from_tensor<const D: usize>(t: &Tensor<D>) -> Self {
        let shape = t.dims().to_vec();
        let values = to_f32_vec(t.clone());
        HostTensor { shape, values }
    }

    /// Build a device tensor of rank `D` (the shape must have `D` dimensions).
    pub fn to_tensor<const D: usize>(&self, device: &Device) -> Tensor<D> {
        assert_eq!(self.shape.len(), D, "rank mismatch");
        Tensor::from_data(
            TensorData::new(self.values.clone(), self.shape.clone()),
            device,
        )
    }
}

/// The values of a float tensor as f32, row-major (reads the device).
pub fn to_f32_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("a float tensor converts to f32")
}

/// A safetensors file's tensors (or tensors about to become one), by name.
#[derive(Debug, Clone, Default)]
pub struct HostTensors {
    /// Where they were read from (for error messages); empty for in-memory sets.
    pub path: PathBuf,
    /// The tensors, sorted by name.
    pub tensors: BTreeMap<String, HostTensor>,
}

impl HostTensors {
    /// An empty set that reports errors against `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        HostTensors {
            path: path.into(),
            tensors: BTreeMap::new(),
        }
    }

    /// Read every tensor of a safetensors file, widening F16/BF16 to f32. Integer tensors
    /// (such as GPT-2's old `attn.bias` buffers stored as bool/u8) are skipped.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| MlError::io(path, e))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| MlError::Safetensors {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut out = HostTensors::new(path);
        for (name, view) in st.tensors() {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                Dtype::F16 => data
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => data
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::BOOL | Dtype::U8 | Dtype::I8 | Dtype::I64 | Dtype::I32 => continue,
                other => {
                    return Err(MlError::UnsupportedDtype {
                        path: path.to_path_buf(),
                        name,
                        dtype: format!("{other:?}"),
                    })
                }
            };
            out.tensors.insert(
                name,
                HostTensor {
                    shape: view.shape().to_vec(),
                    values,
                },
            );
        }
        Ok(out)
    }

    /// Write all tensors as F32 to `path` (through a temporary file renamed into place).
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, t) in &self.tensors {
            let mut bytes = Vec::with_capacity(t.values.len() * 4);
            for v in &t.values {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            buffers.push((name.clone(), t.shape.clone(), bytes));
        }
        let views = buffers
            .iter()
            .map(|(name, shape, bytes)| {
                safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| MlError::Safetensors {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
        let bytes =
            safetensors::serialize(views, Some(metadata)).map_err(|e| MlError::Safetensors {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        crate::files::write_atomic(path, &bytes).map_err(|e| MlError::io(path, e))
    }

    /// Insert a device tensor under `name`.
    pub fn insert<const D: usize>(&mut self, name: impl Into<String>, t: &Tensor<D>) {
        self.tensors.insert(name.into(), HostTensor::from_tensor(t));
    }

    /// Remove and return the tensor `name`, checking its shape.
    pub fn take(&mut self, name: &str, expected: &[usize]) -> Result<HostTensor> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| MlError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })?;
        if t.shape != expected {
            return Err(MlError::ShapeMismatch {
                path: self.path.clone(),
                name: name.to_string(),
                expected: expected.to_vec(),
                actual: t.shape,
            });
        }
        Ok(t)
    }

    /// Remove `name` and build a device tensor of rank `D` with shape `expected`.
    pub fn take_tensor<const D: usize>(
        &mut self,
        name: &str,
        expected: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D>> {
        Ok(self.take(name, &expected)?.to_tensor(device))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let mut set = HostTensors::new(&path);
        set.tensors.insert(
            "a.weight".into(),
            HostTensor {
                shape: vec![2, 3],
                values: vec![1.0, -2.5, f32::MIN_POSITIVE, 3.25e-8, 0.1, -0.0],
            },
        );
        set.write(&path).unwrap();
        let mut back = HostTensors::read(&path).unwrap();
        let t = back.take("a.weight", &[2, 3]).unwrap();
        assert_eq!(t.values, set.tensors["a.weight"].values);
        let err = back.take("a.weight", &[2, 3]).unwrap_err().to_string();
        assert!(err.contains("missing tensor `a.weight`"), "{err}");
    }

    #[test]
    fn wrong_shape_is_reported_with_both_shapes() {
        let mut set = HostTensors::new("x.safetensors");
        set.tensors.insert(
            "w".into(),
            HostTensor {
                shape: vec![4],
                values: vec![0.0; 4],
            },
        );
        let err = set.take("w", &[2, 2]).unwrap_err().to_string();
        assert!(err.contains("[4]") && err.contains("[2, 2]"), "{err}");
    }
}
