//! Reading a client's request body whole, within a size limit and a time limit: what ingest
//! does with every event, and a balance route with a body small enough to keep for another
//! try (or one whose signature must be checked first); and the answer when it cannot be.

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use std::future::{poll_fn, Future};
use std::task::Poll;
use std::time::Duration;

use hyper::StatusCode;

use crate::ingress::answer::{closing, error, too_large, Answer};
use crate::metrics::{RejectReason, RouteMetrics};
use crate::spec::RouteSpec;

/// Why a body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum Unread {
    /// Over the limit (413).
    TooLarge,
    /// The client's stream failed (400).
    Unreadable,
    /// Not whole within the time limit (408).
    Timeout,
}

/// The whole body, at most `limit` bytes, within `patience`.
pub async fn read_whole(body: Incoming, limit: usize, patience: Duration) -> Result<Bytes, Unread> {
    let reading = Limited::new(body, limit).collect();
    tokio::pin!(reading);
    // Most bodies are whole by now: only one still arriving pays for a timer.
    let read = match poll_fn(|cx| Poll::Ready(reading.as_mut().poll(cx))).await {
        Poll::Ready(read) => read,
        Poll::Pending => tokio::time::timeout(patience, reading)
            .await
            .map_err(|_| Unread::Timeout)?,
    };
    match read {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(Unread::TooLarge),
        Err(_) => Err(Unread::Unreadable),
    }
}

/// The answer to a body that could not be read whole, counted.
pub fn unreadable(
    metrics: &RouteMetrics,
    spec: &RouteSpec,
    unread: Unread,
    patience: Duration,
) -> Answer {
    match unread {
        Unread::TooLarge => {
            metrics.rejected(RejectReason::BodyTooLarge).inc();
            too_large(spec.max_body)
        }
        Unread::Unreadable => {
            metrics.rejected(RejectReason::BodyUnreadable).inc();
            error(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            )
        }
        Unread::Timeout => {
            metrics.rejected(RejectReason::BodyTimeout).inc();
            let message = format!(
                "the body did not arrive within {}",
                humantime::format_duration(patience)
            );
            closing(error(StatusCode::REQUEST_TIMEOUT, &message))
        }
    }
}
