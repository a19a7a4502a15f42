//! `absurd-host bench`: the benchmark suite. It prints figures; it asserts nothing.
//!
//! Each scenario module measures one thing against a real PostgreSQL (and real worker
//! processes, real components) and returns [`report::Figure`]s; [`report`] prints them.

pub mod report;
pub mod sandbox;
