//! What a bad routes file makes the build say.
//!
//! Each `tests/ui/<what-is-wrong>.yaml` holds one mistake (or, for `several-mistakes`, several)
//! and `tests/ui/<what-is-wrong>.stderr` beside it holds what `fanout_model::load` reports for
//! it, which is what build.rs prints. Two kinds of test read these files:
//! - `messages_match_their_golden_files` compares the model's messages with the `.stderr` files;
//!   with `FANOUT_BLESS=1` it rewrites those that differ (and still fails), so a deliberate
//!   change of wording shows up in `git diff`;
//! - one test per case builds the `fanout` binary with the case as `FANOUT_ROUTES` and checks
//!   that the build stops with the same messages, naming the file by its absolute path.
//!
//! `another_routes_file_is_compiled_in` builds with a good alternative file and checks that the
//! binary carries its routes.
//!
//! The builds share a target directory of their own under `CARGO_TARGET_TMPDIR`, so the first
//! run compiles the binary's dependencies once more (a minute or two); later runs take seconds.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const UI: &str = "tests/ui";

/// Builds of the binary get a target directory of their own: the `cargo test` running this
/// file holds the lock of the outer one.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("routes-builds")
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The case names (`zero-buffer`), from the `.yaml` files in `tests/ui`, sorted.
fn ui_cases() -> BTreeSet<String> {
    fs::read_dir(UI)
        .expect("tests/ui exists (integration tests run in the package root)")
        .map(|entry| entry.expect("tests/ui can be listed").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .map(|path| stem(&path))
        .collect()
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .expect("a listed file has a name")
        .to_string_lossy()
        .into_owned()
}

/// What `load` reports for `yaml`, as build.rs prints it, plus a final newline; None if the
/// file loads.
fn reported(yaml: &Path) -> Option<String> {
    fanout_model::load(yaml)
        .err()
        .map(|errors| format!("{errors}\n"))
}

#[test]
fn messages_match_their_golden_files() {
    let cases = ui_cases();
    assert!(!cases.is_empty(), "no cases found in {UI}");
    let mut failures = Vec::new();
    for case in &cases {
        let yaml = Path::new(UI).join(format!("{case}.yaml"));
        let golden = yaml.with_extension("stderr");
        let Some(actual) = reported(&yaml) else {
            failures.push(format!(
                "{}: loads without errors, but every case must hold a mistake",
                yaml.display()
            ));
            continue;
        };
        let expected = fs::read_to_string(&golden).unwrap_or_default();
        if actual != expected {
            let what = if std::env::var_os("FANOUT_BLESS").is_some_and(|v| v == "1") {
                fs::write(&golden, &actual).expect("tests/ui is writable");
                "rewrote it, see `git diff`".to_owned()
            } else {
                format!("the model says:\n{actual}(FANOUT_BLESS=1 rewrites the file)")
            };
            failures.push(format!("{}: messages differ; {what}", golden.display()));
        }
    }
    let stale: Vec<String> = fs::read_dir(UI)
        .expect("tests/ui exists")
        .map(|entry| entry.expect("tests/ui can be listed").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "stderr"))
        .filter(|path| !cases.contains(&stem(path)))
        .map(|path| format!("{}: no .yaml beside it; delete it", path.display()))
        .collect();
    failures.extend(stale);
    assert!(failures.is_empty(), "\n{}\n", failures.join("\n"));
}

/// `cargo build` of the binary with `routes` compiled in.
fn build_with(routes: &Path) -> Output {
    Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--bin", "fanout"])
        .current_dir(manifest_dir())
        .env("FANOUT_ROUTES", routes)
        .env("CARGO_TARGET_DIR", target_dir())
        .env("CARGO_TERM_COLOR", "never")
        .output()
        .expect("cargo can be run")
}

/// Builds with `tests/ui/<case>.yaml` and checks that the build fails with the messages of
/// `tests/ui/<case>.stderr`, in order, naming the file by the absolute path it was given.
fn build_fails_with(case: &str) {
    let relative = format!("{UI}/{case}.yaml");
    let absolute = manifest_dir().join(&relative);
    let golden = manifest_dir().join(format!("{UI}/{case}.stderr"));
    let expected = fs::read_to_string(&golden)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", golden.display()))
        .replace(&relative, &absolute.display().to_string());
    let expected: Vec<&str> = expected.lines().collect();

    let output = build_with(&absolute);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the build accepted {}:\n{stderr}",
        absolute.display()
    );
    // Cargo indents what a build script prints.
    let mut printed = stderr.lines().map(str::trim_start);
    for line in &expected {
        assert!(
            printed.any(|printed| printed == *line),
            "the build of {case} did not print, in order,\n{}\n\nit printed:\n{stderr}",
            expected.join("\n")
        );
    }
    let summary = format!(
        "error: {} problem(s) in {}; fix them and build again",
        expected.len(),
        absolute.display()
    );
    assert!(
        stderr.lines().any(|line| line.trim_start() == summary),
        "the build of {case} did not end with `{summary}`:\n{stderr}"
    );
}

macro_rules! build_fails {
    ($($test:ident: $case:literal,)*) => {
        /// Every case that has a build test of its own.
        const BUILT: &[&str] = &[$($case),*];

        $(
            #[test]
            fn $test() {
                build_fails_with($case);
            }
        )*
    };
}

build_fails! {
    auth_two_schemes: "auth-two-schemes",
    bad_rate_limit: "bad-rate-limit",
    bad_signing: "bad-signing",
    bad_webhook_auth: "bad-webhook-auth",
    bad_admin_listen: "bad-admin-listen",
    yaml_syntax_error: "yaml-syntax-error",
    empty_file: "empty-file",
    unknown_top_level_field: "unknown-top-level-field",
    unknown_route_field: "unknown-route-field",
    unknown_target_field: "unknown-target-field",
    missing_routes: "missing-routes",
    empty_routes: "empty-routes",
    missing_route_path: "missing-route-path",
    missing_target_url: "missing-target-url",
    nats_malformed: "nats-malformed",
    nats_http_fields: "nats-http-fields",
    nats_without_subject: "nats-without-subject",
    nats_balance_backends: "nats-balance-backends",
    duplicate_route_names: "duplicate-route-names",
    duplicate_paths: "duplicate-paths",
    duplicate_target_names: "duplicate-target-names",
    route_names_same_identifier: "route-names-same-identifier",
    route_names_same_variant: "route-names-same-variant",
    target_names_same_identifier: "target-names-same-identifier",
    invalid_name_characters: "invalid-name-characters",
    invalid_target_name: "invalid-target-name",
    route_without_targets: "route-without-targets",
    target_not_a_mapping: "target-not-a-mapping",
    url_not_http: "url-not-http",
    url_without_host: "url-without-host",
    url_invalid_port: "url-invalid-port",
    zero_buffer: "zero-buffer",
    zero_concurrency: "zero-concurrency",
    zero_timeout: "zero-timeout",
    bad_fsync: "bad-fsync",
    disk_buffer_too_small: "disk-buffer-too-small",
    lane_settings_on_durable_route: "lane-settings-on-durable-route",
    zero_retry_attempts: "zero-retry-attempts",
    backoff_above_max_backoff: "backoff-above-max-backoff",
    retry_on_non_http_status: "retry-on-non-http-status",
    zero_breaker_failures: "zero-breaker-failures",
    max_cooldown_below_cooldown: "max-cooldown-below-cooldown",
    malformed_duration: "malformed-duration",
    malformed_size: "malformed-size",
    reserved_path_metrics: "reserved-path-metrics",
    reserved_path_healthz: "reserved-path-healthz",
    path_without_leading_slash: "path-without-leading-slash",
    bad_placeholder: "bad-placeholder",
    unclosed_placeholder: "unclosed-placeholder",
    reserved_header: "reserved-header",
    reserved_fanout_header: "reserved-fanout-header",
    connection_header: "connection-header",
    credentials_and_authorization: "credentials-and-authorization",
    buffer_bytes_below_max_body: "buffer-bytes-below-max-body",
    zero_max_connections: "zero-max-connections",
    invalid_listen_address: "invalid-listen-address",
    wrong_type: "wrong-type",
    unknown_overflow: "unknown-overflow",
    bad_default: "bad-default",
    bad_default_backoff: "bad-default-backoff",
    bad_default_batch: "bad-default-batch",
    balance_field_on_fanout: "balance-field-on-fanout",
    fanout_field_on_balance: "fanout-field-on-balance",
    weight_on_fanout: "weight-on-fanout",
    balance_target_retry: "balance-target-retry",
    zero_weight: "zero-weight",
    bad_method: "bad-method",
    bad_health: "bad-health",
    star_inside_path: "star-inside-path",
    prefix_covers_reserved: "prefix-covers-reserved",
    overlapping_prefixes: "overlapping-prefixes",
    overlapping_exact_paths_same_match: "overlapping-exact-paths-same-match",
    several_mistakes: "several-mistakes",
}

#[test]
fn every_case_has_a_build_test() {
    let built: BTreeSet<String> = BUILT.iter().map(|case| case.to_string()).collect();
    let cases = ui_cases();
    assert!(!cases.is_empty(), "no cases found in {UI}");
    assert_eq!(
        cases, built,
        "tests/ui and the build_fails! list differ: add the case to the list (or its file)"
    );
}

#[test]
fn another_routes_file_is_compiled_in() {
    let routes = manifest_dir().join("tests/routes/other.yaml");
    let output = build_with(&routes);
    assert!(
        output.status.success(),
        "the build refused {}:\n{}",
        routes.display(),
        String::from_utf8_lossy(&output.stderr)
    );

    let binary = target_dir()
        .join("debug")
        .join(format!("fanout{}", std::env::consts::EXE_SUFFIX));
    // `--routes` prints the table without resolving `${...}`, so SOME_TOKEN need not be set.
    let output = Command::new(&binary)
        .arg("--routes")
        .env_remove("SOME_TOKEN")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "fanout --routes failed:\n{table}");
    let lines: Vec<&str> = table.lines().collect();
    for expected in [
        "server  listen=127.0.0.1:8100 ",
        "route orders  POST /orders ",
        "  target billing  http://127.0.0.1:9101/orders",
        "    header Authorization: Bearer ${SOME_TOKEN}",
        "  target shipping  http://127.0.0.1:9102/orders",
        "  target audit  http://127.0.0.1:9103/log",
        "route leads  POST /leads ",
        "  target event  http://127.0.0.1:9104/leads",
    ] {
        assert!(
            lines.iter().any(|line| line.starts_with(expected)),
            "`fanout --routes` does not show `{expected}`:\n{table}"
        );
    }
    let route_lines = lines.iter().filter(|l| l.starts_with("route ")).count();
    let target_lines = lines.iter().filter(|l| l.starts_with("  target ")).count();
    assert_eq!(
        (route_lines, target_lines),
        (2, 4),
        "`fanout --routes` shows other routes than tests/routes/other.yaml:\n{table}"
    );
}
