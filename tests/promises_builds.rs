//! A `fanout` binary built with another routes file (`FANOUT_ROUTES`): start-up errors exit 2
//! with a message naming route, target and field and never a substituted secret, and the
//! binary never opens its routes file (it is deleted before the binary runs).

mod common;

use common::process::Fanout;
use common::{Reply, Target, PATIENCE};
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The routes compiled into the binary under test. `receiver` carries two variables in its
/// url (the second one stands for a secret); `secure` has one in a header value and one in its
/// CA file.
const ROUTES: &str = r#"# Written by tests/promises_builds.rs, built, then deleted.
server:
  metrics_log_interval: 0s
defaults:
  timeout: 2s
  retry: { attempts: 1 }
routes:
  - name: built
    path: /built
    targets:
      - name: receiver
        url: http://${PROMISES_RECEIVER}/in?key=${PROMISES_KEY}
      - name: secure
        url: https://localhost:9/in
        headers: { X-Token: "Bearer ${PROMISES_TOKEN}" }
        ca_file: ${PROMISES_CA}
"#;

/// Every variable the routes name.
const VARIABLES: [&str; 4] = [
    "PROMISES_RECEIVER",
    "PROMISES_KEY",
    "PROMISES_TOKEN",
    "PROMISES_CA",
];

const RECEIVER_URL: &str = "http://${PROMISES_RECEIVER}/in?key=${PROMISES_KEY}";

struct Built {
    binary: PathBuf,
    /// Where the routes file was when the binary was built; deleted since.
    routes: PathBuf,
    /// A CA file the `secure` target can read.
    ca_file: PathBuf,
    dir: PathBuf,
}

/// Builds the binary once for every test of this file.
fn built() -> &'static Built {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    BUILT
        .get_or_init(build)
        .as_ref()
        .unwrap_or_else(|error| panic!("{error}"))
}

fn build() -> Result<Built, String> {
    let (binary, routes) = common::built::fanout_with("promises-build", ROUTES, &[])?;
    fs::remove_file(&routes).map_err(|e| format!("delete {}: {e}", routes.display()))?;
    let dir = routes
        .parent()
        .expect("the routes file is in a directory")
        .to_owned();

    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .map_err(|e| format!("make a certificate: {e}"))?;
    let ca_file = dir.join("ca.pem");
    fs::write(&ca_file, certified.cert.pem()).map_err(|e| format!("write the CA: {e}"))?;
    Ok(Built {
        binary,
        routes,
        ca_file,
        dir,
    })
}

/// Runs the built binary, which must stop on its own; returns its exit code and stderr.
fn start_up_failure(env: &[(&str, String)]) -> (Option<i32>, String) {
    let built = built();
    let mut command = Command::new(&built.binary);
    for variable in VARIABLES {
        command.env_remove(variable);
    }
    let child = command
        .args(["--listen", "127.0.0.1:0"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the built fanout");
    let pid = child.id().to_string();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let output = match finished.recv_timeout(PATIENCE) {
        Ok(output) => output.expect("wait for fanout"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("fanout did not stop on its own");
        }
    };
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_built_binary_carries_the_other_routes() {
    let built = built();
    let output = Command::new(&built.binary)
        .arg("--routes")
        .output()
        .expect("run --routes");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{table}");
    assert!(table.contains("route built  POST /built"), "{table}");
    assert!(table.contains(RECEIVER_URL), "{table}");
    assert!(!table.contains("route demo"), "{table}");
}

#[test]
fn a_missing_variable_stops_start_up_naming_route_target_field_and_variable() {
    let built = built();
    let set = [
        ("PROMISES_RECEIVER", "127.0.0.2:4567".to_owned()),
        ("PROMISES_KEY", "key-s3cr3t".to_owned()),
        ("PROMISES_TOKEN", "token-s3cr3t".to_owned()),
        ("PROMISES_CA", built.ca_file.display().to_string()),
    ];
    for (missing, target, field) in [
        ("PROMISES_KEY", "receiver", "url"),
        ("PROMISES_TOKEN", "secure", "header X-Token"),
        ("PROMISES_CA", "secure", "ca_file"),
    ] {
        let env: Vec<(&str, String)> = set
            .iter()
            .filter(|(name, _)| *name != missing)
            .cloned()
            .collect();
        let (code, stderr) = start_up_failure(&env);
        assert_eq!(code, Some(2), "without {missing}: {stderr}");
        let placeholder = format!("${{{missing}}}");
        for part in [
            "route \"built\"",
            &format!("target \"{target}\""),
            field,
            &placeholder,
        ] {
            assert!(
                stderr.contains(part),
                "without {missing}, the message lacks {part}: {stderr}"
            );
        }
        if field == "url" {
            assert!(
                stderr.contains(RECEIVER_URL),
                "the url is shown as written: {stderr}"
            );
        }
        for (_, value) in &set[..3] {
            assert!(
                !stderr.contains(value.as_str()),
                "no substituted value is shown: {stderr}"
            );
        }
    }
}

#[test]
fn an_invalid_url_is_reported_as_written_without_the_secret_in_it() {
    let built = built();
    let (code, stderr) = start_up_failure(&[
        ("PROMISES_RECEIVER", "127.0.0.1:1".to_owned()),
        ("PROMISES_KEY", "s3cr3t not a url".to_owned()),
        ("PROMISES_TOKEN", "t".to_owned()),
        ("PROMISES_CA", built.ca_file.display().to_string()),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    for part in ["route \"built\"", "target \"receiver\"", RECEIVER_URL] {
        assert!(stderr.contains(part), "the message lacks {part}: {stderr}");
    }
    assert!(!stderr.contains("s3cr3t"), "the secret leaked: {stderr}");
}

#[test]
fn an_unreadable_ca_file_stops_start_up() {
    let built = built();
    let not_pem = built.dir.join("not-a-certificate.pem");
    fs::write(&not_pem, "this is not a certificate\n").unwrap();
    for ca_file in [built.dir.join("missing.pem"), not_pem] {
        let (code, stderr) = start_up_failure(&[
            ("PROMISES_RECEIVER", "127.0.0.1:1".to_owned()),
            ("PROMISES_KEY", "k".to_owned()),
            ("PROMISES_TOKEN", "t".to_owned()),
            ("PROMISES_CA", ca_file.display().to_string()),
        ]);
        assert_eq!(code, Some(2), "{}: {stderr}", ca_file.display());
        for part in ["route \"built\"", "target \"secure\"", "ca_file"] {
            assert!(stderr.contains(part), "the message lacks {part}: {stderr}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_never_opens_its_routes_file() {
    let built = built();
    assert!(!built.routes.exists(), "the routes file was deleted");
    let target = Target::start(Reply::Status(200)).await;
    let receiver = target.addr.to_string();
    let ca_file = built.ca_file.display().to_string();
    let mut fanout = Fanout::start_with(
        built.binary.to_str().expect("a UTF-8 path"),
        &[],
        &[
            ("PROMISES_RECEIVER", &receiver),
            ("PROMISES_KEY", "k"),
            ("PROMISES_TOKEN", "t"),
            ("PROMISES_CA", &ca_file),
        ],
    );
    let id = common::post(fanout.addr, "/built", "{\"built\":1}", "application/json")
        .await
        .id();
    let received = target.wait_for(1).await;
    assert_eq!(received[0].path, "/in");
    assert_eq!(received[0].header("fanout-event-id"), id);
    assert_eq!(received[0].header("fanout-route"), "built");
    assert_eq!(received[0].body_text(), "{\"built\":1}");
    assert!(fanout.terminate().success());
}
