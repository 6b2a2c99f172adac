//! CoAP over DTLS 1.2 with pre-shared keys (RFC 7925's profile: `TLS_PSK_WITH_AES_128_CCM_8`,
//! also `…_CCM` and `…_GCM_SHA256`): the PSK identity is the device id, the key its secret, so
//! a device's secret never travels in a `?k=` query. Decrypted datagrams go through the same
//! CoAP handling as plain ones ([`Listener::datagram_in_session`]), so admission, duplicate
//! detection and answers are the same.
//!
//! webrtc-dtls does the handshake and the records; the UDP side is ours: one socket, and a
//! dispatcher that gives each client address a channel of its own, made at its first datagram
//! and dropped when its session ends (webrtc-util's own UDP listener never forgets an address,
//! so a client reconnecting from the same port was silently dead, and its table only grew).
//! Each handshake runs in its own task under a timeout: a client that stops after its
//! ClientHello holds up nobody.

use super::coap::{Action, Listener};
use super::{Hub, now_s};
use async_trait::async_trait;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use webrtc_dtls::cipher_suite::CipherSuiteId;
use webrtc_dtls::config::Config;
use webrtc_dtls::conn::DTLSConn;
use webrtc_util::conn::Conn;

/// How long a handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// A session with nothing to read this long is closed.
const IDLE: Duration = Duration::from_secs(300);
/// Datagrams waiting for one client, at most (more are dropped: it retransmits).
const QUEUE: usize = 64;
/// Open sessions, at most.
const MAX_SESSIONS: usize = 10_000;

type Sessions = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>;

/// One client's side of the shared socket: the datagrams routed to it, and sends to it.
struct PeerConn {
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    rx: tokio::sync::Mutex<mpsc::Receiver<Vec<u8>>>,
}

#[async_trait]
impl Conn for PeerConn {
    async fn connect(&self, _addr: SocketAddr) -> webrtc_util::Result<()> {
        Err(webrtc_util::Error::Other(
            "a server session does not connect".into(),
        ))
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        let d = self
            .rx
            .lock()
            .await
            .recv()
            .await
            .ok_or(webrtc_util::Error::ErrClosedListener)?;
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        Ok(n)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        Ok((self.recv(buf).await?, self.peer))
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        Ok(self.socket.send_to(buf, self.peer).await?)
    }

    async fn send_to(&self, buf: &[u8], _target: SocketAddr) -> webrtc_util::Result<usize> {
        self.send(buf).await
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        Some(self.peer)
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// The DTLS configuration: PSK suites only, the key of the identity from the registry.
fn config(hub: &Arc<Hub>) -> Config {
    let hub = Arc::clone(hub);
    Config {
        psk: Some(Arc::new(move |identity: &[u8]| {
            std::str::from_utf8(identity)
                .ok()
                .and_then(|id| hub.dtls_psk(id))
                .ok_or_else(|| webrtc_dtls::Error::Other("unknown PSK identity".into()))
        })),
        psk_identity_hint: None,
        cipher_suites: vec![
            CipherSuiteId::Tls_Psk_With_Aes_128_Ccm_8,
            CipherSuiteId::Tls_Psk_With_Aes_128_Ccm,
            CipherSuiteId::Tls_Psk_With_Aes_128_Gcm_Sha256,
        ],
        ..Default::default()
    }
}

/// Serves CoAP over DTLS on `socket` until the task is dropped.
pub async fn run(listener: Arc<Listener>, hub: Arc<Hub>, socket: UdpSocket) {
    let socket = Arc::new(socket);
    let sessions: Sessions = Arc::default();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "DTLS receive error");
                continue;
            }
        };
        let data = buf[..n].to_vec();
        let known = sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&peer)
            .cloned();
        if let Some(tx) = known {
            if tx.try_send(data).is_ok() {
                continue;
            }
            if !tx.is_closed() {
                continue; // its queue is full: the datagram is dropped, the client retransmits
            }
            // The session ended: this is a new handshake from the same address.
            sessions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&peer);
            // (The first datagram of the new session goes to the channel made below.)
            let buf_again = buf[..n].to_vec();
            start(&listener, &hub, &socket, &sessions, peer, buf_again);
            continue;
        }
        start(&listener, &hub, &socket, &sessions, peer, data);
    }
}

/// A new session for `peer`, its first datagram queued; the handshake and the session run
/// in a task of their own.
fn start(
    listener: &Arc<Listener>,
    hub: &Arc<Hub>,
    socket: &Arc<UdpSocket>,
    sessions: &Sessions,
    peer: SocketAddr,
    first: Vec<u8>,
) {
    let (tx, rx) = mpsc::channel(QUEUE);
    {
        let mut map = sessions.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_SESSIONS {
            return;
        }
        let _ = tx.try_send(first);
        map.insert(peer, tx.clone());
    }
    let mine = tx;
    let conn = Arc::new(PeerConn {
        socket: Arc::clone(socket),
        peer,
        rx: tokio::sync::Mutex::new(rx),
    });
    let (listener, hub, sessions) = (Arc::clone(listener), Arc::clone(hub), Arc::clone(sessions));
    tokio::spawn(async move {
        session(listener, hub, conn, peer).await;
        // Only this session's entry: a new one from the same address may have replaced it.
        let mut map = sessions.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&peer).is_some_and(|tx| tx.same_channel(&mine)) {
            map.remove(&peer);
        }
    });
}

/// One client: the handshake, then its requests until it goes quiet or closes.
async fn session(listener: Arc<Listener>, hub: Arc<Hub>, conn: Arc<PeerConn>, peer: SocketAddr) {
    let cfg = config(&hub);
    let dtls = match tokio::time::timeout(HANDSHAKE, DTLSConn::new(conn, cfg, false, None)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "DTLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "DTLS handshake timed out");
            return;
        }
    };
    let identity =
        String::from_utf8_lossy(&dtls.connection_state().await.identity_hint).into_owned();
    let mut buf = vec![0u8; 65_536];
    loop {
        let n = match tokio::time::timeout(IDLE, dtls.read(&mut buf, None)).await {
            Ok(Ok(n)) => n,
            _ => break,
        };
        let answer = match listener.datagram_in_session(peer, &identity, &buf[..n], now_s()) {
            Action::Ignore => continue,
            Action::Reply(bytes) => bytes,
            Action::Store { batch, request } => {
                let outcome = hub.commit(batch).await;
                listener.settle(peer, request, &outcome)
            }
        };
        if dtls.write(&answer, None).await.is_err() {
            break;
        }
    }
    let _ = dtls.close().await;
}
