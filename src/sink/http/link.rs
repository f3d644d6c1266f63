//! How one delivery worker reaches its target.
//!
//! Plain `http://` HTTP/1.1 targets get a connection of the worker's own: opened on first use,
//! kept alive, reopened after an error, and driven by the worker itself, so a delivery costs no
//! pool lookup and no hand-off to a separate connection task. (In a profile of the no-loss load
//! run, the pool's hashing, locking and channel were a tenth of the proxy's user-space time.)
//! `https://` and `http2: true` targets use the shared pooled [`HttpClient`].
//!
//! A target's answer is decided by its status line: the body is read only so the connection
//! can carry the next request, at most [`MAX_RESPONSE_BODY`] bytes and within the attempt's
//! deadline. A longer or endless body closes the connection; the status still counts, so a
//! 2xx whose body never ends is a delivery.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::header::{HOST, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::client::HttpClient;
use super::Endpoint;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The most response body bytes read from a target; beyond it the connection is closed.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// A target's answer: its status and, if it gave one, its `Retry-After` in seconds.
pub struct Answer {
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
}

/// Why an attempt got no answer.
pub enum Failure {
    /// No status line before the attempt's deadline.
    Timeout,
    /// Connecting, writing or reading failed.
    Io(Error),
}

pub enum Link {
    Pooled {
        /// Boxed: a client is large and a link is per worker.
        client: Box<HttpClient>,
        /// `Host` as written in the url, for HTTP/1.1 (the client would drop a default port
        /// written out); HTTP/2 sends `:authority` instead.
        host: Option<hyper::header::HeaderValue>,
    },
    Owned {
        /// `host:port` to connect to.
        authority: String,
        /// The url's path and query: the request line's target.
        origin: hyper::Uri,
        /// `Host`, as written in the url.
        host: hyper::header::HeaderValue,
        /// The open connection, if any; taken out while a request is under way, so a request
        /// abandoned half-way (timeout, shutdown, an unread body) closes it.
        open: Option<Owned>,
    },
}

pub struct Owned {
    sender: SendRequest<Full<Bytes>>,
    /// Does the connection's reads and writes; polled only while the worker awaits a request
    /// on it (HTTP/1.1 has nothing to do in between).
    connection: Pin<Box<Connection<TokioIo<TcpStream>, Full<Bytes>>>>,
}

impl Link {
    pub fn to(target: &Endpoint) -> Link {
        let plain_http1 = target.uri.scheme_str() == Some("http") && !target.http.http2;
        match (plain_http1, target.uri.authority()) {
            (true, Some(authority)) => Link::Owned {
                authority: format!(
                    "{}:{}",
                    authority.host(),
                    authority.port_u16().unwrap_or(80)
                ),
                origin: target.origin.clone(),
                host: target.host.clone(),
                open: None,
            },
            _ => Link::Pooled {
                client: Box::new(target.client.clone()),
                host: (!target.http.http2).then(|| target.host.clone()),
            },
        }
    }

    /// Sends `request` (whose uri is the target's absolute url) and waits for the answer's
    /// status until `deadline`.
    pub async fn send(
        &mut self,
        mut request: Request<Full<Bytes>>,
        deadline: Instant,
    ) -> Result<Answer, Failure> {
        match self {
            Link::Pooled { client, host } => {
                if let Some(host) = host {
                    request.headers_mut().insert(HOST, host.clone());
                }
                let mut answer = None;
                let exchange = async {
                    let response = client.request(request).await?;
                    read(response, &mut answer).await
                };
                finish(tokio::time::timeout_at(deadline, exchange).await, answer).0
            }
            Link::Owned {
                authority,
                origin,
                host,
                open,
            } => {
                *request.uri_mut() = origin.clone();
                request.headers_mut().insert(HOST, host.clone());
                let mut reused = open.take();
                if let Some(owned) = &mut reused {
                    if !owned.still_open().await {
                        reused = None;
                    }
                }
                let mut owned = match reused {
                    Some(owned) => owned,
                    None => match tokio::time::timeout_at(deadline, Owned::open(authority)).await {
                        Ok(Ok(owned)) => owned,
                        Ok(Err(error)) => return Err(Failure::Io(error)),
                        Err(_) => return Err(Failure::Timeout),
                    },
                };
                let mut answer = None;
                let ended = tokio::time::timeout_at(deadline, owned.send(request, &mut answer));
                let (result, reusable) = finish(ended.await, answer);
                if reusable {
                    *open = Some(owned);
                }
                result
            }
        }
    }
}

/// The attempt's result from how the exchange ended and the answer it saw, if any, and whether
/// the connection can carry another request (the whole body was read in time).
fn finish(
    ended: Result<Result<(), Error>, tokio::time::error::Elapsed>,
    answer: Option<Answer>,
) -> (Result<Answer, Failure>, bool) {
    match (ended, answer) {
        (Ok(Ok(())), Some(answer)) => (Ok(answer), true),
        // The status came, the body did not end in time or was too long: the status counts.
        (_, Some(answer)) => (Ok(answer), false),
        (Ok(Err(error)), None) => (Err(Failure::Io(error)), false),
        (Ok(Ok(())), None) => (Err(Failure::Io("no answer".into())), false),
        (Err(_), None) => (Err(Failure::Timeout), false),
    }
}

impl Owned {
    async fn open(authority: &str) -> Result<Owned, Error> {
        let stream = TcpStream::connect(authority).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        Ok(Owned {
            sender,
            connection: Box::pin(connection),
        })
    }

    /// Whether the connection can take a request: polling it once lets it notice that the
    /// target closed it while idle, so that closing costs no failed attempt.
    async fn still_open(&mut self) -> bool {
        let finished =
            poll_fn(|cx| Poll::Ready(self.connection.as_mut().poll(cx).is_ready())).await;
        !finished && !self.sender.is_closed()
    }

    async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
        answer: &mut Option<Answer>,
    ) -> Result<(), Error> {
        let Owned { sender, connection } = self;
        let exchange = async {
            sender.ready().await?;
            read(sender.send_request(request).await?, answer).await
        };
        tokio::pin!(exchange);
        tokio::select! {
            biased;
            read = &mut exchange => read,
            ended = connection.as_mut() => {
                // The connection is done: a target that answers with `Connection: close`
                // (keep-alive off, or nginx's last request on a connection) ends it in the
                // same poll that reads the answer, which is already waiting in the channel.
                match (exchange.await, ended) {
                    (Ok(()), _) => Ok(()),
                    (Err(error), Ok(())) => Err(format!("the target closed the connection: {error}").into()),
                    (Err(_), Err(error)) => Err(error.into()),
                }
            }
        }
    }
}

/// Puts the response's status in `answer` as soon as it arrives, then reads the body to its
/// end; a body over [`MAX_RESPONSE_BODY`] is an error, which closes the connection.
async fn read(response: Response<Incoming>, answer: &mut Option<Answer>) -> Result<(), Error> {
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    *answer = Some(Answer {
        status: response.status(),
        retry_after,
    });
    let mut body = response.into_body();
    let mut read = 0;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            read += data.len();
            if read > MAX_RESPONSE_BODY {
                return Err("the response body is over 64 KiB".into());
            }
        }
    }
    Ok(())
}
