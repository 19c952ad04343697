//! One node-to-node connection (TCP or TLS, see `transport.rs`): the
//! handshake exchange, then a writer task and a reader task.
//!
//! The writer owns the write half. It sleeps until the peer's [`OutQueue`] has
//! bytes, swaps them all out and writes them with one call (TCP_NODELAY is on, so
//! coalescing is ours, not Nagle's), and sends a TICK when nothing was written
//! for a tick interval. The reader owns the read half: it reads as much as the
//! socket has (up to a large buffer), decodes every complete frame in it, and
//! hands each to the node. If nothing at all arrives for the tick timeout, the
//! peer is declared down.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;

use crate::codec;
use crate::error::{FrameError, HandshakeError};
use crate::frame::{self, Frame, Parsed};
use crate::handshake::{self, Intro, PROTOCOL_VERSION, Record, RefuseReason, ResumePoint, Role};
use crate::outqueue::{OutQueue, Sink, Take};
use crate::transport::{ReadSide, WriteSide};

/// Largest handshake frame accepted, whatever the configured frame limit.
const MAX_HANDSHAKE_FRAME: usize = 4096;

/// Who this node is, as told in handshakes.
#[derive(Debug, Clone)]
pub(crate) struct LocalIdentity {
    pub(crate) name: String,
    pub(crate) node_id: u32,
    pub(crate) creation: u32,
}

impl LocalIdentity {
    fn intro(&self, challenge: handshake::Challenge) -> Intro {
        Intro {
            name: self.name.clone(),
            node_id: self.node_id,
            creation: self.creation,
            capabilities: handshake::capabilities::ALL,
            challenge,
        }
    }
}

/// A connection's byte stream during the handshake.
pub(crate) trait HandshakeStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> HandshakeStream for S {}

async fn write_record(
    stream: &mut impl HandshakeStream,
    record: &Record,
) -> Result<(), HandshakeError> {
    let mut body = Vec::new();
    codec::encode_into(record, &mut body).map_err(|e| HandshakeError::Malformed(e.to_string()))?;
    let mut out = Vec::with_capacity(body.len() + 8);
    frame::put_handshake(&mut out, PROTOCOL_VERSION, &body, MAX_HANDSHAKE_FRAME)
        .map_err(|e| HandshakeError::Malformed(e.to_string()))?;
    stream
        .write_all(&out)
        .await
        .map_err(|e| HandshakeError::Io(e.to_string()))?;
    stream
        .flush()
        .await
        .map_err(|e| HandshakeError::Io(e.to_string()))
}

/// Reads one handshake record. A record of another protocol version is reported
/// as a version mismatch.
async fn read_record(stream: &mut impl HandshakeStream) -> Result<Record, HandshakeError> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            HandshakeError::Io("the peer closed the connection during the handshake".into())
        } else {
            HandshakeError::Io(e.to_string())
        }
    })?;
    // A TLS record where a frame should be: the peer wants TLS (no frame of
    // ours is 350 MiB or more long).
    if crate::transport::looks_like_tls(len[0]) && len[1] == 3 {
        return Err(HandshakeError::Tls(
            "the peer speaks TLS and this node does not: start every node with TLS, or none".into(),
        ));
    }
    let n = u32::from_be_bytes(len) as usize;
    if n == 0 || n > MAX_HANDSHAKE_FRAME {
        return Err(HandshakeError::Malformed(format!(
            "handshake frame of {n} bytes (at most {MAX_HANDSHAKE_FRAME})"
        )));
    }
    let mut buf = vec![0u8; 4 + n];
    buf[..4].copy_from_slice(&len);
    stream
        .read_exact(&mut buf[4..])
        .await
        .map_err(|e| HandshakeError::Io(e.to_string()))?;
    match frame::parse(&buf, MAX_HANDSHAKE_FRAME) {
        Ok(Parsed::Frame(Frame::Handshake { version, record }, _)) => {
            if version != PROTOCOL_VERSION {
                return Err(HandshakeError::VersionMismatch {
                    ours: PROTOCOL_VERSION,
                    theirs: version,
                });
            }
            codec::decode_exact(record, codec::CONTROL_MEMORY_LIMIT)
                .map_err(|e| HandshakeError::Malformed(e.to_string()))
        }
        Ok(Parsed::Frame(other, _)) => Err(HandshakeError::Malformed(format!(
            "expected a handshake frame, got {other:?}"
        ))),
        Ok(Parsed::Incomplete { .. }) => Err(HandshakeError::Malformed("incomplete frame".into())),
        Err(e) => Err(HandshakeError::Malformed(e.to_string())),
    }
}

fn refused(reason: RefuseReason) -> HandshakeError {
    match reason {
        RefuseReason::AuthenticationFailed => HandshakeError::AuthenticationFailed,
        RefuseReason::Simultaneous => HandshakeError::Simultaneous,
        RefuseReason::AlreadyConnected => HandshakeError::AlreadyConnected,
        RefuseReason::Version { supported } => HandshakeError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: supported,
        },
        RefuseReason::NodeIdCollision(s) => HandshakeError::NodeIdCollision(s),
        other => HandshakeError::Refused(other.to_string()),
    }
}

/// A completed handshake: the peer's introduction, and where each side said
/// it stands in their session.
#[derive(Debug, Clone)]
pub(crate) struct Shook {
    /// The peer's introduction.
    pub(crate) peer: Intro,
    /// What this node said.
    pub(crate) mine: ResumePoint,
    /// Where this node's link stood when it said it (see `LinkMachine::epoch`).
    pub(crate) said_at: u64,
    /// What the peer said.
    pub(crate) theirs: ResumePoint,
}

/// The end of either side's handshake: send this side's `Resume`, then read
/// the other's.
async fn exchange_resume(
    stream: &mut impl HandshakeStream,
    peer: Intro,
    resume: impl AsyncFnOnce(u32) -> (ResumePoint, u64),
) -> Result<Shook, HandshakeError> {
    let (mine, said_at) = resume(peer.creation).await;
    write_record(stream, &Record::Resume(mine)).await?;
    let theirs = read_resume(stream).await?;
    Ok(Shook {
        peer,
        mine,
        said_at,
        theirs,
    })
}

/// Reads the other side's `Resume`, the last record of a handshake.
async fn read_resume(stream: &mut impl HandshakeStream) -> Result<ResumePoint, HandshakeError> {
    match read_record(stream).await? {
        Record::Resume(point) => Ok(point),
        Record::Refused(reason) => Err(refused(reason)),
        other => Err(HandshakeError::Malformed(format!(
            "expected Resume, got {other:?}"
        ))),
    }
}

/// The dialer's side of the handshake. Returns the peer's introduction and
/// where it stands in the session with this node. `still_wanted` answers the
/// acceptor's `Alive`: true if this node still has no connection to the peer.
/// `resume` says where this node stands, given the peer's creation (and
/// where its link stood then).
pub(crate) async fn dial(
    stream: &mut impl HandshakeStream,
    me: &LocalIdentity,
    cookie: &[u8],
    expected: &str,
    still_wanted: impl FnOnce() -> bool,
    resume: impl AsyncFnOnce(u32) -> (ResumePoint, u64),
) -> Result<Shook, HandshakeError> {
    let own = handshake::challenge();
    write_record(stream, &Record::Hello(me.intro(own))).await?;
    let peer = match read_record(stream).await? {
        Record::Welcome(intro) => intro,
        Record::Refused(reason) => return Err(refused(reason)),
        other => {
            return Err(HandshakeError::Malformed(format!(
                "expected Welcome, got {other:?}"
            )));
        }
    };
    if peer.name != expected {
        return Err(HandshakeError::WrongPeer {
            expected: expected.to_string(),
            actual: peer.name,
        });
    }
    if peer.node_id != joerl_core::node_id(&peer.name) {
        return Err(HandshakeError::NodeIdCollision(format!(
            "{} announced node id {} but its name hashes to {}",
            peer.name,
            peer.node_id,
            joerl_core::node_id(&peer.name)
        )));
    }
    let proof = handshake::prove(
        cookie,
        Role::Dialer,
        &me.name,
        &peer.name,
        &own,
        &peer.challenge,
    );
    write_record(stream, &Record::Proof(proof)).await?;
    let verify = |p: &crate::handshake::Proof| {
        handshake::verify(
            cookie,
            Role::Acceptor,
            &peer.name,
            &me.name,
            &peer.challenge,
            &own,
            p,
        )
    };
    match read_record(stream).await? {
        Record::Proof(p) if verify(&p) => {}
        Record::Alive(p) if verify(&p) => {
            let go_on = still_wanted();
            write_record(stream, &Record::Continue(go_on)).await?;
            if !go_on {
                return Err(HandshakeError::AlreadyConnected);
            }
        }
        Record::Proof(_) | Record::Alive(_) => return Err(HandshakeError::AuthenticationFailed),
        Record::Refused(reason) => return Err(refused(reason)),
        other => {
            return Err(HandshakeError::Malformed(format!(
                "expected Proof, got {other:?}"
            )));
        }
    }
    exchange_resume(stream, peer, resume).await
}

/// What the acceptor's `decide` says about an authenticated dialer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Go on.
    Yes,
    /// Connection `0` to this incarnation is up here: ask the dialer (`Alive`),
    /// and if it still wants this one, call `replace(0)` and go on.
    IfHalfOpen(u64),
}

/// The acceptor's side. `decide` sees the dialer's introduction once the dialer
/// has proved it knows the cookie, and may still refuse the connection (for
/// example when both sides dialed at once); `replace` closes the old connection
/// when `decide` said [`Admit::IfHalfOpen`] and the dialer confirmed; `resume`
/// says where this node stands in the session with the dialer's creation.
/// Returns the dialer's introduction and where it stands.
pub(crate) async fn accept(
    stream: &mut impl HandshakeStream,
    me: &LocalIdentity,
    cookie: &[u8],
    decide: impl FnOnce(&Intro) -> Result<Admit, RefuseReason>,
    replace: impl FnOnce(u64) -> Result<(), RefuseReason>,
    resume: impl AsyncFnOnce(u32) -> (ResumePoint, u64),
) -> Result<Shook, HandshakeError> {
    let peer = match read_record(stream).await {
        Ok(Record::Hello(intro)) => intro,
        Ok(other) => {
            return Err(HandshakeError::Malformed(format!(
                "expected Hello, got {other:?}"
            )));
        }
        Err(HandshakeError::VersionMismatch { ours, theirs }) => {
            let _ = write_record(
                stream,
                &Record::Refused(RefuseReason::Version { supported: ours }),
            )
            .await;
            return Err(HandshakeError::VersionMismatch { ours, theirs });
        }
        Err(e) => return Err(e),
    };
    let identity = if peer.node_id != joerl_core::node_id(&peer.name) {
        Err(RefuseReason::NodeIdCollision(format!(
            "{} announced node id {} but its name hashes to {}",
            peer.name,
            peer.node_id,
            joerl_core::node_id(&peer.name)
        )))
    } else if peer.name == me.name || peer.node_id == me.node_id {
        Err(RefuseReason::NodeIdCollision(format!(
            "{} has the same name or node id as this node ({})",
            peer.name, me.name
        )))
    } else {
        Ok(())
    };
    if let Err(reason) = identity {
        let _ = write_record(stream, &Record::Refused(reason.clone())).await;
        return Err(refused(reason));
    }
    let own = handshake::challenge();
    write_record(stream, &Record::Welcome(me.intro(own))).await?;
    match read_record(stream).await? {
        Record::Proof(p) => {
            if !handshake::verify(
                cookie,
                Role::Dialer,
                &peer.name,
                &me.name,
                &peer.challenge,
                &own,
                &p,
            ) {
                let _ = write_record(stream, &Record::Refused(RefuseReason::AuthenticationFailed))
                    .await;
                return Err(HandshakeError::AuthenticationFailed);
            }
        }
        other => {
            return Err(HandshakeError::Malformed(format!(
                "expected Proof, got {other:?}"
            )));
        }
    }
    // Only an authenticated peer learns about our connection state.
    let admit = match decide(&peer) {
        Ok(admit) => admit,
        Err(reason) => {
            let _ = write_record(stream, &Record::Refused(reason.clone())).await;
            return Err(refused(reason));
        }
    };
    let proof = handshake::prove(
        cookie,
        Role::Acceptor,
        &me.name,
        &peer.name,
        &own,
        &peer.challenge,
    );
    match admit {
        Admit::Yes => write_record(stream, &Record::Proof(proof)).await?,
        Admit::IfHalfOpen(old) => {
            // Our proof first, so that the dialer answers only a node that
            // knows the cookie.
            write_record(stream, &Record::Alive(proof)).await?;
            match read_record(stream).await? {
                Record::Continue(true) => {
                    if let Err(reason) = replace(old) {
                        let _ = write_record(stream, &Record::Refused(reason.clone())).await;
                        return Err(refused(reason));
                    }
                }
                Record::Continue(false) => return Err(HandshakeError::AlreadyConnected),
                other => {
                    return Err(HandshakeError::Malformed(format!(
                        "expected Continue, got {other:?}"
                    )));
                }
            }
        }
    }
    exchange_resume(stream, peer, resume).await
}

/// Why a connection ended.
#[derive(Debug, Clone)]
pub(crate) enum EndReason {
    /// The peer closed the connection.
    Closed,
    /// The peer said goodbye (graceful shutdown).
    Goodbye,
    /// A newer connection to the same peer took this one's place.
    Superseded,
    /// This node closed the connection for a new one (why).
    Replaced(String),
    /// The peer stopped reading: the outgoing queue reached its hard limit.
    NotReading,
    /// Nothing arrived for the tick timeout.
    TickTimeout(Duration),
    /// A read or write failed.
    Io(String),
    /// The peer sent a frame that is not valid.
    Malformed(FrameError),
    /// This node closed the connection on purpose (why), as Erlang's
    /// `disconnect_node/1`: reported down at once, not mended, not redialed.
    Disconnected(String),
}

impl EndReason {
    /// What a node-down caused by this end reports.
    pub(crate) fn node_down_reason(&self) -> crate::events::NodeDownReason {
        use crate::events::NodeDownReason as R;
        match self {
            EndReason::Closed => R::ConnectionClosed,
            EndReason::Goodbye => R::Goodbye,
            EndReason::Superseded => R::Replaced("a newer connection to the peer".into()),
            EndReason::Replaced(why) => R::Replaced(why.clone()),
            EndReason::NotReading => R::NotReading,
            EndReason::TickTimeout(d) => R::TickTimeout(*d),
            EndReason::Io(e) => R::Io(e.clone()),
            EndReason::Malformed(e) => R::Malformed(e.to_string()),
            EndReason::Disconnected(why) => R::Disconnected(why.clone()),
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndReason::Closed => f.write_str("connection closed by the peer"),
            EndReason::Goodbye => f.write_str("the peer shut down"),
            EndReason::Superseded => f.write_str("replaced by a newer connection to the peer"),
            EndReason::Replaced(why) => write!(f, "replaced: {why}"),
            EndReason::NotReading => {
                f.write_str("the peer stopped reading (outgoing queue over its hard limit)")
            }
            EndReason::TickTimeout(d) => {
                write!(f, "no data or tick from the peer for {d:?} (tick timeout)")
            }
            EndReason::Io(e) => write!(f, "i/o error: {e}"),
            EndReason::Malformed(e) => write!(f, "malformed frame: {e}"),
            EndReason::Disconnected(why) => write!(f, "disconnected by this node: {why}"),
        }
    }
}

/// Writes everything the queue collects until an error (or the task is aborted).
/// A TCP write half is shared with senders' direct writes (see [`OutQueue`]);
/// a TLS stream is the writer's alone. The idle tick is an ACK frame carrying
/// `received()`, the count of the peer's data frames this node has read.
/// `sink` is how the queue knows this connection.
pub(crate) async fn write_loop(
    mut side: WriteSide,
    sink: Sink,
    queue: &OutQueue,
    tick_interval: Duration,
    received: impl Fn() -> u64,
    on_written: impl Fn(usize),
) -> EndReason {
    let mut control: Vec<u8> = Vec::new();
    let mut last_write = tokio::time::Instant::now();
    loop {
        match queue.take_as(&sink, &mut control) {
            Take::Detached => return EndReason::Superseded,
            Take::Idle => {
                let deadline = last_write + tick_interval;
                tokio::select! {
                    _ = queue.wait_for_data() => continue,
                    _ = tokio::time::sleep_until(deadline) => {
                        queue.release_spares();
                        if !queue.push_control_as(&sink, |b| frame::put_ack(b, received())) {
                            return EndReason::Superseded;
                        }
                        last_write = tokio::time::Instant::now();
                        continue;
                    }
                }
            }
            Take::Write {
                control: acks,
                data,
            } => {
                // Data first: it may start with the tail of a frame a sender
                // partly wrote.
                let mut n = 0;
                if let Some(data) = data {
                    if let Err(e) = write_all(&mut side, &data).await {
                        return EndReason::Io(e.to_string());
                    }
                    n += data.len();
                }
                if acks {
                    if let Err(e) = write_all(&mut side, &control).await {
                        return EndReason::Io(e.to_string());
                    }
                    n += control.len();
                }
                if let WriteSide::Tls(w) = &mut side {
                    if let Err(e) = w.flush().await {
                        return EndReason::Io(e.to_string());
                    }
                }
                queue.write_done_as(&sink);
                on_written(n);
                last_write = tokio::time::Instant::now();
            }
        }
    }
}

async fn write_all(side: &mut WriteSide, buf: &[u8]) -> std::io::Result<()> {
    match side {
        WriteSide::Tcp(w) => write_all_shared(w, buf).await,
        WriteSide::Tls(w) => w.write_all(buf).await,
    }
}

/// `write_all` through a shared write half.
async fn write_all_shared(sink: &OwnedWriteHalf, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        sink.writable().await?;
        match sink.try_write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What the reader does with each frame (GOODBYE included). Returns `Err` to
/// close the connection.
pub(crate) trait FrameSink {
    /// Handles one data frame.
    fn frame(
        &mut self,
        frame: Frame<'_>,
    ) -> impl std::future::Future<Output = Result<(), EndReason>> + Send;
}

/// Reads and dispatches frames until the connection ends.
pub(crate) async fn read_loop<S: FrameSink>(
    mut source: ReadSide,
    max_frame: usize,
    tick_timeout: Duration,
    sink: &mut S,
    on_read: impl Fn(usize),
) -> EndReason {
    let mut buf = BytesMut::with_capacity(128 * 1024);
    loop {
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        let n = match tokio::time::timeout(tick_timeout, source.read_buf(&mut buf)).await {
            Err(_) => return EndReason::TickTimeout(tick_timeout),
            Ok(Err(e)) => return EndReason::Io(e.to_string()),
            Ok(Ok(0)) => return EndReason::Closed,
            Ok(Ok(n)) => n,
        };
        on_read(n);
        loop {
            let used = match frame::parse(&buf, max_frame) {
                Err(e) => return EndReason::Malformed(e),
                Ok(Parsed::Incomplete { needed }) => {
                    if needed > buf.len() {
                        buf.reserve(needed - buf.len());
                    }
                    break;
                }
                Ok(Parsed::Frame(Frame::Handshake { .. }, _)) => {
                    return EndReason::Malformed(FrameError::Codec(
                        crate::error::CodecError::Decode(
                            "handshake frame on an established connection".into(),
                        ),
                    ));
                }
                Ok(Parsed::Frame(f, used)) => {
                    if let Err(reason) = sink.frame(f).await {
                        return reason;
                    }
                    used
                }
            };
            buf.advance(used);
        }
    }
}
