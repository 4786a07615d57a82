//! Stage kinds: the `command` kind, and the native kinds of the paper pipeline.
//!
//! [`registry`] returns every kind this build provides; the binary hands it to the engine.

use std::sync::Arc;

use dagrun_engine::stage::Registry;

pub mod bench;
pub mod command;
pub mod data;
pub mod files;
pub mod findings;
pub mod kinds;
pub mod memory;
pub mod ml;
pub mod rl;
pub mod rm;
pub mod stats;
pub mod tensorboard;
pub mod theory;

/// Every stage kind of this build.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(Arc::new(command::CommandKind));
    r.register(Arc::new(kinds::bandit::BanditKind));
    r.register(Arc::new(kinds::simulate::SimulateKind));
    r.register(Arc::new(kinds::report::ReportKind));
    r.register(Arc::new(kinds::toy_task::ToyTaskKind));
    r.register(Arc::new(kinds::dataset_mix::DatasetMixKind));
    r.register(Arc::new(kinds::prompts::PromptsKind));
    r.register(Arc::new(kinds::lm_pretrain::LmPretrainKind));
    r.register(Arc::new(kinds::backbone_pretrain::BackbonePretrainKind));
    r.register(Arc::new(kinds::head_ensemble::HeadEnsembleKind));
    r.register(Arc::new(kinds::ppo::PpoKind));
    r.register(Arc::new(kinds::kl_calibrate::KlCalibrateKind));
    r.register(Arc::new(kinds::judge_eval::JudgeEvalKind));
    r.register(Arc::new(kinds::reward_bench::RewardBenchKind));
    r
}
