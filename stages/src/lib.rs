
pub mod ml;
