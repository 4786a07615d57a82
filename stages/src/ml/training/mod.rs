//! Training: [`optim`] (Adam/AdamW with checkpointable state; in place on libtorch),
//! [`schedule`] (learning-rate schedules), [`grads`] (gradients by parameter path, global-norm
//! clipping), [`checkpoint`] (resumable training state), [`guard`] (a non-finite loss or
//! parameter fails the training at its step), [`sink`] (how a loop reports each step) and
//! [`train_lm`] (the causal-LM trainer).

pub mod checkpoint;
pub mod grads;
pub mod guard;
pub mod optim;
pub mod schedule;
pub mod sink;
pub mod train_lm;
