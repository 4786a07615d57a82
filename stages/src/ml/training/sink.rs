//! How a training loop reports each step: one callback, the step and its measurements by
//! name. The kinds turn them into progress lines, log lines and metric series; anything else
//! that wants per-step curves (a TensorBoard writer) implements the same trait.

/// Receives what each training step measured.
pub trait StepSink {
    /// Step `step` (counted from 1) is done; `scalars` are its measurements by name.
    fn step(&mut self, step: usize, scalars: &[(&'static str, f64)]);
}

impl<F: FnMut(usize, &[(&'static str, f64)])> StepSink for F {
    fn step(&mut self, step: usize, scalars: &[(&'static str, f64)]) {
        self(step, scalars)
    }
}

/// A sink that drops everything.
pub struct Discard;

impl StepSink for Discard {
    fn step(&mut self, _step: usize, _scalars: &[(&'static str, f64)]) {}
}
