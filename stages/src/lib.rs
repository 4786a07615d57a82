//! Stage kinds of dagrun.

pub mod theory;
