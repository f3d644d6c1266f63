//! What tests/durable_fsync.rs, tests/durable_letters.rs and tests/idempotency.rs share: a
//! `fanout` binary built with [`ROUTES`], one durable route per `fsync` policy, a route whose
//! target gives up fast, one whose events expire, and a memory route with a short
//! `Idempotency-Key` window.
#![allow(dead_code)] // each test binary uses part of it

use std::path::PathBuf;
use std::sync::OnceLock;

pub const ROUTES: &str = r#"# Written by tests/durable/policies.rs and built.
server:
  metrics_log_interval: 0s
defaults:
  storage: disk
  timeout: 2s
  retry: { attempts: 3, backoff: 10ms, max_backoff: 20ms }
  breaker: { failures: 1000, cooldown: 10ms, max_cooldown: 10ms }
routes:
  - name: always
    path: /always
    fsync: always
    targets:
      - name: sink
        url: http://${TARGET}/always
  - name: periodic
    path: /periodic
    fsync: 200ms
    targets:
      - name: sink
        url: http://${TARGET}/periodic
  - name: never
    path: /never
    fsync: never
    targets:
      - name: sink
        url: http://${TARGET}/never
  - name: aging
    path: /aging
    targets:
      - name: late
        url: http://${TARGET}/aging
        max_age: 2s
        retry: { attempts: 1000, backoff: 50ms, max_backoff: 100ms }
  - name: brief
    path: /brief
    storage: memory
    idempotency_window: 1s
    targets:
      - name: sink
        url: http://${TARGET}/brief
"#;

/// The period of route `periodic`.
pub const PERIOD: f64 = 0.2;

/// The binary, built once per test binary (a second build of the same file is a no-op).
pub fn binary() -> &'static PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            crate::common::built::fanout_with("durable-policies", ROUTES, &[]).map(|(b, _)| b)
        })
        .as_ref()
        .unwrap_or_else(|error| panic!("{error}"))
}
