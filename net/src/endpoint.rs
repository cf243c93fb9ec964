//! QUIC endpoints for cluster members.
//!
//! Every process binds one endpoint that both accepts connections (with client certificates
//! required) and opens them (presenting its own certificate). Keep-alives and an idle timeout
//! make a silent peer — killed, hung, or cut off — surface as a closed connection within
//! [`TransportSettings::idle_timeout`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

use crate::error::{NetError, Result};
use crate::tls::{self, ClusterCa, NodeIdentity, CLUSTER_SERVER_NAME};

/// The congestion window a new cluster connection starts with.
const INITIAL_WINDOW_BYTES: u64 = 512 * 1024;

/// Transport settings shared by all cluster connections.
#[derive(Debug, Clone)]
pub struct TransportSettings {
    /// How often an idle connection sends a keep-alive, so the peer does not time it out.
    pub keep_alive: Duration,
    /// How long a connection may be silent before it is declared lost.
    pub idle_timeout: Duration,
}

impl Default for TransportSettings {
    fn default() -> Self {
        Self {
            keep_alive: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(5),
        }
    }
}

impl TransportSettings {
    fn quinn_config(&self) -> Result<Arc<quinn::TransportConfig>> {
        let mut t = quinn::TransportConfig::default();
        t.keep_alive_interval(Some(self.keep_alive));
        t.max_idle_timeout(Some(
            self.idle_timeout
                .try_into()
                .map_err(|_| NetError::Tls("idle timeout out of range".into()))?,
        ));
        // Shuffle fetches are bulk transfers: larger windows keep a single stream busy.
        t.stream_receive_window(quinn::VarInt::from_u32(8 * 1024 * 1024));
        t.receive_window(quinn::VarInt::from_u32(32 * 1024 * 1024));
        t.send_window(32 * 1024 * 1024);
        t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(1024));
        // Cluster links are LAN or loopback: a shuffle output of a few hundred KB should not
        // spend its first round trips in slow start from QUIC's ~14 KB initial window.
        let mut cubic = quinn::congestion::CubicConfig::default();
        cubic.initial_window(INITIAL_WINDOW_BYTES);
        t.congestion_controller_factory(Arc::new(cubic));
        Ok(Arc::new(t))
    }
}

/// A bound QUIC endpoint that speaks only to members of its cluster.
#[derive(Debug, Clone)]
pub struct ClusterEndpoint {
    endpoint: quinn::Endpoint,
}

impl ClusterEndpoint {
    /// Binds `addr` (port 0 picks a free port). Must be called inside a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        ca: &ClusterCa,
        identity: &NodeIdentity,
        settings: &TransportSettings,
    ) -> Result<Self> {
        let transport = settings.quinn_config()?;
        let server_tls = tls::server_config(ca, identity)?;
        let quic_server = QuicServerConfig::try_from(server_tls)
            .map_err(|e| NetError::Tls(format!("QUIC server config: {e}")))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic_server));
        server.transport_config(transport.clone());

        let client_tls = tls::client_config(ca, identity)?;
        let quic_client = QuicClientConfig::try_from(client_tls)
            .map_err(|e| NetError::Tls(format!("QUIC client config: {e}")))?;
        let mut client = quinn::ClientConfig::new(Arc::new(quic_client));
        client.transport_config(transport);

        let mut endpoint = quinn::Endpoint::server(server, addr)
            .map_err(|source| NetError::Bind { addr, source })?;
        endpoint.set_default_client_config(client);
        Ok(Self { endpoint })
    }

    /// The address this endpoint is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.endpoint
            .local_addr()
            .map_err(|e| NetError::Stream(format!("local address: {e}")))
    }

    /// Opens a mutually authenticated connection to a cluster member.
    pub async fn connect(&self, addr: SocketAddr) -> Result<quinn::Connection> {
        let connecting = self
            .endpoint
            .connect(addr, CLUSTER_SERVER_NAME)
            .map_err(|e| NetError::Connect {
                addr,
                message: e.to_string(),
            })?;
        connecting.await.map_err(|e| NetError::Connect {
            addr,
            message: e.to_string(),
        })
    }

    /// The next incoming connection attempt; `None` once the endpoint is closed. The handshake
    /// (and with it the client-certificate check) completes when the returned value is awaited.
    pub async fn accept(&self) -> Option<quinn::Incoming> {
        self.endpoint.accept().await
    }

    /// Closes all connections immediately with an application reason.
    pub fn close(&self, reason: &str) {
        self.endpoint
            .close(quinn::VarInt::from_u32(0), reason.as_bytes());
    }

    /// Waits until all connections are closed and their close frames sent.
    pub async fn wait_idle(&self) {
        self.endpoint.wait_idle().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ca: &ClusterCa, name: &str) -> ClusterEndpoint {
        let id = ca.issue(name).unwrap();
        ClusterEndpoint::bind(
            "127.0.0.1:0".parse().unwrap(),
            ca,
            &id,
            &TransportSettings::default(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn members_of_one_cluster_connect() {
        let ca = ClusterCa::generate("a").unwrap();
        let server = node(&ca, "server");
        let client = node(&ca, "client");
        let addr = server.local_addr().unwrap();
        let accept = tokio::spawn(async move { server.accept().await.unwrap().await });
        client.connect(addr).await.unwrap();
        accept.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_peer_from_another_cluster_is_refused() {
        let ca = ClusterCa::generate("a").unwrap();
        let other = ClusterCa::generate("b").unwrap();
        let server = node(&ca, "server");
        let intruder = node(&other, "intruder");
        let addr = server.local_addr().unwrap();
        let accept = tokio::spawn(async move { server.accept().await.unwrap().await });
        assert!(intruder.connect(addr).await.is_err());
        assert!(accept.await.unwrap().is_err());
    }
}
