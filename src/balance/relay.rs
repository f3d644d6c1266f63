//! A backend's answer body on its way to the client, frame by frame as it arrives (data and
//! trailers alike): memory stays bounded by hyper's buffers and flow control whatever the
//! size. It counts the request in flight on its backend until it ends, keeps the client
//! connection from being closed as idle meanwhile, and gives an HTTP/1.1 backend connection
//! back for the next request once read to the end.

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::backend::Backend;
use super::connections::Outgoing;
use crate::ingress::connection::Busy;

/// What a request gets back: an answer made whole by fanout (a 202, a refusal), or a
/// backend's relayed.
pub type Reply = Either<Full<Bytes>, Relay>;

/// A request counted in flight on a backend while it lives.
pub struct InFlight(Arc<Backend>);

impl InFlight {
    pub fn begin(backend: &Arc<Backend>) -> InFlight {
        backend.metrics.in_flight.inc();
        InFlight(backend.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.in_flight.dec();
    }
}

pub struct Relay {
    body: Incoming,
    in_flight: InFlight,
    /// The HTTP/1.1 connection the answer came on, given back once the body is whole.
    connection: Option<http1::SendRequest<Outgoing>>,
    /// The client connection's request under way, for its idle check.
    busy: Option<Busy>,
}

impl Relay {
    pub fn new(
        body: Incoming,
        in_flight: InFlight,
        connection: Option<http1::SendRequest<Outgoing>>,
    ) -> Relay {
        Relay {
            body,
            in_flight,
            connection,
            busy: None,
        }
    }

    /// Keeps the client connection busy until the body ends.
    pub fn hold(&mut self, busy: Busy) {
        self.busy = Some(busy);
    }

    fn finished(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.in_flight.0.connections.give_back(connection);
        }
    }
}

impl Body for Relay {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.finished();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // An answer with no body (HEAD, 204, 304) is never polled: it is whole already.
        if self.body.is_end_stream() {
            self.finished();
        }
    }
}
