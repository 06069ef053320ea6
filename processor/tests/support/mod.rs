//! Helpers shared by the integration tests.

pub mod ground_truth;
