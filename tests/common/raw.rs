//! Raw sockets for tests that write HTTP by hand and read exactly what comes back.

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::PATIENCE;

/// Reads everything until the proxy closes the connection; panics if it stays open past
/// [`PATIENCE`].
pub async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await
    .expect("the proxy closes the connection");
    String::from_utf8_lossy(&answer).into_owned()
}

/// The value of `name` in the head of a raw HTTP/1.1 answer, lower-cased names.
pub fn raw_header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next().unwrap_or_default();
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

pub async fn connect(addr: std::net::SocketAddr) -> TcpStream {
    TcpStream::connect(addr)
        .await
        .expect("connect to the proxy")
}
