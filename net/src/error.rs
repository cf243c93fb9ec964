//! Errors of the network layer.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = NetError> = std::result::Result<T, E>;

/// Everything that can go wrong while setting up or using a cluster connection.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Reading or writing certificate material failed.
    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Generating or parsing certificates failed.
    #[error("certificate error while {context}: {message}")]
    Certificate { context: String, message: String },
    /// Building the TLS configuration failed.
    #[error("TLS configuration error: {0}")]
    Tls(String),
    /// Binding a UDP socket for QUIC failed.
    #[error("failed to bind QUIC endpoint on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Connecting to a peer failed (including a refused TLS handshake).
    #[error("failed to connect to {addr}: {message}")]
    Connect {
        addr: std::net::SocketAddr,
        message: String,
    },
    /// The QUIC connection was lost.
    #[error("connection lost: {0}")]
    ConnectionLost(#[from] quinn::ConnectionError),
    /// A frame was larger than the negotiated maximum, or could not be decoded.
    #[error("malformed frame: {0}")]
    MalformedFrame(String),
    /// A stream ended while a frame was expected.
    #[error("stream closed by peer")]
    StreamClosed,
    /// A QUIC stream failed.
    #[error("stream error: {0}")]
    Stream(String),
    /// Reading or writing a stream failed at the I/O level.
    #[error("stream I/O error: {0}")]
    StreamIo(#[from] std::io::Error),
    /// An Arrow IPC stream could not be encoded or decoded.
    #[error("Arrow IPC error: {0}")]
    Ipc(#[from] arrow::error::ArrowError),
}

impl NetError {
    /// Whether retrying the operation (possibly against another peer) may succeed. Lost
    /// connections and stream failures are transient; bad certificates and malformed frames are
    /// not.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            NetError::ConnectionLost(_)
                | NetError::StreamClosed
                | NetError::Stream(_)
                | NetError::StreamIo(_)
                | NetError::Connect { .. }
        )
    }
}
