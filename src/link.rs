//! How one delivery worker reaches its target.
//!
//! Plain `http://` HTTP/1.1 targets get a connection of the worker's own: opened on first use,
//! kept alive, reopened after an error, and driven by the worker itself, so a delivery costs no
//! pool lookup and no hand-off to a separate connection task. (In a profile of the no-loss load
//! run, the pool's hashing, locking and channel were a tenth of the proxy's user-space time.)
//! `https://` and `http2: true` targets use the shared pooled [`HttpClient`].

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::header::RETRY_AFTER;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::net::TcpStream;

use crate::client::HttpClient;
use crate::target::Target;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A target's answer: its status and, if it gave one, its `Retry-After` in seconds.
pub struct Answer {
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
}

pub enum Link {
    /// Boxed: a client is large and a link is per worker.
    Pooled(Box<HttpClient>),
    Owned {
        /// `host:port` to connect to.
        authority: String,
        /// The open connection, if any; taken out while a request is under way, so a request
        /// abandoned half-way (timeout, shutdown) closes it.
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
    pub fn to(target: &Target) -> Link {
        let plain_http1 = target.uri.scheme_str() == Some("http") && !target.spec.http2;
        match (plain_http1, target.uri.authority()) {
            (true, Some(authority)) => Link::Owned {
                authority: format!(
                    "{}:{}",
                    authority.host(),
                    authority.port_u16().unwrap_or(80)
                ),
                open: None,
            },
            _ => Link::Pooled(Box::new(target.client.clone())),
        }
    }

    /// Sends `request` and reads the answer to its end.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Answer, Error> {
        match self {
            Link::Pooled(client) => read(client.request(request).await?).await,
            Link::Owned { authority, open } => {
                let mut owned = match open.take() {
                    Some(mut owned) => {
                        if owned.still_open().await {
                            owned
                        } else {
                            Owned::open(authority).await?
                        }
                    }
                    None => Owned::open(authority).await?,
                };
                let answer = owned.send(request).await?;
                *open = Some(owned);
                Ok(answer)
            }
        }
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

    async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Answer, Error> {
        let Owned { sender, connection } = self;
        let exchange = async {
            sender.ready().await?;
            read(sender.send_request(request).await?).await
        };
        tokio::select! {
            biased;
            answer = exchange => answer,
            ended = connection.as_mut() => match ended {
                Ok(()) => Err("the target closed the connection".into()),
                Err(error) => Err(error.into()),
            },
        }
    }
}

async fn read(response: Response<Incoming>) -> Result<Answer, Error> {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    // Read the answer to its end so the connection can carry the next request.
    response.into_body().collect().await?;
    Ok(Answer {
        status,
        retry_after,
    })
}
