//! Requests that arrive while the proxy shuts down get `503` with `Retry-After: 1`, counted as
//! `shutting_down`; the refusal comes before the body is read, so a client that waits for
//! `100 Continue` (or has not sent its body yet) uploads nothing.
//!
//! Shutdown is started as SIGTERM would start it ([`common::Running::shutdown`], in a task of
//! its own so the test goes on while the proxy drains). What can arrive during the drain:
//! - on h2c, a new stream on an open connection, sent before the client saw the server's
//!   GOAWAY (the server accepts streams until the client answers the PING that follows the
//!   GOAWAY; the frame-level client here never does): refused with no body sent at all;
//! - on h2c, the rest of a body whose headers came before: refused once the body is read;
//! - on HTTP/1.1, the rest of a body whose headers came before. (An HTTP/1.1 connection that
//!   has sent nothing when shutdown begins is closed at once: it has no request under way.)

mod common;

use common::raw::{connect, raw_header, read_to_close};

use common::{start_proxy, Metrics, Reply, Running, Target, PATIENCE};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

mod table {
    fanout::routes!("tests/routes/promises.yaml");
}
use table::Table;

/// Begins shutdown as SIGTERM would, without waiting for it to end, and returns once the proxy
/// refuses new requests.
async fn begin_shutdown(running: Running<Table>) -> JoinHandle<()> {
    let state = running.shared.clone();
    let stopping = tokio::spawn(running.shutdown());
    let flagged = async {
        while !state.shutting_down.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(PATIENCE, flagged)
        .await
        .expect("shutdown begins");
    stopping
}

/// The proxy's metrics after it stopped (its socket is closed by then).
fn final_metrics(state: &fanout::shared::Shared<Table>) -> Metrics {
    let text = state.metrics.render(&state.table);
    Metrics(String::from_utf8(text).expect("metrics are UTF-8"))
}

fn shutting_down_refusals(metrics: &Metrics) -> f64 {
    assert!(
        metrics.0.contains("reason=\"shutting_down\""),
        "{}",
        metrics.0
    );
    metrics.value(
        "fanout_events_rejected_total",
        &[("route", "plain"), ("reason", "shutting_down")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_completed_during_shutdown_gets_503_and_is_counted() {
    let target = Target::start(Reply::Status(200)).await;
    let running = start_proxy::<Table>(&[("PLAIN", target.addr.to_string())], None).await;
    let state = running.shared.clone();

    let mut uploading = connect(running.addr).await;
    uploading
        .write_all(
            b"POST /plain HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 10\r\nexpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let mut go_on = [0u8; 25];
    tokio::time::timeout(PATIENCE, uploading.read_exact(&mut go_on))
        .await
        .expect("an answer to the headers")
        .expect("read the answer");
    assert_eq!(
        &go_on, b"HTTP/1.1 100 Continue\r\n\r\n",
        "before shutdown the body is wanted"
    );
    uploading.write_all(b"{\"a\":").await.unwrap();

    let stopping = begin_shutdown(running).await;
    uploading.write_all(b"\"bc\"}").await.unwrap(); // the last 5 of 10 bytes
    let answer = read_to_close(&mut uploading).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert_eq!(raw_header(&answer, "retry-after"), Some("1"), "{answer:?}");
    assert_eq!(
        raw_header(&answer, "connection"),
        Some("close"),
        "{answer:?}"
    );
    assert!(answer.contains("{\"error\":"), "{answer:?}");

    tokio::time::timeout(PATIENCE, stopping)
        .await
        .expect("the proxy stops")
        .expect("the shutdown task does not panic");
    let metrics = final_metrics(&state);
    assert_eq!(shutting_down_refusals(&metrics), 1.0);
    assert_eq!(
        metrics.value("fanout_events_accepted_total", &[("route", "plain")]),
        0.0
    );
    assert_eq!(target.count(), 0, "the refused event reached no target");
}

// A minimal h2c client, so that the test decides when (and whether) to answer the server's
// PING, which a library client does at once.

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

async fn write_frame(stream: &mut TcpStream, kind: u8, flags: u8, id: u32, payload: &[u8]) {
    let mut frame = Vec::with_capacity(9 + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(payload);
    stream.write_all(&frame).await.expect("send a frame");
}

async fn read_frame(stream: &mut TcpStream) -> Frame {
    let reading = async {
        let mut head = [0u8; 9];
        stream.read_exact(&mut head).await?;
        let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; length];
        stream.read_exact(&mut payload).await?;
        Ok::<_, std::io::Error>(Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        })
    };
    tokio::time::timeout(PATIENCE, reading)
        .await
        .expect("a frame from the proxy in time")
        .expect("the proxy keeps the connection open")
}

/// Opens an h2c connection with prior knowledge and settles the SETTINGS exchange.
async fn h2c_connect(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = connect(addr).await;
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    write_frame(&mut stream, SETTINGS, 0, 0, &[]).await;
    loop {
        let frame = read_frame(&mut stream).await;
        if frame.kind == SETTINGS && frame.flags & ACK == 0 {
            write_frame(&mut stream, SETTINGS, ACK, 0, &[]).await;
            return stream;
        }
    }
}

/// An HPACK string literal, not Huffman-coded (all ours are shorter than 127 bytes).
fn hpack_string(block: &mut Vec<u8>, text: &str) {
    block.push(text.len() as u8);
    block.extend_from_slice(text.as_bytes());
}

/// The header block of `POST /plain` announcing a 2-byte JSON body and `Expect: 100-continue`.
fn post_plain_headers() -> Vec<u8> {
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http (static table)
    block.push(0x04); // :path, literal without indexing
    hpack_string(&mut block, "/plain");
    block.push(0x01); // :authority
    hpack_string(&mut block, "x");
    block.extend_from_slice(&[0x0f, 0x10]); // content-type (static index 31)
    hpack_string(&mut block, "application/json");
    block.extend_from_slice(&[0x0f, 0x0d]); // content-length (28)
    hpack_string(&mut block, "2");
    block.extend_from_slice(&[0x0f, 0x14]); // expect (35)
    hpack_string(&mut block, "100-continue");
    block
}

/// An HPACK integer with an `n`-bit prefix starting at `block[*at]`.
fn hpack_int(block: &[u8], at: &mut usize, n: u32) -> usize {
    let max = (1usize << n) - 1;
    let mut value = block[*at] as usize & max;
    *at += 1;
    if value == max {
        let mut shift = 0;
        loop {
            let byte = block[*at];
            *at += 1;
            value += ((byte & 0x7f) as usize) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
    }
    value
}

/// Decodes a Huffman-coded string of digits (RFC 7541 appendix B: `0`-`2` take 5 bits, `3`-`9`
/// take 6); None if it holds anything else.
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|byte| (0..8).rev().map(move |i| (byte >> i) & 1))
        .collect();
    let value = |from: usize, n: usize| bits[from..from + n].iter().fold(0, |v, b| v << 1 | b);
    let mut text = String::new();
    let mut at = 0;
    while bits.len() - at >= 5 {
        match value(at, 5) {
            code @ 0..=2 => {
                text.push((b'0' + code) as char);
                at += 5;
            }
            _ if bits.len() - at >= 6 && (0b011001..=0b011111).contains(&value(at, 6)) => {
                text.push((b'0' + 3 + value(at, 6) - 0b011001) as char);
                at += 6;
            }
            _ => break,
        }
    }
    // What is left must be the padding: fewer than 8 bits, all ones.
    (bits.len() - at < 8 && bits[at..].iter().all(|&b| b == 1)).then_some(text)
}

fn hpack_value(block: &[u8], at: &mut usize) -> Option<String> {
    let huffman = block[*at] & 0x80 != 0;
    let length = hpack_int(block, at, 7);
    let bytes = &block[*at..*at + length];
    *at += length;
    if huffman {
        huffman_digits(bytes)
    } else {
        Some(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// `:status` and `retry-after` of a response's first header block. Only what a first answer
/// on a connection can use is decoded: the static table and literals.
fn status_and_retry_after(block: &[u8]) -> (Option<u16>, Option<String>) {
    const STATIC_STATUSES: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
    let (mut status, mut retry_after) = (None, None);
    let mut at = 0;
    while at < block.len() {
        let first = block[at];
        if first & 0x80 != 0 {
            let index = hpack_int(block, &mut at, 7);
            if (8..=14).contains(&index) {
                status = Some(STATIC_STATUSES[index - 8]);
            }
            continue;
        }
        if first & 0xe0 == 0x20 {
            hpack_int(block, &mut at, 5); // dynamic table size update
            continue;
        }
        let prefix = if first & 0x40 != 0 { 6 } else { 4 };
        let index = hpack_int(block, &mut at, prefix);
        if index == 0 {
            hpack_value(block, &mut at); // a name not in the table
        }
        let value = hpack_value(block, &mut at);
        match index {
            8 => status = value.and_then(|v| v.parse().ok()),
            53 => retry_after = value,
            _ => {}
        }
    }
    (status, retry_after)
}

/// Reads frames until stream `id` ends; returns its status, `retry-after` and body.
async fn h2c_answer(stream: &mut TcpStream, id: u32) -> (u16, Option<String>, String) {
    let (mut status, mut retry_after, mut body) = (None, None, Vec::new());
    loop {
        let frame = read_frame(stream).await;
        if frame.stream != id {
            continue;
        }
        match frame.kind {
            HEADERS if status.is_none() => {
                assert_eq!(frame.flags & 0x28, 0, "no padding or priority expected");
                assert_ne!(frame.flags & END_HEADERS, 0, "one frame holds the head");
                (status, retry_after) = status_and_retry_after(&frame.payload);
            }
            DATA => body.extend_from_slice(&frame.payload),
            _ => {}
        }
        if matches!(frame.kind, HEADERS | DATA) && frame.flags & END_STREAM != 0 {
            let status = status.expect("the answer has a :status");
            return (status, retry_after, String::from_utf8_lossy(&body).into());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_streams_arriving_or_completing_during_the_drain_get_503() {
    let target = Target::start(Reply::Status(200)).await;
    let running = start_proxy::<Table>(&[("PLAIN", target.addr.to_string())], None).await;
    let state = running.shared.clone();

    // Each answer is the first on its connection, so its head uses only the static table.
    // `uploading` has sent a stream's headers and part of its body when shutdown begins;
    // `opening` is open but has no stream yet.
    let mut uploading = h2c_connect(running.addr).await;
    write_frame(
        &mut uploading,
        HEADERS,
        END_HEADERS,
        1,
        &post_plain_headers(),
    )
    .await;
    write_frame(&mut uploading, DATA, 0, 1, b"{").await;
    let mut opening = h2c_connect(running.addr).await;

    let stopping = begin_shutdown(running).await;
    let goaway = loop {
        let frame = read_frame(&mut opening).await;
        if frame.kind == GOAWAY {
            break frame;
        }
    };
    let last_stream = u32::from_be_bytes(goaway.payload[..4].try_into().unwrap()) & 0x7fff_ffff;
    assert_eq!(
        last_stream, 0x7fff_ffff,
        "a graceful GOAWAY first leaves room for streams in flight"
    );
    // A stream the client opened before it read the GOAWAY; its body is never sent.
    write_frame(&mut opening, HEADERS, END_HEADERS, 1, &post_plain_headers()).await;
    let (status, retry_after, body) = h2c_answer(&mut opening, 1).await;
    assert_eq!(status, 503, "refused before its body: {body}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(body.starts_with("{\"error\":"), "{body}");
    assert!(body.contains("shutting down"), "{body}");

    // The body begun before shutdown is completed during the drain.
    write_frame(&mut uploading, DATA, END_STREAM, 1, b"}").await;
    let (status, retry_after, body) = h2c_answer(&mut uploading, 1).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(body.contains("shutting down"), "{body}");
    drop((opening, uploading));

    tokio::time::timeout(PATIENCE, stopping)
        .await
        .expect("the proxy stops")
        .expect("the shutdown task does not panic");
    let metrics = final_metrics(&state);
    assert_eq!(shutting_down_refusals(&metrics), 2.0);
    assert_eq!(
        metrics.value("fanout_events_accepted_total", &[("route", "plain")]),
        0.0
    );
    assert_eq!(target.count(), 0, "no refused event reached the target");
}
