//! Raw sockets for the hostile tests: clients that trickle bytes or send nothing, HTTP/2 frames
//! written by hand, targets that misbehave below HTTP, and what the test process spends.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// The client connection preface of HTTP/2.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Raises the open-file soft limit to at least `wanted` (up to the hard limit) and checks it.
pub fn raise_open_files(wanted: libc::rlim_t) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    assert!(
        limit.rlim_cur >= wanted,
        "the test needs {wanted} open files; the hard limit is {}",
        limit.rlim_max
    );
}

/// Resident memory of the test process (server and clients alike), in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("/proc/self/status has VmRSS");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS is a number of kB");
    kib * 1024
}

/// How a trickling client's connection ended.
pub struct Trickled {
    pub opened: Instant,
    /// When the server closed the connection; `None` if it was still open at the limit.
    pub closed: Option<Instant>,
    /// Everything the server wrote.
    pub received: Vec<u8>,
}

impl Trickled {
    pub fn lasted(&self) -> Option<Duration> {
        self.closed.map(|closed| closed - self.opened)
    }
}

/// Connects, writes `prefix` at once, then one byte every `pace`: `lead` first, then `a`s
/// forever, while reading whatever the server sends, until the server closes the connection
/// or `limit` passes.
pub async fn trickle(
    addr: SocketAddr,
    prefix: &[u8],
    lead: &[u8],
    pace: Duration,
    limit: Duration,
) -> Trickled {
    let opened = Instant::now();
    let stream = TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    let (mut reader, mut writer) = stream.into_split();
    let mut writing = writer.write_all(prefix).await.is_ok();
    let mut tick = tokio::time::interval_at(Instant::now() + pace, pace);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let (mut received, mut buffer, mut sent) = (Vec::new(), [0u8; 4096], 0);
    let closed = loop {
        tokio::select! {
            read = reader.read(&mut buffer) => match read {
                Ok(0) | Err(_) => break Some(Instant::now()),
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            },
            _ = tick.tick(), if writing => {
                let byte = lead.get(sent).copied().unwrap_or(b'a');
                sent += 1;
                // Once the server has closed, writes fail; the read then sees the end.
                writing = writer.write_all(&[byte]).await.is_ok();
            }
            () = &mut deadline => break None,
        }
    };
    Trickled {
        opened,
        closed,
        received,
    }
}

/// Sends `request` on a new connection and returns every byte the server writes back before
/// it closes the connection, or `None` if it is still open after `limit`.
pub async fn exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    // A connection refused at once may be closed before this write.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let reading = async {
        let mut buffer = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buffer).await {
            answer.extend_from_slice(&buffer[..n]);
        }
    };
    tokio::time::timeout(limit, reading).await.ok()?;
    Some(answer)
}

/// Everything the server writes on `stream` until it closes the connection.
pub async fn read_to_close(mut stream: TcpStream) -> Vec<u8> {
    let (mut answer, mut buffer) = (Vec::new(), [0u8; 4096]);
    while let Ok(n @ 1..) = stream.read(&mut buffer).await {
        answer.extend_from_slice(&buffer[..n]);
    }
    answer
}

/// One HTTP/2 frame.
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const END_HEADERS: u8 = 0x4;
pub const ACK: u8 = 0x1;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const REFUSED_STREAM: u32 = 0x7;

/// The bytes of a frame.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    bytes.extend_from_slice(&[kind, flags]);
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// An HPACK header block for `POST <path>` over http, without Huffman coding or indexing.
pub fn post_headers(path: &str) -> Vec<u8> {
    // :method POST and :scheme http from the static table, then :path as a literal.
    let mut block = vec![0x83, 0x86, 0x04, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block
}

pub async fn read_frame(reader: &mut (impl AsyncRead + Unpin)) -> io::Result<Frame> {
    let mut head = [0u8; 9];
    reader.read_exact(&mut head).await?;
    let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; length];
    reader.read_exact(&mut payload).await?;
    Ok(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    })
}

/// The value of `id` in a SETTINGS payload.
pub fn setting(payload: &[u8], id: u16) -> Option<u32> {
    payload.chunks_exact(6).find_map(|entry| {
        (u16::from_be_bytes([entry[0], entry[1]]) == id)
            .then(|| u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]))
    })
}

/// How a [`RawTarget`] misbehaves.
#[derive(Clone, Copy, Debug)]
pub enum Misbehaviour {
    /// Accepts connections and never reads or writes a byte.
    Mute,
    /// Answers 200 with a chunked body it writes as fast as it can, forever.
    Gush,
    /// Answers 200 with a `Content-Length` of a gigabyte and one byte every 20ms.
    Trickle,
}

/// A target below HTTP: reads one request per connection and misbehaves.
pub struct RawTarget {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    /// Connections whose peer went away while the target was still answering.
    abandoned: Arc<AtomicUsize>,
    ids: Arc<Mutex<Vec<String>>>,
    server: JoinHandle<()>,
}

impl RawTarget {
    pub async fn start(how: Misbehaviour) -> RawTarget {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let connections = Arc::new(AtomicUsize::new(0));
        let abandoned = Arc::new(AtomicUsize::new(0));
        let ids = Arc::new(Mutex::new(Vec::new()));
        let (counted, gone, seen) = (connections.clone(), abandoned.clone(), ids.clone());
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                match how {
                    Misbehaviour::Mute => held.push(stream),
                    _ => drop(tokio::spawn(misbehave(
                        stream,
                        how,
                        gone.clone(),
                        seen.clone(),
                    ))),
                }
            }
        });
        RawTarget {
            addr,
            connections,
            abandoned,
            ids,
            server,
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn abandoned(&self) -> usize {
        self.abandoned.load(Ordering::SeqCst)
    }

    /// The `fanout-event-id` of every request received, in arrival order.
    pub fn ids(&self) -> Vec<String> {
        self.ids.lock().unwrap().clone()
    }
}

impl Drop for RawTarget {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn misbehave(
    mut stream: TcpStream,
    how: Misbehaviour,
    abandoned: Arc<AtomicUsize>,
    ids: Arc<Mutex<Vec<String>>>,
) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut buffer).await {
            Ok(n @ 1..) => request.extend_from_slice(&buffer[..n]),
            _ => return,
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
    let header = |name: &str| {
        head.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(|value| value.trim().to_owned())
    };
    let length: usize = header("content-length").map_or(0, |v| v.parse().unwrap_or(0));
    while request.len() < head_end + length {
        match stream.read(&mut buffer).await {
            Ok(n @ 1..) => request.extend_from_slice(&buffer[..n]),
            _ => return,
        }
    }
    ids.lock()
        .unwrap()
        .push(header("fanout-event-id").unwrap_or_default());
    let ended = match how {
        Misbehaviour::Mute => unreachable!("a mute target never reads"),
        Misbehaviour::Gush => {
            let mut chunk = b"1000\r\n".to_vec();
            chunk.extend_from_slice(&[b'x'; 0x1000]);
            chunk.extend_from_slice(b"\r\n");
            let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
            let mut result = stream.write_all(head).await;
            while result.is_ok() {
                result = stream.write_all(&chunk).await;
            }
            result
        }
        Misbehaviour::Trickle => {
            let head = b"HTTP/1.1 200 OK\r\ncontent-length: 1000000000\r\n\r\n";
            let mut result = stream.write_all(head).await;
            while result.is_ok() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                result = stream.write_all(b"x").await;
            }
            result
        }
    };
    if ended.is_err() {
        abandoned.fetch_add(1, Ordering::SeqCst);
    }
}
