//! What the server tracks about one client connection: its socket options, its TLS handshake
//! if the listener has one, which protocol it asks for (and the server configured for it),
//! whether a request is under way (for `idle_timeout`), and the open-connections gauge.

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::IntGauge;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::ingress::tls::Certificates;

/// The two protocol servers, configured once; a connection gets the one its first bytes ask
/// for.
pub struct Builders {
    pub http1: auto::Builder<TokioExecutor>,
    pub http2: auto::Builder<TokioExecutor>,
}

impl Builders {
    /// Servers bounding a request head by `header_read_timeout` and `max_header_bytes`, and an
    /// h2c connection's streams by `http2_max_streams`.
    pub fn new(
        header_read_timeout: Duration,
        max_header_bytes: usize,
        http2_max_streams: u32,
    ) -> Builders {
        let mut http1 = auto::Builder::new(TokioExecutor::new()).http1_only();
        http1
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .max_buf_size(max_header_bytes.max(8192))
            .keep_alive(true);
        let mut http2 = auto::Builder::new(TokioExecutor::new()).http2_only();
        http2
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(http2_max_streams)
            .max_header_list_size(max_header_bytes as u32)
            .keep_alive_interval(header_read_timeout)
            .keep_alive_timeout(header_read_timeout);
        Builders { http1, http2 }
    }
}

/// Sets an accepted connection's socket options: no Nagle delay, and TCP keepalive every
/// `tcp_keepalive` (zero: off).
pub fn configure(stream: &TcpStream, tcp_keepalive: Duration) {
    let _ = stream.set_nodelay(true);
    if !tcp_keepalive.is_zero() {
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(tcp_keepalive)
            .with_interval(tcp_keepalive / 4);
        let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive);
    }
}

/// The client connection preface of HTTP/2 (RFC 9113 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long to wait before looking again at a preface that has only partly arrived.
const PREFACE_POLL: Duration = Duration::from_millis(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// h2c with prior knowledge.
    Http2,
}

/// Reads (without consuming) the connection's first bytes: the HTTP/2 preface means h2c,
/// anything else HTTP/1.x. Waits as long as the bytes so far could still be the preface; the
/// caller bounds the wait (`first_byte_timeout`). A connection closed before its first byte is
/// an error.
pub async fn detect(stream: &TcpStream) -> io::Result<Protocol> {
    let mut buffer = [0u8; 24];
    loop {
        let n = stream.peek(&mut buffer).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if buffer[..n] != H2_PREFACE[..n] {
            return Ok(Protocol::Http1);
        }
        if n == H2_PREFACE.len() {
            return Ok(Protocol::Http2);
        }
        // A prefix of the preface: the socket stays readable, so wait a moment, not for it.
        tokio::time::sleep(PREFACE_POLL).await;
    }
}

/// A client connection, cleartext or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Waits for a new connection's first bytes: for TLS the handshake, whose ALPN picks the
/// protocol (none: HTTP/1.1); for cleartext the h2c preface or anything else ([`detect`]).
/// The caller bounds the wait (`first_byte_timeout`).
pub async fn hello(
    stream: TcpStream,
    tls: Option<&Certificates>,
) -> io::Result<(Protocol, Stream)> {
    let Some(tls) = tls else {
        let protocol = detect(&stream).await?;
        return Ok((protocol, Stream::Plain(stream)));
    };
    let stream = tls.acceptor().accept(stream).await?;
    let protocol = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => Protocol::Http2,
        _ => Protocol::Http1,
    };
    Ok((protocol, Stream::Tls(Box::new(stream))))
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Stream::Tls(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(stream) => stream.is_write_vectored(),
            Stream::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Tls(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Stream::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

/// What `idle_timeout` looks at: requests under way, and how many have begun. A request costs
/// two atomic additions and no clock reading: the idle check, once per `idle_timeout`, sees
/// whether the count moved since its last look.
#[derive(Default)]
pub struct Activity {
    busy: AtomicUsize,
    begun: AtomicU64,
    /// `begun` at the last idle check.
    seen: AtomicU64,
}

/// A request under way; its drop marks the end.
pub struct Busy(Arc<Activity>);

impl Activity {
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.begun.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// Called every `timeout`: whether no request was under way or began since the last call,
    /// so the connection has been idle for at least `timeout` (and at most twice that).
    pub fn idle_since_last_look(&self) -> bool {
        let begun = self.begun.load(Ordering::Relaxed);
        let moved = self.seen.swap(begun, Ordering::Relaxed) != begun;
        !moved && self.busy.load(Ordering::Acquire) == 0
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a connection in `fanout_connections_open` while it lives.
pub struct Open(IntGauge);

impl Open {
    pub fn count(gauge: &IntGauge) -> Open {
        gauge.inc();
        Open(gauge.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Who is at the other end of a client connection, for the `X-Forwarded-*` and `Forwarded`
/// headers of balance routes; their values are made once per connection.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Whether the connection is TLS (the listener has certificates).
    pub tls: bool,
    /// The client's address, as `X-Forwarded-For` gives it (`10.0.0.7`).
    pub forwarded_for: hyper::header::HeaderValue,
    /// `for=10.0.0.7;proto=http` (RFC 7239; an IPv6 address quoted in brackets).
    pub forwarded: hyper::header::HeaderValue,
}

impl Peer {
    pub fn new(addr: std::net::SocketAddr, tls: bool) -> Peer {
        let ip = addr.ip();
        let proto = if tls { "https" } else { "http" };
        let forwarded = match ip {
            std::net::IpAddr::V4(ip) => format!("for={ip};proto={proto}"),
            std::net::IpAddr::V6(ip) => format!("for=\"[{ip}]\";proto={proto}"),
        };
        let value = |text: String| {
            hyper::header::HeaderValue::try_from(text).expect("an address is a header value")
        };
        Peer {
            tls,
            forwarded_for: value(ip.to_string()),
            forwarded: value(forwarded),
        }
    }
}
