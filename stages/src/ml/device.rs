//! Where tensors live: the `--device` strings dagrun accepts and the burn `Device` each means.
//!
//! | spec           | burn device                 | needs                          |
//! |----------------|-----------------------------|--------------------------------|
//! | `cpu`          | `Device::flex()` (pure Rust)| always built                   |
//! | `libtorch-cpu` | `Device::libtorch()`        | cargo feature `tch`            |
//! | `cuda`, `cuda:N` | `Device::libtorch_cuda(N)` | feature `tch` and a CUDA GPU   |
//! | `auto`         | `cuda:0` when built with `tch` and a GPU is visible, else `cpu` | |
//!
//! [`DeviceSpec::resolve`] checks availability before any work starts, so a run that cannot get
//! its device fails at once with a clear [`MlError`].

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

use super::error::{MlError, Result};

/// A device as named on the command line or in a stage's params.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    /// CUDA when built with `tch` and a GPU is present, else `cpu`.
    #[default]
    Auto,
    /// burn-flex: pure-Rust CPU, always available.
    Cpu,
    /// libtorch on the CPU (feature `tch`).
    LibtorchCpu,
    /// libtorch on CUDA device N (feature `tch`).
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = MlError;

    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" | "flex" => Ok(DeviceSpec::Cpu),
            "libtorch-cpu" | "libtorch" | "tch-cpu" => Ok(DeviceSpec::LibtorchCpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => match t.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(DeviceSpec::Cuda(n)),
                _ => Err(MlError::UnknownDevice(s.to_string())),
            },
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = MlError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.to_string()
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::LibtorchCpu => f.write_str("libtorch-cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Whether this binary was built with the libtorch backends (cargo feature `tch`).
pub const TCH_BUILT: bool = cfg!(feature = "tch");

/// How many CUDA devices libtorch sees (0 in a build without `tch`).
pub fn cuda_device_count() -> usize {
    #[cfg(feature = "tch")]
    {
        usize::try_from(tch::Cuda::device_count()).unwrap_or(0)
    }
    #[cfg(not(feature = "tch"))]
    {
        0
    }
}

impl DeviceSpec {
    /// The concrete spec `auto` stands for on this machine; other specs are returned unchanged.
    pub fn concrete(self) -> DeviceSpec {
        match self {
            DeviceSpec::Auto if TCH_BUILT && cuda_device_count() > 0 => DeviceSpec::Cuda(0),
            DeviceSpec::Auto => DeviceSpec::Cpu,
            other => other,
        }
    }

    /// The burn device (without autodiff), after checking that it exists in this build and on
    /// this machine.
    pub fn resolve(self) -> Result<Device> {
        match self.concrete() {
            DeviceSpec::Auto => unreachable!("concrete() never returns Auto"),
            DeviceSpec::Cpu => Ok(Device::flex()),
            spec @ (DeviceSpec::LibtorchCpu | DeviceSpec::Cuda(_)) => libtorch_device(spec),
        }
    }
}

/// burn-tch is `#[deprecated]` in burn 0.22 but works; this is the one place that builds its
/// devices.
#[cfg(feature = "tch")]
#[allow(deprecated)]
fn libtorch_device(spec: DeviceSpec) -> Result<Device> {
    // A bad DAGRUN_FUSED_OPS fails here, before any work, for every user of the device.
    super::ops::FusedSet::from_env().map_err(MlError::Invalid)?;
    match spec {
        DeviceSpec::LibtorchCpu => Ok(Device::libtorch()),
        DeviceSpec::Cuda(n) => {
            let available = cuda_device_count();
            if n >= available {
                return Err(MlError::CudaUnavailable {
                    requested: spec.to_string(),
                    available,
                });
            }
            Ok(Device::libtorch_cuda(n))
        }
        _ => unreachable!("only libtorch specs reach libtorch_device"),
    }
}

#[cfg(not(feature = "tch"))]
fn libtorch_device(spec: DeviceSpec) -> Result<Device> {
    Err(MlError::TchNotBuilt(spec.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_spelling() {
        assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!(
            "libtorch-cpu".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::LibtorchCpu
        );
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("CUDA:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        for bad in ["", "cuda:", "cuda:x", "tpu", "cpu:1"] {
            let err = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(err.to_string().contains("unknown device"), "{bad}: {err}");
        }
    }

    #[test]
    fn display_round_trips() {
        for spec in [
            DeviceSpec::Auto,
            DeviceSpec::Cpu,
            DeviceSpec::LibtorchCpu,
            DeviceSpec::Cuda(2),
        ] {
            assert_eq!(spec.to_string().parse::<DeviceSpec>().unwrap(), spec);
        }
    }

    #[test]
    fn cpu_always_resolves_and_auto_falls_back_without_gpu() {
        assert!(DeviceSpec::Cpu.resolve().is_ok());
        if cuda_device_count() == 0 {
            assert_eq!(DeviceSpec::Auto.concrete(), DeviceSpec::Cpu);
        }
    }

    #[cfg(not(feature = "tch"))]
    #[test]
    fn libtorch_without_tch_is_a_clear_error() {
        for spec in [DeviceSpec::LibtorchCpu, DeviceSpec::Cuda(0)] {
            let err = spec.resolve().unwrap_err().to_string();
            assert!(err.contains("without the `tch` feature"), "{err}");
        }
    }

    #[cfg(feature = "tch")]
    #[test]
    fn cuda_beyond_the_visible_gpus_is_a_clear_error() {
        let n = cuda_device_count();
        let err = DeviceSpec::Cuda(n).resolve().unwrap_err().to_string();
        assert!(err.contains("CUDA device"), "{err}");
        assert!(DeviceSpec::LibtorchCpu.resolve().is_ok());
    }
}
