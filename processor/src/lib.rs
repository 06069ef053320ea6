//! placeholder

pub mod classify;
