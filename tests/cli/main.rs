//! End-to-end tests: the real `dagrun` binary on temporary workspaces.

mod support;

mod bad_input;
mod cache_ops;
mod caching;
mod command_line;
mod crash;
mod damage;
mod edge_params;
mod experiments;
mod faults;
#[cfg(feature = "tch")]
mod fused_ops;
mod model_hf;
mod noop_stamp;
mod paper;
mod paper_models;
mod policy_models;
mod quickstart;
mod readme;
mod remote;
mod report_key;
mod slurm;
mod sweeps;
mod tensorboard;
mod theory;
mod workspace_safety;
