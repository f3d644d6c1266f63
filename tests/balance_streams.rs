//! What streams through a balance route: 100 MiB bodies both ways with fanout's memory flat,
//! and gRPC calls of every kind with their trailers (grpcio on both ends), or a gRPC status
//! from fanout itself when no backend can take them.

mod common;
#[path = "balance/support.rs"]
mod support;

use std::process::Command;

use common::blocking::metric_blocking;
use common::ReservedPort;
use support::{curl, Backend, GRPC};

const HUNDRED_MIB: u64 = 100 * 1024 * 1024;

#[test]
fn a_100_mib_upload_and_download_stream_through_with_memory_flat() {
    if !support::stack("http.server") {
        return;
    }
    let worker = Backend::worker("w1");
    let dead = ReservedPort::new();
    let (w1, dead_addr) = (worker.addr(), dead.addr.to_string());
    let env = [("W1", w1.as_str()), ("W2", &dead_addr), ("W3", &dead_addr)];
    let env = [
        &env[..],
        &[("DEAD", &dead_addr), ("P1", &dead_addr), ("P2", &dead_addr)],
    ]
    .concat();
    let fanout = support::fanout(&env);
    let addr = fanout.addr;
    // A warm-up request, so the peak below counts only what streaming costs.
    assert_eq!(curl(&[&format!("http://{addr}/big/x")]).status, 200);
    let before = fanout.peak_rss_kib().expect("fanout's VmHWM");

    let file = common::scratch_dir("upload").join("100MiB");
    let sized = std::fs::File::create(&file).expect("create the upload file");
    sized.set_len(HUNDRED_MIB).expect("size the upload file");
    let upload = curl(&[
        "-H",
        "content-type: application/octet-stream",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("http://{addr}/big/upload"),
    ]);
    assert_eq!(upload.status, 200, "{}", upload.body);
    assert_eq!(
        upload.json()["bytes"],
        HUNDRED_MIB,
        "every byte reached the backend"
    );

    let download = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "60",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
        ])
        .arg(format!("http://{addr}/big/download/{HUNDRED_MIB}"))
        .output()
        .expect("curl runs");
    let written = String::from_utf8_lossy(&download.stdout).into_owned();
    assert_eq!(
        written,
        format!("200 {HUNDRED_MIB}"),
        "every byte reached the client"
    );

    let peak = fanout.peak_rss_kib().expect("fanout's VmHWM");
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 32 * 1024,
        "fanout's peak memory grew by {grown} KiB while 200 MiB streamed through"
    );
}

#[test]
fn a_streamed_body_over_max_body_is_refused_and_not_held_against_the_backend() {
    if !support::stack("http.server") {
        return;
    }
    let (w1, w2) = (Backend::worker("w1"), Backend::worker("w2"));
    let dead = ReservedPort::new();
    let (a1, a2, dead_addr) = (w1.addr(), w2.addr(), dead.addr.to_string());
    let env = [
        ("W1", a1.as_str()),
        ("W2", &a2),
        ("W3", &dead_addr),
        ("DEAD", &dead_addr),
    ];
    let env = [&env[..], &[("P1", &dead_addr), ("P2", &dead_addr)]].concat();
    let fanout = support::fanout(&env);
    let file = common::scratch_dir("over-max-body").join("100KiB");
    std::fs::write(&file, vec![b'x'; 100 * 1024]).expect("write the upload");
    let url = format!("http://{}/random/upload", fanout.addr);
    let upload = |times: usize| {
        for _ in 0..times {
            let answer = curl(&[
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                &format!("@{}", file.display()),
                &url,
            ]);
            assert_eq!(
                answer.status, 413,
                "route max_body is 64KiB: {}",
                answer.body
            );
        }
    };
    // More than the backends' `failures` (5) in a row: were they counted, both would go.
    upload(12);
    let addr = fanout.addr;
    let route = [("route", "random"), ("reason", "body_too_large")];
    assert_eq!(
        metric_blocking(addr, "fanout_events_rejected_total", &route),
        12.0
    );
    for target in ["w1", "w2"] {
        let labels = [("route", "random"), ("target", target)];
        assert_eq!(
            metric_blocking(addr, "fanout_backend_ejections_total", &labels),
            0.0
        );
        assert_eq!(
            metric_blocking(addr, "fanout_backend_healthy", &labels),
            1.0
        );
    }
    let small = curl(&["--data", "{}", &url]);
    assert_eq!(small.status, 200, "{}", small.body);
}

/// Runs grpc_echo.py `mode` against `addr`; its JSON output.
fn grpc_client(mode: &str, addr: std::net::SocketAddr) -> serde_json::Value {
    let output = Command::new("python3")
        .args([GRPC, mode, &addr.to_string()])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the client prints JSON")
}

#[test]
fn grpc_calls_of_every_kind_pass_through_with_their_trailers() {
    if !support::stack("grpc") {
        return;
    }
    let (mut p1, p2) = (Backend::grpc("p1"), Backend::grpc("p2"));
    let dead = ReservedPort::new();
    let dead_addr = dead.addr.to_string();
    let (a1, a2) = (p1.addr(), p2.addr());
    let env = [
        ("P1", a1.as_str()),
        ("P2", a2.as_str()),
        ("W1", &dead_addr),
        ("W2", &dead_addr),
    ];
    let env = [&env[..], &[("W3", &dead_addr), ("DEAD", &dead_addr)]].concat();
    let fanout = support::fanout(&env);
    let seen = grpc_client("call", fanout.addr);
    assert_eq!(seen["echo"], "p1:hi", "{seen}");
    assert_eq!(seen["echo_trailers"]["x-served-by"], "p1");
    assert_eq!(
        seen["fail"],
        serde_json::json!(["INVALID_ARGUMENT", "bad input: 100%"])
    );
    assert_eq!(seen["repeat"], serde_json::json!(["p1:r", "p1:r", "p1:r"]));
    assert_eq!(seen["count"], "4");
    assert_eq!(
        seen["chat"],
        serde_json::json!(["p1:one", "p1:two", "p1:three"])
    );
    assert_eq!(seen["chat_trailers"]["x-served-by"], "p1");
    assert_eq!(
        seen["other"], "p2:hi",
        "x-action: other takes the other route"
    );
    assert_eq!(seen["unrouted"][0], "UNIMPLEMENTED", "{seen}");

    p1.kill();
    let failed = grpc_client("unavailable", fanout.addr);
    assert_eq!(failed[0], "UNAVAILABLE", "{failed}");
    assert!(
        failed[1].as_str().unwrap_or_default().contains("p1"),
        "{failed}"
    );
}
