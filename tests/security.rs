//! Authenticated ingest and rate limits, through a `fanout` binary built with the routes of
//! `tests/security/support.rs` (the contract's keys), against peers fanout did not write:
//! requests are signed by the official Standard Webhooks library for Python
//! (`tests/security/webhooks.py`, installed by `.ci/run`); GitHub and generic HMAC signatures
//! are computed by Python's own hmac module.

mod common;
#[path = "security/support.rs"]
mod support;

use common::blocking::metric_blocking;
use common::PATIENCE;
use std::io::Write;
use support::*;

#[test]
fn bearer_tokens_rotate_are_not_forwarded_and_bad_ones_spend_no_rate_limit() {
    let setup = start();
    let addr = setup.fanout.addr;
    let cases: [(&str, &[(&str, &str)]); 4] = [
        ("no token", &[]),
        ("a wrong token", &[("authorization", "Bearer token-three")]),
        (
            "a prefix of a token",
            &[("authorization", "Bearer token-on")],
        ),
        (
            "another scheme",
            &[("authorization", "Basic dG9rZW4tb25lOg==")],
        ),
    ];
    for (case, headers) in cases {
        let answer = post(addr, "/orders", headers, r#"{"order":0}"#);
        assert_unauthorized(&answer, case);
        assert_eq!(
            answer.header("www-authenticate"),
            Some("Bearer realm=\"fanout\"")
        );
    }
    assert_eq!(rejected(setup.admin, "orders", "unauthorized"), 4.0);
    let bearer = |token: &str, body: &str| post(addr, "/orders", &[("authorization", token)], body);
    let old = bearer("Bearer token-one", r#"{"order":1}"#).id();
    let new = bearer("bearer token-two", r#"{"order":2}"#).id();
    // The burst is 3: the bad tokens spent none of it.
    bearer("Bearer token-one", r#"{"order":3}"#).id();
    let limited = bearer("Bearer token-one", r#"{"order":4}"#);
    assert_eq!(limited.status, 429, "{limited:?}");
    let wait = limited
        .header("retry-after")
        .and_then(|s| s.parse::<u64>().ok());
    assert!(wait.is_some_and(|s| s > 1000), "{limited:?}");
    let logs = serde_json::to_string(&setup.fanout.log_messages()).expect("JSON");
    assert!(!logs.contains("token-"), "no token is logged: {logs}");
    let got = setup.receiver.wait_for("/orders", 3);
    let ids: Vec<&str> = got
        .iter()
        .filter_map(|g| g.header("fanout-event-id"))
        .collect();
    assert!(
        ids.contains(&old.as_str()) && ids.contains(&new.as_str()),
        "{ids:?}"
    );
    assert!(
        got.iter().all(|g| g.header("authorization").is_none()),
        "the client's token stays with fanout"
    );
}

#[test]
fn standard_webhooks_signed_by_the_library_are_accepted_and_tampering_is_refused() {
    let setup = start();
    let addr = setup.fanout.addr;
    let body = r#"{"type":"invoice.paid","n":1}"#;
    let (id, ts) = ("msg_2b7Yx0", now());
    let signature = standard_signature(id, ts, body);
    let ts_text = ts.to_string();
    let signed = |id: &'static str, ts: &str, signature: &str, body: &str| {
        let headers = [
            ("webhook-id", id),
            ("webhook-timestamp", ts),
            ("webhook-signature", signature),
        ];
        post(addr, "/hooks/svix", &headers, body)
    };
    // Tampered: the body, the id, the timestamp, the signature; and a signature that is right
    // for a timestamp outside the tolerance, either way.
    let cases = [
        (
            "body",
            signed(
                "msg_2b7Yx0",
                &ts_text,
                &signature,
                r#"{"type":"invoice.paid","n":2}"#,
            ),
        ),
        ("id", signed("msg_2b7Yx1", &ts_text, &signature, body)),
        (
            "timestamp",
            signed("msg_2b7Yx0", &(ts + 1).to_string(), &signature, body),
        ),
        (
            "signature",
            signed(
                "msg_2b7Yx0",
                &ts_text,
                &signature.replacen("v1,", "v1,A", 1),
                body,
            ),
        ),
        (
            "no signature",
            post(
                addr,
                "/hooks/svix",
                &[("webhook-id", id), ("webhook-timestamp", &ts_text)],
                body,
            ),
        ),
    ];
    for (case, answer) in &cases {
        assert_unauthorized(answer, case);
    }
    for stale in [ts - 600, ts + 600] {
        let stale_signature = standard_signature("msg_stale", stale, body);
        assert_unauthorized(
            &signed("msg_stale", &stale.to_string(), &stale_signature, body),
            "a timestamp 10 minutes off",
        );
    }
    let first = signed("msg_2b7Yx0", &ts_text, &signature, body);
    let first_id = first.id();
    // A replay of the same message within the tolerance: the first event's id, not taken in
    // again.
    let replay = signed("msg_2b7Yx0", &ts_text, &signature, body);
    assert_eq!(replay.id(), first_id, "{replay:?}");
    // A signature among several (a sender rotating its secret) is enough.
    let (other, other_ts) = ("msg_rotation", now());
    let rotated = format!(
        "v1,bm90LXRoZS1zaWduYXR1cmU= {}",
        standard_signature(other, other_ts, body)
    );
    let second = signed("msg_rotation", &other_ts.to_string(), &rotated, body).id();
    let got = setup.receiver.wait_for("/svix", 2);
    assert_eq!(
        metric_blocking(
            setup.admin,
            "fanout_events_accepted_total",
            &[("route", "from-svix")]
        ),
        2.0
    );
    assert_eq!(
        metric_blocking(
            setup.admin,
            "fanout_events_duplicate_total",
            &[("route", "from-svix")]
        ),
        1.0
    );
    assert_eq!(rejected(setup.admin, "from-svix", "unauthorized"), 7.0);
    let ids: Vec<&str> = got
        .iter()
        .filter_map(|g| g.header("fanout-event-id"))
        .collect();
    assert_eq!(ids.iter().filter(|i| **i == first_id).count(), 1, "{ids:?}");
    assert!(ids.contains(&second.as_str()));
    assert!(
        got.iter()
            .all(|g| g.body == body && g.header("webhook-signature").is_none()),
        "the sender's signature is not forwarded: {got:?}"
    );
}

#[test]
fn a_durable_route_remembers_webhook_ids_across_a_restart() {
    let data_dir = common::scratch_dir("security-restart");
    let body = r#"{"type":"order.created"}"#;
    let (id, ts) = ("msg_durable", now());
    let signature = standard_signature(id, ts, body);
    let ts = ts.to_string();
    let headers = [
        ("webhook-id", id),
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", signature.as_str()),
    ];
    let mut first = start_in(&data_dir);
    let event = post(first.fanout.addr, "/hooks/durable", &headers, body).id();
    first.receiver.wait_for("/durable", 1);
    assert!(first.fanout.terminate().success());
    let second = start_in(&data_dir);
    let replay = post(second.fanout.addr, "/hooks/durable", &headers, body);
    assert_eq!(replay.id(), event, "{replay:?}");
    let route = [("route", "durable-hooks")];
    assert_eq!(
        metric_blocking(second.admin, "fanout_events_accepted_total", &route),
        0.0
    );
    assert_eq!(
        metric_blocking(second.admin, "fanout_events_duplicate_total", &route),
        1.0
    );
}

#[test]
fn github_and_generic_hmac_signatures_computed_elsewhere_are_accepted() {
    let setup = start();
    let addr = setup.fanout.addr;
    let body = r#"{"action":"opened","number":7}"#;
    let hex = python(&["hmac", GITHUB_SECRET, "hex"], body);
    let github = format!("sha256={hex}");
    let id = post(
        addr,
        "/hooks/github",
        &[("x-hub-signature-256", &github)],
        body,
    )
    .id();
    for (case, header) in [
        (
            "a wrong signature",
            format!("sha256={}", python(&["hmac", "other", "hex"], body)),
        ),
        ("no prefix", hex.clone()),
        ("not hex", "sha256=zz".to_owned()),
    ] {
        assert_unauthorized(
            &post(
                addr,
                "/hooks/github",
                &[("x-hub-signature-256", &header)],
                body,
            ),
            case,
        );
    }
    assert_unauthorized(
        &post(
            addr,
            "/hooks/github",
            &[("x-hub-signature-256", &github)],
            "{}",
        ),
        "another body",
    );
    let got = setup.receiver.wait_for("/github", 1);
    assert_eq!(got[0].header("fanout-event-id"), Some(id.as_str()));
    assert!(got[0].header("x-hub-signature-256").is_none());

    let custom = format!("sha256={}", python(&["hmac", CUSTOM_SECRET, "hex"], body));
    post(addr, "/hooks/custom", &[("X-Signature", &custom)], body).id();
    assert_unauthorized(
        &post(addr, "/hooks/custom", &[("X-Signature", &github)], body),
        "another secret",
    );
    let base64 = python(&["hmac", CUSTOM_SECRET, "base64"], body);
    post(
        addr,
        "/hooks/custom64",
        &[("x-payload-signature", &base64)],
        body,
    )
    .id();
    let unpadded = base64.trim_end_matches('=');
    post(
        addr,
        "/hooks/custom64",
        &[("x-payload-signature", unpadded)],
        body,
    )
    .id();
    let hexed = [("x-payload-signature", hex.as_str())];
    assert_unauthorized(
        &post(addr, "/hooks/custom64", &hexed, body),
        "hex where base64 is due",
    );
}

#[test]
fn a_burst_beyond_the_rate_limit_gets_429_and_every_accepted_event_is_delivered_signed() {
    let setup = start();
    let addr = setup.fanout.addr;
    let signed: Vec<(String, String)> = (0..30)
        .map(|n| {
            let body = format!(r#"{{"n":{n}}}"#);
            let signature = format!("sha256={}", python(&["hmac", CUSTOM_SECRET, "hex"], &body));
            (body, signature)
        })
        .collect();
    let mut accepted = Vec::new();
    let mut limited = 0;
    for (body, signature) in &signed {
        let answer = post(addr, "/hooks/custom", &[("x-signature", signature)], body);
        match answer.status {
            202 => accepted.push(answer.id()),
            429 => {
                limited += 1;
                let wait: u64 = answer
                    .header("retry-after")
                    .expect("Retry-After")
                    .parse()
                    .expect("seconds");
                assert!((1..=2).contains(&wait), "{answer:?}");
            }
            _ => panic!("{answer:?}"),
        }
    }
    // Refused before the body is read: the head alone (a body announced, never sent) gets it.
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("a timeout");
    let head = "POST /hooks/custom HTTP/1.1\r\nhost: x\r\nx-signature: sha256=00\r\ncontent-length: 1000\r\n\r\n";
    stream.write_all(head.as_bytes()).expect("write");
    let mut answer = [0u8; 64];
    let n = std::io::Read::read(&mut stream, &mut answer).expect("an answer without the body");
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 429"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    // A burst of 10, refilled at 5 a second: 30 requests in a few milliseconds.
    assert!(
        accepted.len() >= 10 && limited >= 10,
        "{} accepted, {limited} limited",
        accepted.len()
    );
    assert_eq!(
        rejected(setup.admin, "custom", "rate_limited"),
        limited as f64 + 1.0,
        "the loop's and the head's"
    );
    let got = setup.receiver.wait_for("/crm", accepted.len());
    for id in &accepted {
        let delivery = got
            .iter()
            .find(|g| g.header("fanout-event-id") == Some(id.as_str()))
            .expect("delivered");
        assert!(
            delivery.verified,
            "the library refused a delivery: {delivery:?}"
        );
        assert_eq!(delivery.header("webhook-id"), Some(id.as_str()));
    }
}

#[test]
fn a_missing_or_bad_secret_stops_start_up_with_exit_code_2_and_is_never_shown() {
    let (code, stderr) = start_up("GITHUB_SECRET", &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("route \"from-github\"") && stderr.contains("GITHUB_SECRET is not set"),
        "{stderr}"
    );
    let (code, stderr) = start_up("CRM_SIGNING_SECRET", &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("target \"crm\"")
            && stderr.contains("sign.secrets")
            && stderr.contains("CRM_SIGNING_SECRET"),
        "{stderr}"
    );
    let (code, stderr) = start_up("", &[("SVIX_SECRET", "whsec_not base64")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("route \"from-svix\"") && stderr.contains("auth.standard_webhooks.secrets"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("not base64"),
        "the value is never shown: {stderr}"
    );
    let (code, stderr) = start_up("", &[("ORDERS_TOKEN", "token-one\n")]);
    assert_eq!(code, Some(2), "a token no client can send: {stderr}");
    assert!(
        stderr.contains("auth.bearer") && !stderr.contains("token-one"),
        "{stderr}"
    );
}
