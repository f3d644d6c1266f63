//! gRPC calls fanout itself answers (no healthy backend, every try failed, too slow, a
//! refusal of the gate): a gRPC status in a Trailers-Only answer (HTTP 200, `grpc-status`
//! and `grpc-message` in the head, no body), never a JSON body a gRPC client cannot read.
//! Statuses follow gRPC's HTTP-to-gRPC mapping, but a timeout is `DEADLINE_EXCEEDED`.

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use crate::ingress::answer::Answer;

/// Whether a request is a gRPC call (`content-type: application/grpc...`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// `answer` (one of fanout's JSON refusals) as a gRPC status.
pub fn status_of(answer: Answer) -> Answer {
    let code: u8 = match answer.status() {
        StatusCode::UNAUTHORIZED => 16, // UNAUTHENTICATED
        StatusCode::FORBIDDEN => 7,     // PERMISSION_DENIED
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => 12, // UNIMPLEMENTED
        StatusCode::PAYLOAD_TOO_LARGE => 8, // RESOURCE_EXHAUSTED
        StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => 4, // DEADLINE_EXCEEDED
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE => 14, // UNAVAILABLE
        StatusCode::BAD_REQUEST => 13,  // INTERNAL
        _ => 2,                         // UNKNOWN
    };
    // The body is whole already: reading it takes no wait.
    let body = answer.into_body().collect().now_or_never();
    let message = body
        .and_then(Result::ok)
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b.to_bytes()).ok())
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(u16::from(code)));
    if let Ok(message) = HeaderValue::from_str(&percent_encode(&message)) {
        headers.insert("grpc-message", message);
    }
    response
}

/// gRPC's `grpc-message` encoding: bytes outside printable ASCII, and `%`, as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_become_trailers_only_statuses() {
        let answer =
            crate::ingress::answer::error(StatusCode::SERVICE_UNAVAILABLE, "no backend: 100%");
        let grpc = status_of(answer);
        assert_eq!(grpc.status(), StatusCode::OK);
        assert_eq!(grpc.headers()["grpc-status"], "14");
        assert_eq!(grpc.headers()["grpc-message"], "no backend: 100%25");
        assert_eq!(grpc.headers()["content-type"], "application/grpc");
    }
}
