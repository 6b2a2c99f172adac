//! The CoAP listener (RFC 7252 over UDP): `POST /r/{device_id}?k={secret}` with a SenML JSON,
//! SenML CBOR or compact JSON payload.
//!
//! coap-lite is only the message codec; the loop, duplicate detection, piggybacked responses
//! and overload handling are here. Each turn takes every datagram waiting on the socket,
//! answers the ones that need no storage at once (errors, duplicates), hands the reports to
//! the hub as one group and answers them when the group is durable.
//!
//! Responses: 2.04 Changed; 4.00 with a diagnostic payload; 4.01 wrong or missing secret; 4.04
//! unknown path or device; 4.05 not a POST; 4.13 payload over [`MAX_PAYLOAD`] (with Size1);
//! 4.15 content-format not SenML JSON (110), SenML CBOR (112) or JSON (50); 4.29 with Max-Age
//! when the hub's queue is full; 5.03 when the log cannot be written. A confirmable message
//! that cannot be parsed at all (truncated options, token length over 8) is rejected with a
//! Reset, as RFC 7252 §4.2 requires; a non-confirmable one is dropped.
//!
//! Duplicates: the response to each (peer, message id) is kept for the exchange lifetime
//! (247 s) and replayed for a retransmission; a retransmission that arrives while the first
//! copy is still being stored is ignored (the client will retransmit again).
//!
//! Authentication and decoding are the hub's one admission path ([`Hub::admit`]): this file
//! only maps CoAP to it and its answers back to response codes. DTLS-PSK is a later step: it
//! will sit between the socket and [`Listener::datagram`], with the PSK identity naming the
//! device, so the handling below does not change.

use super::{AdmitError, Batch, Committed, Format, Hub, LiveError};
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// Largest payload accepted (NB-IoT reports are tens of bytes).
pub const MAX_PAYLOAD: usize = 1024;
/// EXCHANGE_LIFETIME of RFC 7252 §4.8.2.
pub const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);
/// Shards of the exchange table: a shard grows (and rehashes) on its own, so a rehash holds up
/// one receive loop for 1/16 of the time a single table would (a 262 k-entry rehash was a
/// 30 ms stall at 50 k reports/s).
const SHARDS: usize = 16;
/// Most remembered exchanges (the oldest go first beyond it).
const MAX_EXCHANGES: usize = 500_000;
/// Datagrams taken per turn, at most.
const BATCH: usize = 256;
/// Max-Age of a 4.29 answer, seconds.
const RETRY_AFTER: u32 = 2;

/// Remembered responses by (peer, message id); `None` while the first copy is being stored.
#[derive(Default)]
struct Exchanges {
    map: HashMap<(SocketAddr, u16), Option<Vec<u8>>>,
    order: VecDeque<(Instant, (SocketAddr, u16))>,
}

impl Exchanges {
    fn expire(&mut self, now: Instant) {
        while let Some((at, key)) = self.order.front().copied() {
            if now.duration_since(at) < EXCHANGE_LIFETIME
                && self.map.len() <= MAX_EXCHANGES / SHARDS
            {
                break;
            }
            self.order.pop_front();
            self.map.remove(&key);
        }
    }
}

/// What to do with one datagram.
pub enum Action {
    /// Nothing (not for us, or a duplicate being stored).
    Ignore,
    /// Send these bytes back now.
    Reply(Vec<u8>),
    /// Store these records, then answer.
    Store {
        /// The records.
        batch: Batch,
        /// What the answer needs of the request.
        request: Pending,
    },
}

/// What answering a request needs: its type, message id and token.
#[derive(Debug, Clone, Copy)]
pub struct Pending {
    confirmable: bool,
    mid: u16,
    token: [u8; 8],
    tkl: u8,
}

impl Pending {
    fn of(req: &Packet) -> Pending {
        let t = req.get_token();
        let mut token = [0u8; 8];
        let n = t.len().min(8);
        token[..n].copy_from_slice(&t[..n]);
        Pending {
            confirmable: req.header.get_type() == MessageType::Confirmable,
            mid: req.header.message_id,
            token,
            tkl: n as u8,
        }
    }
}

/// The CoAP side of a hub.
pub struct Listener {
    hub: Arc<Hub>,
    exchanges: Vec<Mutex<Exchanges>>,
    next_mid: std::sync::atomic::AtomicU16,
}

/// The bytes of an answer to `req` with `code`, at most one option (number < 269, value under
/// 13 bytes) and an optional diagnostic payload: piggybacked on an ACK for a confirmable
/// request (same message id), a non-confirmable message with message id `mid` otherwise.
///
/// Encoded by hand rather than through coap-lite's `Packet`, whose option map (a BTreeMap of
/// linked lists of Vecs) made allocation the largest cost of answering at 30 k reports/s.
fn answer(
    req: &Pending,
    code: ResponseType,
    option: Option<(u16, &[u8])>,
    diagnostic: &str,
    mid: u16,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + diagnostic.len());
    let (ty, id) = if req.confirmable {
        (2u8, req.mid) // ACK
    } else {
        (1u8, mid) // NON
    };
    out.push(0x40 | (ty << 4) | req.tkl);
    out.push(u8::from(MessageClass::Response(code)));
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&req.token[..usize::from(req.tkl)]);
    if let Some((number, value)) = option {
        let len = value.len().min(12) as u8;
        if number < 13 {
            out.push(((number as u8) << 4) | len);
        } else {
            out.push((13 << 4) | len);
            out.push((number - 13).min(255) as u8);
        }
        out.extend_from_slice(&value[..usize::from(len)]);
    }
    if !diagnostic.is_empty() {
        out.push(0xFF);
        out.extend_from_slice(diagnostic.as_bytes());
    }
    out
}

/// The response code and diagnostic of a commit's outcome: 2.04, 4.29 (queue full) or 5.03.
fn outcome_code(outcome: &Result<Committed, LiveError>) -> (ResponseType, String) {
    match outcome {
        Ok(_) => (ResponseType::Changed, String::new()),
        Err(LiveError::Overloaded) => (
            ResponseType::TooManyRequests,
            LiveError::Overloaded.to_string(),
        ),
        Err(e) => (ResponseType::ServiceUnavailable, e.to_string()),
    }
}

/// A CoAP unsigned integer option value: big-endian, no leading zero bytes.
fn uint_option(v: u32) -> Vec<u8> {
    let b = v.to_be_bytes();
    let skip = b.iter().take_while(|x| **x == 0).count();
    b[skip..].to_vec()
}

/// A Reset for the message id in the first bytes of a datagram, if it is a confirmable CoAP
/// version 1 message.
fn reset_for(datagram: &[u8]) -> Option<Vec<u8>> {
    if datagram.len() < 4 || datagram[0] >> 6 != 1 || (datagram[0] >> 4) & 3 != 0 {
        return None;
    }
    // Version 1, type RST (3), no token, code 0.00, the same message id.
    Some(vec![0x70, 0x00, datagram[2], datagram[3]])
}

impl Listener {
    /// A listener feeding `hub`.
    pub fn new(hub: Arc<Hub>) -> Arc<Listener> {
        Arc::new(Listener {
            hub,
            exchanges: (0..SHARDS).map(|_| Mutex::default()).collect(),
            next_mid: std::sync::atomic::AtomicU16::new(rand_u16()),
        })
    }

    fn mid(&self) -> u16 {
        self.next_mid
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn exchanges(&self, key: &(SocketAddr, u16)) -> std::sync::MutexGuard<'_, Exchanges> {
        use std::hash::BuildHasher;
        let h = foldhash::fast::FixedState::default().hash_one(key);
        self.exchanges[(h as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Decides what to do with one datagram from `peer` (never panics on any input).
    pub fn datagram(&self, peer: SocketAddr, data: &[u8], now_s: f64) -> Action {
        self.datagram_from(peer, None, data, now_s)
    }

    /// Like [`Listener::datagram`], for a datagram of a DTLS session whose pre-shared key
    /// identity (a device id) is `identity`: that device is authenticated, `?k=` is not used.
    pub fn datagram_in_session(
        &self,
        peer: SocketAddr,
        identity: &str,
        data: &[u8],
        now_s: f64,
    ) -> Action {
        self.datagram_from(peer, Some(identity), data, now_s)
    }

    fn datagram_from(
        &self,
        peer: SocketAddr,
        session: Option<&str>,
        data: &[u8],
        now_s: f64,
    ) -> Action {
        let Ok(req) = Packet::from_bytes(data) else {
            return reset_for(data).map_or(Action::Ignore, Action::Reply);
        };
        match req.header.get_type() {
            MessageType::Confirmable | MessageType::NonConfirmable => {}
            _ => return Action::Ignore, // ACK / RST from a client: nothing to answer
        }
        if req.header.code == MessageClass::Empty {
            // CoAP ping: answer a confirmable empty message with a Reset.
            return reset_for(data).map_or(Action::Ignore, Action::Reply);
        }
        let key = (peer, req.header.message_id);
        {
            // Look up and claim in one step: receive loops run in parallel, and a
            // retransmission must never be stored twice.
            let mut ex = self.exchanges(&key);
            match ex.map.get(&key) {
                Some(Some(resp)) => return Action::Reply(resp.clone()),
                Some(None) => return Action::Ignore,
                None => {
                    ex.map.insert(key, None);
                    let now = Instant::now();
                    ex.order.push_back((now, key));
                    ex.expire(now);
                }
            }
        }
        match self.handle(&req, session, now_s) {
            Ok(batch) => Action::Store {
                batch,
                request: Pending::of(&req),
            },
            Err((code, why)) => {
                let size1 = uint_option(MAX_PAYLOAD as u32);
                let option = (code == ResponseType::RequestEntityTooLarge)
                    .then_some((60u16, size1.as_slice())); // Size1
                let bytes = answer(&Pending::of(&req), code, option, &why, self.mid());
                self.remember(key, bytes.clone());
                Action::Reply(bytes)
            }
        }
    }

    fn remember(&self, key: (SocketAddr, u16), bytes: Vec<u8>) {
        let mut ex = self.exchanges(&key);
        if ex.map.insert(key, Some(bytes)).is_none() {
            ex.order.push_back((Instant::now(), key));
        }
        ex.expire(Instant::now());
    }

    /// Checks a request and admits its payload.
    fn handle(
        &self,
        req: &Packet,
        session: Option<&str>,
        now_s: f64,
    ) -> Result<Batch, (ResponseType, String)> {
        if req.header.code != MessageClass::Request(RequestType::Post) {
            return Err((
                ResponseType::MethodNotAllowed,
                "only POST /r/{device}?k={secret}".into(),
            ));
        }
        if req.payload.len() > MAX_PAYLOAD {
            return Err((
                ResponseType::RequestEntityTooLarge,
                format!(
                    "payload of {} bytes; at most {MAX_PAYLOAD}",
                    req.payload.len()
                ),
            ));
        }
        let path: Vec<String> = req
            .get_option(CoapOption::UriPath)
            .map(|l| {
                l.iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let device = match path.as_slice() {
            [r, id] if r == "r" => id.as_str(),
            _ => {
                return Err((
                    ResponseType::NotFound,
                    format!("no resource /{}; report to /r/{{device}}", path.join("/")),
                ));
            }
        };
        let secret = req
            .get_option(CoapOption::UriQuery)
            .into_iter()
            .flatten()
            .filter_map(|q| std::str::from_utf8(q).ok())
            .find_map(|q| q.strip_prefix("k="));
        let format = match req.get_first_option(CoapOption::ContentFormat) {
            None => Format::sniff(&req.payload),
            Some(v) if v.len() <= 2 => {
                let cf = v.iter().fold(0u16, |a, b| (a << 8) | u16::from(*b));
                Format::from_coap(cf).ok_or((
                    ResponseType::UnsupportedContentFormat,
                    format!(
                        "content-format {cf}; use 110 (SenML JSON), 112 (SenML CBOR) or 50 (JSON)"
                    ),
                ))?
            }
            Some(_) => {
                return Err((
                    ResponseType::UnsupportedContentFormat,
                    "content-format option too long".into(),
                ));
            }
        };
        let protocol = if session.is_some() { "coaps" } else { "coap" };
        let admission = match session {
            Some(identity) => {
                self.hub
                    .admit_session(identity, device, format, &req.payload, now_s)
            }
            None if self.hub.requires_dtls(device) => {
                return Err((
                    ResponseType::Unauthorized,
                    format!("{device} reports over DTLS only: coaps://HOST:5684/r/{device} with its secret as PSK"),
                ));
            }
            None => self
                .hub
                .admit(secret, Some(device), format, &req.payload, now_s),
        }
        .inspect_err(|e| self.hub.note_ingest(protocol, e.outcome(), 1, 0))
        .map_err(|e| match e {
                AdmitError::UnknownDevice(_) => (ResponseType::NotFound, e.to_string()),
                AdmitError::MissingCredential | AdmitError::BadCredential => (
                    ResponseType::Unauthorized,
                    "missing or wrong device secret (?k=)".into(),
                ),
                AdmitError::TooLarge { .. } => (ResponseType::BadRequest, e.to_string()),
                AdmitError::Malformed(why) => (ResponseType::BadRequest, why),
            })?;
        // One message, one answer: a payload with a bad record is refused whole.
        if let Some(r) = admission.rejected.first() {
            self.hub.note_ingest(protocol, "malformed", 1, 0);
            return Err((ResponseType::BadRequest, r.error.clone()));
        }
        Ok(admission.accepted)
    }

    /// The answer to one stored (or refused) request, remembered for its retransmissions: for
    /// transports that answer request by request (DTLS sessions).
    pub fn settle(
        &self,
        peer: SocketAddr,
        request: Pending,
        outcome: &Result<Committed, LiveError>,
    ) -> Vec<u8> {
        let (code, why) = outcome_code(outcome);
        note_outcome(&self.hub, "coaps", outcome, 1);
        let max_age = [RETRY_AFTER as u8];
        let option = (code == ResponseType::TooManyRequests).then_some((14u16, &max_age[..])); // Max-Age
        let bytes = answer(&request, code, option, &why, self.mid());
        let key = (peer, request.mid);
        if outcome.is_ok() {
            self.remember(key, bytes.clone());
        } else {
            self.exchanges(&key).map.remove(&key);
        }
        bytes
    }

    /// Answers a group of stored (or refused) requests and remembers the answers; called on
    /// the committer thread once the group is durable.
    fn answer_group(
        &self,
        socket: &std::net::UdpSocket,
        group: Vec<(SocketAddr, Pending)>,
        outcome: Result<Committed, LiveError>,
    ) {
        let (code, why) = outcome_code(&outcome);
        note_outcome(&self.hub, "coap", &outcome, group.len() as u64);
        let max_age = [RETRY_AFTER as u8];
        let option = (code == ResponseType::TooManyRequests).then_some((14u16, &max_age[..])); // Max-Age
        let answers: Vec<(SocketAddr, u16, Vec<u8>)> = group
            .iter()
            .map(|(peer, req)| (*peer, req.mid, answer(req, code, option, &why, self.mid())))
            .collect();
        let now = Instant::now();
        for (peer, mid, bytes) in &answers {
            let key = (*peer, *mid);
            let mut ex = self.exchanges(&key);
            if outcome.is_ok() {
                if ex.map.insert(key, Some(bytes.clone())).is_none() {
                    ex.order.push_back((now, key));
                }
            } else {
                ex.map.remove(&key); // a retransmission may succeed later
            }
            ex.expire(now);
        }
        for (peer, _, bytes) in answers {
            // A full socket buffer loses this answer; the device retransmits and gets the
            // remembered one.
            let _ = socket.send_to(&bytes, peer);
        }
    }

    /// Runs the receive loop on `socket` until the task is dropped.
    pub async fn run(self: Arc<Self>, socket: UdpSocket) {
        // The committer answers on a plain (non-blocking) clone of the socket.
        let (socket, sender) = match socket
            .into_std()
            .and_then(|s| Ok((s.try_clone()?, s)))
            .and_then(|(clone, s)| Ok((UdpSocket::from_std(s)?, Arc::new(clone))))
        {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, "cannot set up the CoAP socket");
                return;
            }
        };
        // One receive loop per core: parsing, authenticating and decoding run in parallel;
        // the committer orders everything.
        let socket = Arc::new(socket);
        let loops = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 8);
        let mut tasks = Vec::new();
        for _ in 0..loops {
            let (me, socket, sender) =
                (Arc::clone(&self), Arc::clone(&socket), Arc::clone(&sender));
            tasks.push(tokio::spawn(
                async move { me.receive(socket, sender).await },
            ));
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    async fn receive(self: Arc<Self>, socket: Arc<UdpSocket>, sender: Arc<std::net::UdpSocket>) {
        let mut buf = vec![0u8; 65_536];
        loop {
            let mut group: Vec<(SocketAddr, Pending)> = Vec::new();
            let mut batch = Batch::default();
            let first = socket.recv_from(&mut buf).await;
            let mut next = Some(first);
            let mut taken = 0;
            while let Some(received) = next.take() {
                taken += 1;
                let now = super::now_s();
                match received {
                    Ok((n, peer)) => match self.datagram(peer, &buf[..n], now) {
                        Action::Ignore => {}
                        Action::Reply(bytes) => {
                            let _ = socket.try_send_to(&bytes, peer);
                        }
                        Action::Store { batch: b, request } => {
                            group.push((peer, request));
                            batch.append(b);
                        }
                    },
                    Err(e) => {
                        tracing::debug!(error = %e, "CoAP receive error");
                    }
                }
                if taken < BATCH {
                    match socket.try_recv_from(&mut buf) {
                        Ok(x) => next = Some(Ok(x)),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => next = Some(Err(e)),
                    }
                }
            }
            if group.is_empty() {
                continue;
            }
            let me = Arc::clone(&self);
            let sock = Arc::clone(&sender);
            let pending = group.clone();
            let reply: super::Reply =
                Box::new(move |outcome| me.answer_group(&sock, group, outcome));
            if let Err(e) = self.hub.commit_with(batch, reply) {
                self.answer_group(&sender, pending, Err(e));
            }
        }
    }
}

fn rand_u16() -> u16 {
    let mut b = [0u8; 2];
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    u16::from_le_bytes(b)
}

/// Tells the hub's observer how `payloads` stored (or refused) requests ended.
fn note_outcome(
    hub: &Hub,
    protocol: &'static str,
    outcome: &Result<Committed, LiveError>,
    payloads: u64,
) {
    match outcome {
        Ok(c) => hub.note_ingest(protocol, "accepted", payloads, c.records as u64),
        Err(LiveError::Overloaded) => hub.note_ingest(protocol, "overloaded", payloads, 0),
        Err(_) => hub.note_ingest(protocol, "unavailable", payloads, 0),
    }
}
