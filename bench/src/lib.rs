//! What the bench crate's binaries share: the light load generator and the readers of
//! /proc, used by `make bench` (src/main.rs) and `make reliability` (src/bin/reliability/).

pub mod loadgen;
pub mod procfs;
