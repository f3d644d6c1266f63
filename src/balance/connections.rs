//! A backend's connections, kept by the backend itself rather than by a shared client, so that
//! a request learns whether it could connect before its body is handed over: a connect failure
//! leaves a streamed body untouched, free to go to another backend.
//!
//! HTTP/1.1 backends get a stack of idle keep-alive connections: a request takes one (or opens
//! one), and its answer's body gives it back once read to the end. HTTP/2 backends (`http2:
//! true`, h2c for http://) share one multiplexed connection, opened again when it closes.

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::{Either, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::sync::Mutex;
use std::time::Duration;
use tower_service::Service;

use crate::sink::http::{error_chain, Connector};

/// A request body on its way to a backend: kept whole (small enough to send again on another
/// backend), or streamed from the client as it arrives (within the route's `max_body`).
pub type Outgoing = Either<Full<Bytes>, Limited<Incoming>>;

/// A connection to a backend, TLS or not.
type Stream = hyper_rustls::MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// Idle HTTP/1.1 connections kept per backend at most; more are closed.
const MAX_IDLE: usize = 256;

pub struct Connections {
    connector: Connector,
    /// The backend's url (scheme and authority), for the connector.
    uri: Uri,
    http2: bool,
    idle: Mutex<Vec<http1::SendRequest<Outgoing>>>,
    shared: Mutex<Option<http2::SendRequest<Outgoing>>>,
}

/// One connection's sender, taken for one request.
pub enum Sender {
    Http1(http1::SendRequest<Outgoing>),
    Http2(http2::SendRequest<Outgoing>),
}

/// Why a request got no answer.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be opened: nothing was sent.
    Connect(String),
    /// The request was sent (or partly), and the connection failed before an answer's head.
    Failed(String),
    /// An idle connection had closed and no new one could be opened: the request comes back
    /// unsent, its body untouched, for another backend.
    Unsent(String, Box<Request<Outgoing>>),
    /// The client's side of the request failed: its body broke off or went over the route's
    /// `max_body` (`too_large`). Not the backend's doing.
    Client { too_large: bool },
}

impl Connections {
    pub fn new(connector: Connector, uri: Uri, http2: bool) -> Connections {
        Connections {
            connector,
            uri,
            http2,
            idle: Mutex::new(Vec::new()),
            shared: Mutex::new(None),
        }
    }

    /// A connection ready for a request: an idle one, or a new one.
    pub async fn take(&self) -> Result<Sender, SendError> {
        if self.http2 {
            let shared = self
                .shared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(sender) = shared.filter(|s| !s.is_closed()) {
                return Ok(Sender::Http2(sender));
            }
            let sender = self.open_http2().await?;
            *self.shared.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender.clone());
            return Ok(Sender::Http2(sender));
        }
        // An idle connection whose last request is still uploading (the backend answered
        // before reading it all) is not ready: it stays idle, and is not waited for.
        let mut busy = Vec::new();
        let found = loop {
            let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match idle {
                Some(sender) if sender.is_closed() => {}
                Some(mut sender) => match sender.ready().now_or_never() {
                    Some(Ok(())) => break Some(sender),
                    Some(Err(_)) => {}
                    None => busy.push(sender),
                },
                None => break None,
            }
        };
        if !busy.is_empty() {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .append(&mut busy);
        }
        match found {
            Some(sender) => Ok(Sender::Http1(sender)),
            None => self.open_http1().await.map(Sender::Http1),
        }
    }

    /// Gives an HTTP/1.1 connection back once its last answer was read to the end.
    pub fn give_back(&self, sender: http1::SendRequest<Outgoing>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }

    async fn connect(&self) -> Result<Stream, SendError> {
        let mut connector = self.connector.clone();
        connector
            .call(self.uri.clone())
            .await
            .map_err(|e| SendError::Connect(error_chain(&*e)))
    }

    async fn open_http1(&self) -> Result<http1::SendRequest<Outgoing>, SendError> {
        let stream = self.connect().await?;
        let (sender, connection) = http1::handshake(stream)
            .await
            .map_err(|e| SendError::Connect(error_chain(&e)))?;
        drive(connection);
        Ok(sender)
    }

    async fn open_http2(&self) -> Result<http2::SendRequest<Outgoing>, SendError> {
        let stream = self.connect().await?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(stream)
            .await
            .map_err(|e| SendError::Connect(error_chain(&e)))?;
        drive(connection);
        Ok(sender)
    }
}

/// A failed send: the client's fault when hyper says the request (its body) failed, else the
/// backend's.
fn failed(error: hyper::Error) -> SendError {
    if error.is_user() {
        let too_large = std::error::Error::source(&error)
            .is_some_and(|cause| cause.is::<http_body_util::LengthLimitError>());
        return SendError::Client { too_large };
    }
    SendError::Failed(error_chain(&error))
}

/// Runs a connection's I/O until it ends.
fn drive<C>(connection: C)
where
    C: std::future::Future<Output = hyper::Result<()>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "backend connection ended with an error");
        }
    });
}

impl Sender {
    /// Sends `request`; on an idle HTTP/1.1 connection the backend closed meanwhile (the
    /// request given back unsent), once more on a new connection.
    pub async fn send(
        &mut self,
        connections: &Connections,
        request: Request<Outgoing>,
    ) -> Result<Response<Incoming>, SendError> {
        match self {
            Sender::Http2(sender) => sender.send_request(request).await.map_err(failed),
            Sender::Http1(sender) => match sender.try_send_request(request).await {
                Ok(response) => Ok(response),
                Err(mut error) => match error.take_message() {
                    Some(request) => {
                        let mut fresh = match connections.open_http1().await {
                            Ok(fresh) => fresh,
                            Err(error) => {
                                let why = match error {
                                    SendError::Connect(why) => why,
                                    _ => "no new connection".to_owned(),
                                };
                                return Err(SendError::Unsent(why, Box::new(request)));
                            }
                        };
                        let answer = fresh.send_request(request).await.map_err(failed);
                        *sender = fresh;
                        answer
                    }
                    None => Err(failed(error.into_error())),
                },
            },
        }
    }
}
