//! `sluice-engine`: the planner, driver, executor and cluster managers of Sluice, and the
//! `sluice` binary.
//!
//! Map of the modules:
//! - [`job`]: a job's SQL text → table definitions and its queries.
//! - [`plan`]: SQL → DataFusion logical and physical plans → a stage DAG cut at shuffle
//!   boundaries.
//! - [`operator`]: every physical operator Sluice adds to DataFusion (scan, shuffle read,
//!   stateful aggregation, session windows, window joins) and their plan codec.
//! - [`protocol`]: the messages between driver and executors.
//! - [`driver`]: epochs (offsets → tasks → commit), the scheduler state machine, the listener
//!   for executors and the `local` process manager.
//! - [`executor`]: the executor process and task execution.
//! - [`shuffle`]: shuffle outputs on executor disks, served and fetched over QUIC.
//! - [`ui`]: the driver's web UI, JSON API and Prometheus metrics, fed by its events (live) or
//!   a checkpoint's progress records (history).
//! - [`error`]: the engine's error type.
//!
//! What this crate does not own: transport security and framing (`sluice-net`), the checkpoint
//! layout (`sluice-checkpoint`), reading and writing data formats (`sluice-connectors`).

pub mod config;
pub mod driver;
pub mod error;
pub mod executor;
pub mod job;
pub mod operator;
pub mod plan;
pub mod protocol;
pub mod shuffle;
pub mod ui;

pub use error::{EngineError, Result};
