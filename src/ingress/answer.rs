//! Every answer fanout gives a client besides a 202's receipt: a short JSON
//! `{"error":"..."}` with the status, and the headers (`Retry-After`, `Connection: close`,
//! `Allow`, `WWW-Authenticate`) that tell the client what to do next.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use std::time::Duration;

use crate::auth::gate::Gate;

/// What a request gets back.
pub type Answer = Response<Full<Bytes>>;

const JSON: HeaderValue = HeaderValue::from_static("application/json");

pub fn not_found() -> Answer {
    error(StatusCode::NOT_FOUND, "no route for this path")
}

pub fn json(status: StatusCode, body: Bytes) -> Answer {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, JSON);
    response
}

/// `{"error":"<message>"}`.
pub fn error(status: StatusCode, message: &str) -> Answer {
    let mut body = String::with_capacity(message.len() + 12);
    body.push_str("{\"error\":\"");
    for c in message.chars() {
        match c {
            '"' => body.push_str("\\\""),
            '\\' => body.push_str("\\\\"),
            c if c.is_control() => body.push_str(&format!("\\u{:04x}", c as u32)),
            c => body.push(c),
        }
    }
    body.push_str("\"}");
    json(status, Bytes::from(body))
}

/// 405; `allow` lists the methods the path takes (`GET, HEAD`).
pub fn method_not_allowed(allow: HeaderValue) -> Answer {
    let listed = String::from_utf8_lossy(allow.as_bytes()).into_owned();
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("method not allowed; use {listed}"),
    );
    response.headers_mut().insert(ALLOW, allow);
    response
}

pub fn too_large(limit: u64) -> Answer {
    let response = error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the body is over this route's limit of {limit} bytes"),
    );
    // The rest of the body is not read, so the connection cannot carry another request.
    closing(response)
}

pub fn closing(mut response: Answer) -> Answer {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

pub fn retry_later(status: StatusCode, message: &str) -> Answer {
    let mut response = error(status, message);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

pub fn shutting_down() -> Answer {
    closing(retry_later(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting down; retry on another instance",
    ))
}

/// The same answer whatever was wrong: a missing or bad token, signature, id or timestamp.
pub fn unauthorized(gate: &Gate) -> Answer {
    let mut response = error(StatusCode::UNAUTHORIZED, "unauthorized");
    if let Some(challenge) = gate.challenge() {
        response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
    }
    response
}

pub fn rate_limited(wait: Duration) -> Answer {
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        "this route's rate limit is reached; retry later",
    );
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
}

pub fn over_budget() -> Answer {
    retry_later(
        StatusCode::SERVICE_UNAVAILABLE,
        "fanout holds as many events as its memory budget allows; retry later",
    )
}
