//! `sluice-net`: everything that crosses a process boundary in a Sluice cluster.
//!
//! What this crate owns:
//! - [`tls`]: the per-cluster certificate authority, per-process identities issued by it, and
//!   the rustls configurations that make every QUIC connection *mutually* authenticated
//!   (TLS 1.3 only, no plaintext mode, no anonymous peer).
//! - [`endpoint`]: quinn endpoints built from those identities, with the transport settings
//!   (keep-alive, idle timeout) that let a process notice a dead peer.
//! - [`frame`]: length-prefixed frames with a maximum size carrying postcard-encoded serde
//!   messages — the typed RPC layer for control messages.
//! - [`ipc`]: Arrow IPC record-batch streams on QUIC streams — the data plane.
//!
//! What it does not own: what the messages mean. Message types and the protocol state machines
//! live in the engine; this crate depends on no other workspace crate.

pub mod endpoint;
pub mod error;
pub mod frame;
pub mod ipc;
pub mod tls;

pub use endpoint::{ClusterEndpoint, TransportSettings};
pub use error::{NetError, Result};
pub use frame::{FrameReader, FrameWriter, MessageCodec, DEFAULT_MAX_FRAME_BYTES};
pub use tls::{ClusterCa, NodeIdentity};
