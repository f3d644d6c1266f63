//! Signed deliveries verified by the official Standard Webhooks library, the admin listener,
//! and dead letters replayed through a guarded route, through the `fanout` binary built with
//! `tests/security/support.rs`'s routes.

mod common;
#[path = "security/support.rs"]
mod support;

use common::blocking::{http_once, metric_blocking};
use common::PATIENCE;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

#[test]
fn deliveries_signed_with_two_secrets_and_batches_verify_with_the_library() {
    let setup = start();
    let addr = setup.fanout.addr;
    let ids: Vec<String> = (0..5)
        .map(|n| post(addr, "/signed", &[], &format!(r#"{{"n":{n}}}"#)).id())
        .collect();
    let rotating = setup.receiver.wait_for("/rotating", 5);
    for delivery in &rotating {
        assert!(delivery.verified, "{delivery:?}");
        let signatures = delivery.header("webhook-signature").expect("a signature");
        assert_eq!(
            signatures
                .split(' ')
                .filter(|s| s.starts_with("v1,"))
                .count(),
            2,
            "{signatures}"
        );
        let timestamp: u64 = delivery
            .header("webhook-timestamp")
            .expect("a timestamp")
            .parse()
            .expect("seconds");
        assert!(now().abs_diff(timestamp) < 60);
    }
    // Every batch request until each id has come; each one checked, not only the first seen.
    let deadline = Instant::now() + PATIENCE;
    let batches = loop {
        let batches = setup.receiver.wait_for("/batched", 1);
        let batched: Vec<&str> = batches
            .iter()
            .flat_map(|g| g.header("fanout-event-ids").expect("batch ids").split(','))
            .collect();
        if ids.iter().all(|id| batched.contains(&id.as_str())) {
            break batches;
        }
        assert!(Instant::now() < deadline, "batched ids: {batched:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    for batch in &batches {
        assert!(batch.verified, "{batch:?}");
        assert!(
            batch
                .header("webhook-id")
                .is_some_and(|id| id.starts_with("batch_")),
            "{batch:?}"
        );
        assert!(batch.error.is_none());
    }
}

#[test]
fn metrics_and_health_move_to_the_admin_listener() {
    let setup = start();
    for path in ["/metrics", "/healthz"] {
        let ingest = http_once(setup.fanout.addr, "GET", path, &[], b"").expect("answers");
        assert_eq!(ingest.status, 404, "{path} on the ingest port: {ingest:?}");
        let admin = http_once(setup.admin, "GET", path, &[], b"").expect("answers");
        assert_eq!(admin.status, 200, "{path} on the admin port: {admin:?}");
    }
    // curl keeps one connection for two requests to the admin port, as a scraper does.
    let url = format!("http://{}", setup.admin);
    let curl = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} ",
        ])
        .arg(format!("{url}/healthz"))
        .arg(format!("{url}/metrics"))
        .output()
        .expect("curl is installed (.ci/run installs it)");
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "200 200 ");
    let routes = Command::new(binary())
        .arg("--routes")
        .output()
        .expect("run --routes");
    let listing = String::from_utf8_lossy(&routes.stdout);
    assert!(
        listing.contains("admin_listen=127.0.0.1:9100") && listing.contains("auth: bearer"),
        "{listing}"
    );
    // Secrets are listed as counts, as written never: a signing target shows how many.
    assert!(listing.contains("sign: secrets=2"), "{listing}");
    assert!(!listing.contains("whsec_"), "{listing}");
}

#[test]
fn dead_letters_replayed_through_a_guarded_route_authenticate_as_its_clients_do() {
    let data_dir = common::scratch_dir("security-replay");
    let setup = start_in(&data_dir);
    let token = [("authorization", "Bearer token-one")];
    post(setup.fanout.addr, "/guarded", &token, r#"{"lost":1}"#).id();
    let dead = [("route", "guarded"), ("target", "dead")];
    let deadline = Instant::now() + PATIENCE;
    while metric_blocking(setup.admin, "fanout_lane_dead_letters_total", &dead) < 1.0 {
        assert!(Instant::now() < deadline, "no dead letter");
        std::thread::sleep(Duration::from_millis(10));
    }
    let via = format!("http://{}", setup.fanout.addr);
    let output = Command::new(binary())
        .args([
            "dead-letters",
            "replay",
            "--route",
            "guarded",
            "--target",
            "dead",
            "--via",
            &via,
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .envs(setup.env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run the replay");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 replayed, 0 left"),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let route = [("route", "guarded")];
    assert_eq!(
        metric_blocking(setup.admin, "fanout_events_accepted_total", &route),
        2.0
    );
    assert_eq!(rejected(setup.admin, "guarded", "unauthorized"), 0.0);
}
