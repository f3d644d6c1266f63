//! The TLS listener of the shipped binary (`--tls-cert`/`--tls-key`), with clients fanout did
//! not write: curl over HTTP/2 and HTTP/1.1 (ALPN), and Python's http.client keeping one
//! connection open while the certificate files are swapped and SIGHUP reloads them: new
//! connections get the new certificate, the open one keeps working. A client of TLS 1.1 only
//! (Python's ssl, shown able to complete a TLS 1.1 handshake elsewhere) gets fanout's
//! protocol_version alert. And `server.tls` in a routes file, its paths read from the
//! environment.

mod common;

use common::process::Fanout;
use common::{scratch_dir, PATIENCE};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A fresh self-signed certificate for `localhost` in `dir`: (cert.pem, key.pem) contents.
fn certificate() -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("make a certificate");
    (certified.cert.pem(), certified.key_pair.serialize_pem())
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// POSTs to `/demo` over https with curl trusting `ca`: (exit code, "<http version> <status>").
fn curl(fanout: &Fanout, ca: &Path, version: &str) -> (Option<i32>, String) {
    let port = fanout.addr.port();
    let output = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .arg(version)
        .arg("--cacert")
        .arg(ca)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args([
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"over":"tls"}"#,
        ])
        .arg(format!("https://localhost:{port}/demo"))
        .output()
        .expect("curl is installed (.ci/run installs it)");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

struct Files {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn files(cert: &str, key: &str) -> Files {
    let dir = scratch_dir("tls");
    let files = Files {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        dir,
    };
    write(&files.cert, cert);
    write(&files.key, key);
    files
}

/// Sends SIGHUP and waits until fanout logs `message`.
fn hang_up(fanout: &Fanout, message: &str) {
    let pid = fanout.child.id().to_string();
    let sent = Command::new("kill").args(["-HUP", &pid]).status();
    assert!(sent.expect("kill").success());
    let deadline = Instant::now() + PATIENCE;
    while !fanout
        .log_messages()
        .iter()
        .any(|line| line["fields"]["message"] == message)
    {
        assert!(
            Instant::now() < deadline,
            "no `{message}`: {:?}",
            fanout.log_messages()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn start(files: &Files) -> Fanout {
    let (cert, key) = (
        files.cert.display().to_string(),
        files.key.display().to_string(),
    );
    Fanout::start(&["--tls-cert", &cert, "--tls-key", &key])
}

#[test]
fn curl_speaks_http2_and_http11_over_tls() {
    let (cert, key) = certificate();
    let files = files(&cert, &key);
    let fanout = start(&files);
    assert_eq!(
        curl(&fanout, &files.cert, "--http2"),
        (Some(0), "2 202".to_owned())
    );
    assert_eq!(
        curl(&fanout, &files.cert, "--http1.1"),
        (Some(0), "1.1 202".to_owned())
    );
    // Cleartext to a TLS listener gets no HTTP answer.
    let answer =
        common::process::raw_exchange(fanout.addr, b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n");
    assert!(!answer.contains("200"), "{answer}");
}

/// A client of TLS 1.1 only (Python's ssl, OpenSSL allowed every old cipher): first against a
/// Python TLS 1.1 server with the same certificate, to show it is willing and able, then against
/// fanout. Prints `{"local": <version or error>, "fanout": <version or error>}`, where an error
/// is OpenSSL's reason (`SSLV3_ALERT_HANDSHAKE_FAILURE`: the peer sent a handshake_failure alert).
const PY_TLS11: &str = r#"
import json, socket, ssl, sys, threading
cert, key, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
def only_tls11(context):
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context
server_context = only_tls11(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
server_context.load_cert_chain(cert, key)
listener = socket.create_server(("127.0.0.1", 0))
def serve():
    connection, _ = listener.accept()
    try:
        server_context.wrap_socket(connection, server_side=True).close()
    except ssl.SSLError:
        connection.close()
threading.Thread(target=serve, daemon=True).start()
client = only_tls11(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
client.check_hostname = False
client.verify_mode = ssl.CERT_NONE
def handshake(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with client.wrap_socket(raw, server_hostname="localhost") as tls:
                return tls.version()
        except ssl.SSLError as error:
            return error.reason or str(error)
print(json.dumps({"local": handshake(listener.getsockname()[1]), "fanout": handshake(port)}))
"#;

#[test]
fn a_client_of_tls_1_1_is_refused_by_the_server() {
    let (cert, key) = certificate();
    let files = files(&cert, &key);
    let fanout = start(&files);
    let output = Command::new("python3")
        .args(["-c", PY_TLS11])
        .arg(&files.cert)
        .arg(&files.key)
        .arg(fanout.addr.port().to_string())
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let verdict: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
    assert_eq!(
        verdict["local"], "TLSv1.1",
        "the client speaks TLS 1.1: {verdict}"
    );
    // An alert the server sent (OpenSSL names a received alert `SSLV3_ALERT_*`/`TLSV1_ALERT_*`;
    // a client that gave up on its own would say `UNSUPPORTED_PROTOCOL` or similar). rustls
    // answers a ClientHello without TLS 1.2 or 1.3 with handshake_failure, not protocol_version.
    let alerts = [
        "SSLV3_ALERT_HANDSHAKE_FAILURE",
        "TLSV1_ALERT_PROTOCOL_VERSION",
    ];
    let refused = verdict["fanout"].as_str().expect("a verdict on fanout");
    assert!(
        alerts.contains(&refused),
        "fanout's own alert refuses it: {verdict}"
    );
}

/// Python's http.client on one keep-alive https connection: each line on its stdin posts an
/// event; it prints the status, its local port (the same port: the same connection) and the
/// HTTP version.
const PY_CLIENT: &str = r#"
import http.client, ssl, sys
context = ssl.create_default_context(cafile=sys.argv[1])
connection = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[2]), context=context)
context.check_hostname = False
for line in sys.stdin:
    connection.request("POST", "/demo", body=b'{"from":"python"}', headers={"content-type": "application/json"})
    response = connection.getresponse()
    response.read()
    print(response.status, connection.sock.getsockname()[1], response.version, flush=True)
"#;

#[test]
fn sighup_swaps_the_certificate_for_new_connections_and_keeps_open_ones() {
    let (old_cert, old_key) = certificate();
    let files = files(&old_cert, &old_key);
    let old_ca = files.dir.join("old-ca.pem");
    write(&old_ca, &old_cert);
    let fanout = start(&files);

    let mut python = Command::new("python3")
        .args(["-c", PY_CLIENT])
        .arg(&old_ca)
        .arg(fanout.addr.port().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python3");
    let mut input = python.stdin.take().expect("piped");
    let mut output = BufReader::new(python.stdout.take().expect("piped")).lines();
    let mut post = || {
        writeln!(input, "post").expect("python reads");
        output.next().expect("python answers").expect("a line")
    };
    let before = post();
    assert!(
        before.starts_with("202 ") && before.ends_with(" 11"),
        "{before}"
    );

    let (new_cert, new_key) = certificate();
    write(&files.cert, &new_cert);
    write(&files.key, &new_key);
    hang_up(&fanout, "SIGHUP: TLS certificate reloaded");

    assert_eq!(
        curl(&fanout, &files.cert, "--http2"),
        (Some(0), "2 202".to_owned()),
        "new connections get the new certificate"
    );
    let (refused, _) = curl(&fanout, &old_ca, "--http1.1");
    assert_eq!(
        refused,
        Some(60),
        "the old certificate is no longer offered"
    );
    let after = post();
    assert_eq!(
        after, before,
        "the connection open across the swap keeps working, on the same socket"
    );
    drop(input);
    let _ = python.wait();
}

#[test]
fn a_reload_that_fails_keeps_the_old_certificate() {
    let (cert, key) = certificate();
    let files = files(&cert, &key);
    let fanout = start(&files);
    write(&files.key, "not a key");
    hang_up(
        &fanout,
        "SIGHUP: TLS certificate not reloaded; the old one stays",
    );
    assert_eq!(
        curl(&fanout, &files.cert, "--http2"),
        (Some(0), "2 202".to_owned())
    );
}

/// A binary whose routes.yaml has `server.tls` with `${NAME}` paths, as the README shows.
const TLS_ROUTES: &str = r#"# Written by tests/tls_listener.rs and built.
server:
  tls: { cert: "${TLS_CERT}", key: "${TLS_KEY}" }
routes:
  - name: demo
    path: /demo
    targets:
      - name: a
        url: http://${TARGET}/in
"#;

#[test]
fn server_tls_in_routes_yaml_reads_its_files_from_the_environment() {
    let (binary, _) =
        common::built::fanout_with("tls-build", TLS_ROUTES, &[]).unwrap_or_else(|e| panic!("{e}"));
    let (cert, key) = certificate();
    let files = files(&cert, &key);
    let dead = common::ReservedPort::new();
    let (cert_path, key_path, target) = (
        files.cert.display().to_string(),
        files.key.display().to_string(),
        dead.addr.to_string(),
    );
    let env = [
        ("TLS_CERT", cert_path.as_str()),
        ("TLS_KEY", key_path.as_str()),
        ("TARGET", target.as_str()),
    ];
    let fanout = Fanout::start_with(&binary.display().to_string(), &[], &env);
    assert_eq!(
        curl(&fanout, &files.cert, "--http2"),
        (Some(0), "2 202".to_owned())
    );

    let output = Command::new(&binary)
        .args(["--listen", "127.0.0.1:0"])
        .env("TLS_CERT", &cert_path)
        .env_remove("TLS_KEY")
        .env("TARGET", &target)
        .output()
        .expect("run fanout");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("server.tls.key") && stderr.contains("TLS_KEY is not set"),
        "{stderr}"
    );
}

#[test]
fn sighup_without_tls_is_logged_and_ignored() {
    let mut fanout = Fanout::start(&[]);
    hang_up(
        &fanout,
        "SIGHUP: nothing to reload (no TLS listener); ignored",
    );
    assert!(
        fanout.child.try_wait().expect("wait").is_none(),
        "fanout still runs"
    );
    let health = common::blocking::http_once(fanout.addr, "GET", "/healthz", &[], b"");
    assert_eq!(health.expect("answers").status, 200);
}
