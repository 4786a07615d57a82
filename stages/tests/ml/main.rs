//! Integration tests of the ML core (`dagrun_stages::ml`), one test binary.
//!
//! Backend-sensitive tests loop over `common::cpu_devices()`: `cpu` always, and
//! `libtorch-cpu` too in a build with `--features tch`.

mod common;

mod cli;

mod decoders;
mod export_hf;
mod generate;
mod hf_parity;
mod reward;
mod train;
