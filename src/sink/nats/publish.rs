//! One attempt of a NATS target: wait for the connection, check the size, publish (through
//! JetStream awaiting the PubAck, or core NATS awaiting the flush), and say how it went in the
//! terms every kind of target shares.

use std::sync::atomic::Ordering;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::HeaderMap;

use fanout_model::contract;

use super::{Client, Endpoint, Sink};
use crate::sink::parcel::Parcel;
use crate::sink::{Outcome, Why};
use crate::spec::{NatsAck, TargetSpec};

impl Sink<'_> {
    /// Publishes `parcel` as attempt `attempt`, within the target's `timeout`.
    pub async fn send(&mut self, parcel: &Parcel, attempt: u32) -> Outcome {
        let endpoint = self.endpoint;
        let timeout = endpoint.spec.delivery.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let client = endpoint.client().await;
        // Nothing is published while the client reconnects: async-nats would queue it and
        // send it once connected again, however late, even after this attempt gave up.
        let connected = endpoint.connected()
            || tokio::time::timeout_at(deadline, endpoint.until_connected())
                .await
                .is_ok();
        if !connected {
            let waited = timeout.as_millis();
            return retryable(format!("not connected to NATS within {waited}ms"));
        }
        let headers = headers(endpoint.spec, parcel, attempt, endpoint.nats.ack);
        let body = parcel.body.clone();
        // The server drops a connection that sends more than its `max_payload` (headers
        // included): refuse such an event here, for good, instead of publishing it again and
        // again.
        let max_payload = endpoint.max_payload().unwrap_or(0);
        let size = body.len() + headers_size(&headers);
        if max_payload > 0 && size > max_payload {
            return Outcome::Permanent(Why::Error(format!(
                "the message ({size} bytes with its headers) is larger than the server's \
                 max_payload ({max_payload} bytes)"
            )));
        }
        let published = tokio::time::timeout_at(deadline, publish(endpoint, client, headers, body));
        match published.await {
            Ok(Ok(())) => Outcome::Delivered,
            Ok(Err(PublishFailure::NoStream(error))) => no_stream(client, endpoint, error).await,
            Ok(Err(PublishFailure::Other(outcome))) => outcome,
            Err(_) => retryable(format!(
                "no acknowledgement from NATS within {}ms",
                timeout.as_millis()
            )),
        }
    }
}

/// Why a publish did not deliver.
enum PublishFailure {
    /// No responders to a JetStream publish: no stream, or none for a moment (a stream
    /// leader being elected).
    NoStream(async_nats::jetstream::context::PublishError),
    Other(Outcome),
}

/// Publishes once: through JetStream awaiting the PubAck, or core NATS awaiting the flush.
async fn publish(
    endpoint: &Endpoint,
    client: &Client,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Result<(), PublishFailure> {
    let subject = endpoint.nats.subject;
    match endpoint.nats.ack {
        NatsAck::Stream => {
            let ack = client
                .jetstream
                .publish_with_headers(subject, headers, body)
                .await
                .map_err(stream_error)?;
            ack.await.map(drop).map_err(stream_error)
        }
        NatsAck::None => {
            let failed =
                |e: &dyn std::fmt::Display| PublishFailure::Other(retryable(e.to_string()));
            let client = &client.client;
            let statistics = client.statistics();
            let connects = statistics.connects.load(Ordering::Relaxed);
            client
                .publish_with_headers(subject, headers, body)
                .await
                .map_err(|e| failed(&e))?;
            client.flush().await.map_err(|e| failed(&e))?;
            // A reconnect between the publish and the flush may have lost the message in
            // the old connection's buffer, and the flush then says nothing of it.
            if statistics.connects.load(Ordering::Relaxed) != connects {
                let why = "the connection to NATS was replaced while publishing";
                return Err(PublishFailure::Other(retryable(why.into())));
            }
            Ok(())
        }
    }
}

/// A JetStream publish nobody answered: permanent if no stream covers the subject, worth
/// another attempt if one does (its leader was being elected) or if that cannot be told.
async fn no_stream(
    client: &Client,
    endpoint: &Endpoint,
    error: async_nats::jetstream::context::PublishError,
) -> Outcome {
    use async_nats::jetstream::context::GetStreamByNameErrorKind;
    let lookup = client.jetstream.stream_by_subject(endpoint.nats.subject);
    let why = Why::Error(format!(
        "{error}: no stream takes subject \"{}\"",
        endpoint.nats.subject
    ));
    match lookup.await {
        Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => Outcome::Permanent(why),
        _ => Outcome::Retryable {
            why,
            retry_after: None,
        },
    }
}

/// The NATS headers of `parcel`: route, id(s), attempt, content type, and for a stream the
/// id again as `Nats-Msg-Id`.
fn headers(spec: &TargetSpec, parcel: &Parcel, attempt: u32, ack: NatsAck) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(contract::ROUTE, spec.route);
    let ids = parcel.ids.1.to_str().unwrap_or_default();
    headers.insert(parcel.ids.0.as_str(), ids);
    headers.insert(contract::ATTEMPT, attempt.to_string().as_str());
    if let Some(content_type) = parcel.content_type.as_ref().and_then(|v| v.to_str().ok()) {
        headers.insert("Content-Type", content_type);
    }
    if ack == NatsAck::Stream {
        headers.insert("Nats-Msg-Id", ids);
    }
    headers
}

/// The bytes `headers` take on the wire (`NATS/1.0`, each `name: value`, the blank line).
pub fn headers_size(headers: &HeaderMap) -> usize {
    let lines: usize = headers
        .iter()
        .map(|(name, values)| {
            let name: &str = name.as_ref();
            values
                .iter()
                .map(|v| name.len() + v.as_str().len() + 4)
                .sum::<usize>()
        })
        .sum();
    "NATS/1.0\r\n\r\n".len() + lines
}

/// What a failed JetStream publish means: no responders is looked into ([`no_stream`]); a
/// stream that refuses the message for what it is (over the stream's own size limit, or
/// sealed) is for good; anything else (no ack, a broken connection, a full store) is worth
/// another attempt.
fn stream_error(error: async_nats::jetstream::context::PublishError) -> PublishFailure {
    use async_nats::jetstream::ErrorCode;
    if error.kind() == PublishErrorKind::StreamNotFound {
        return PublishFailure::NoStream(error);
    }
    let source = std::error::Error::source(&error);
    let why = Why::Error(match source {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    });
    let refused = source
        .and_then(|source| source.downcast_ref::<async_nats::jetstream::Error>())
        .map(|refusal| refusal.error_code());
    match refused {
        Some(ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM | ErrorCode::STREAM_SEALED) => {
            PublishFailure::Other(Outcome::Permanent(why))
        }
        _ => PublishFailure::Other(Outcome::Retryable {
            why,
            retry_after: None,
        }),
    }
}

fn retryable(why: String) -> Outcome {
    Outcome::Retryable {
        why: Why::Error(why),
        retry_after: None,
    }
}
