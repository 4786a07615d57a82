//! A training whose numbers stop being finite must fail, not end as a result: a NaN or
//! infinite loss, or a parameter that became one (a non-finite gradient makes Adam's update
//! non-finite, so the parameters carry it to the next step's loss, and to the end). Every
//! training loop checks its loss at every step (it reads it back anyway) and its parameters
//! when it checkpoints and when it ends, and fails naming the step.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Int, Tensor};

use crate::ml::error::{MlError, Result};

/// Fails at `step` when `value` (what `what` names, e.g. "loss") is NaN or infinite.
pub fn check_loss(step: usize, what: &str, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(MlError::NonFinite {
            step,
            what: format!("the {what} is {value}"),
        })
    }
}

/// Counts the non-finite entries of every float parameter (one read back for all of them).
struct NonFiniteCounter {
    counts: Vec<Tensor<1, Int>>,
}

impl ModuleVisitor for NonFiniteCounter {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let n = t.shape().num_elements();
        self.counts
            .push(t.is_finite().bool_not().int().reshape([n]).sum());
    }
}

/// Fails at `step` when any parameter of `module` is NaN or infinite.
pub fn check_params<M: Module>(step: usize, module: &M) -> Result<()> {
    let mut c = NonFiniteCounter { counts: Vec::new() };
    module.visit(&mut c);
    if c.counts.is_empty() {
        return Ok(());
    }
    let bad = Tensor::cat(c.counts, 0).sum().into_scalar::<i64>();
    if bad == 0 {
        Ok(())
    } else {
        Err(MlError::NonFinite {
            step,
            what: format!("{bad} parameter value(s) are NaN or infinite"),
        })
    }
}

/// Fails at `step` when any of `values` (host-side parameters: `head_ensemble`'s heads) is
/// NaN or infinite.
pub fn check_values(step: usize, what: &str, values: &[f64]) -> Result<()> {
    match values.iter().filter(|v| !v.is_finite()).count() {
        0 => Ok(()),
        bad => Err(MlError::NonFinite {
            step,
            what: format!("{bad} value(s) of the {what} are NaN or infinite"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::models::heads::LinearHeads;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn non_finite_losses_and_parameters_fail_at_their_step() {
        assert!(check_loss(3, "loss", 0.5).is_ok());
        let e = check_loss(7, "loss", f64::NAN).unwrap_err().to_string();
        assert!(e.contains("step 7") && e.contains("NaN"), "{e}");
        assert!(check_loss(1, "loss", f64::INFINITY).is_err());
        let device = Device::flex();
        let ok = LinearHeads::init(4, &[1, 2], &device).unwrap();
        assert!(check_params(5, &ok).is_ok());
        let w = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, f32::NAN, 0.0, f32::INFINITY], [2, 2]),
            &device,
        );
        let bad = LinearHeads::from_tensors(w, Tensor::zeros([2], &device));
        let e = check_params(9, &bad).unwrap_err().to_string();
        assert!(
            e.contains("step 9") && e.contains("2 parameter value(s)"),
            "{e}"
        );
        assert!(check_values(2, "heads", &[1.0, f64::NAN]).is_err());
    }
}
