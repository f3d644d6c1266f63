//! The data directory's command-line tools: `fanout dead-letters list|replay` and
//! `fanout log verify`. They read the compiled routes to know which lanes and logs there are.

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use std::fs::OpenOptions;
use std::io::{Read, Seek, Write};
use std::path::Path;

use crate::cli::DeadLetters;
use crate::dead_letter::{self, Locked};
use crate::event::Event;
use crate::gate::Gate;
use crate::log;
use crate::parcel::Parcel;
use crate::routes::Route;
use crate::sink::{Endpoint, Outcome, Resolver};
use crate::spec::{Storage, TargetSpec};
use crate::startup::StartupError;

/// `fanout dead-letters list|replay`.
pub async fn dead_letters(command: &DeadLetters, data_dir: &Path) -> Result<(), StartupError> {
    match command {
        DeadLetters::List { route, target } => {
            list(data_dir, route.as_deref(), target.as_deref());
            Ok(())
        }
        DeadLetters::Replay { route, target, via } => {
            replay(data_dir, route, target, via.as_deref()).await
        }
    }
}

/// Every lane of the compiled routes.
fn targets() -> impl Iterator<Item = &'static TargetSpec> {
    Route::ALL
        .iter()
        .flat_map(|route| route.spec().targets.iter().copied())
}

fn list(data_dir: &Path, route: Option<&str>, target: Option<&str>) {
    let mut counts = Vec::new();
    for spec in targets() {
        if route.is_some_and(|r| r != spec.route) || target.is_some_and(|t| t != spec.name) {
            continue;
        }
        let path = dead_letter::path(data_dir, spec.route, spec.name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let mut count = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            count += 1;
            let Ok(letter) = serde_json::from_str::<serde_json::Value>(line) else {
                println!("{}/{}: unreadable line: {line}", spec.route, spec.name);
                continue;
            };
            let field = |name: &str| match &letter[name] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "-".into(),
                other => other.to_string(),
            };
            println!(
                "{} {}/{} {} reason={} status={} attempts={} error={:?}",
                field("time"),
                spec.route,
                spec.name,
                field("id"),
                field("reason"),
                field("status"),
                field("attempts"),
                field("error"),
            );
        }
        counts.push(format!("{}/{}: {count}", spec.route, spec.name));
    }
    if counts.is_empty() {
        println!("no dead letters in {}", data_dir.display());
    }
    for count in counts {
        println!("{count}");
    }
}

/// Sends a lane's dead letters again; what is not delivered stays in the file.
async fn replay(
    data_dir: &Path,
    route: &str,
    target: &str,
    via: Option<&str>,
) -> Result<(), StartupError> {
    let spec = targets()
        .find(|t| t.route == route && t.name == target)
        .ok_or_else(|| StartupError(format!("no target \"{target}\" in route \"{route}\"")))?;
    let path = dead_letter::path(data_dir, route, target);
    let fail = |e: std::io::Error| StartupError(format!("{}: {e}", path.display()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(fail)?;
    let locked = Locked::exclusive(&file).map_err(fail)?;
    let mut text = String::new();
    (&file).read_to_string(&mut text).map_err(fail)?;
    let env = |name: &str| std::env::var(name).ok();
    let mut resolver = Resolver::new(&env);
    let endpoint = Endpoint::resolve(spec, &mut resolver)?;
    let mut sink = endpoint.connect();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let route_spec = Route::ALL
        .iter()
        .map(|r| r.spec())
        .find(|r| r.name == route)
        .ok_or_else(|| StartupError(format!("no route \"{route}\"")))?;
    let route_path = route_spec.path;
    // A route with `auth:` is posted to with the server's own secrets.
    let gate = Gate::new(route_spec, &resolver)?;
    let (mut sent, mut kept) = (0, String::new());
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Some(event) = event_of(line) else {
            eprintln!("kept an unreadable line: {line}");
            kept.push_str(line);
            kept.push('\n');
            continue;
        };
        let delivered = match via {
            None => matches!(
                sink.send(&Parcel::single(&event), 1).await,
                Outcome::Delivered
            ),
            Some(base) => {
                let url = format!("{}{route_path}", base.trim_end_matches('/'));
                let mut request = hyper::Request::post(url.as_str());
                if let Some(content_type) = event.content_type() {
                    request = request.header(CONTENT_TYPE, content_type);
                }
                let id = event.id();
                let id = id.to_str().unwrap_or_default();
                for (name, value) in gate.credentials(route_spec, &env, id, &event.body())? {
                    request = request.header(name, value);
                }
                match request.body(Full::new(event.body())) {
                    Ok(request) => client
                        .request(request)
                        .await
                        .is_ok_and(|r| r.status().is_success()),
                    Err(_) => false,
                }
            }
        };
        if delivered {
            sent += 1;
        } else {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    file.set_len(0).map_err(fail)?;
    (&file).rewind().map_err(fail)?;
    (&file).write_all(kept.as_bytes()).map_err(fail)?;
    drop(locked);
    let left = kept.lines().count();
    println!(
        "{route}/{target}: {sent} replayed, {left} left in {}",
        path.display()
    );
    if left > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// The event a dead-letter line holds, with its original id.
fn event_of(line: &str) -> Option<Event> {
    let letter: serde_json::Value = serde_json::from_str(line).ok()?;
    let id = uuid::Uuid::parse_str(letter["id"].as_str()?).ok()?;
    let body = match (&letter["body"], &letter["body_base64"]) {
        (serde_json::Value::String(body), _) => body.clone().into_bytes(),
        (_, serde_json::Value::String(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?,
        _ => return None,
    };
    let content_type = letter["content_type"].as_str();
    let content_type = content_type.and_then(|c| HeaderValue::from_str(c).ok());
    Some(Event::restore(
        *id.as_bytes(),
        &body,
        content_type.as_ref().map(HeaderValue::as_bytes),
    ))
}

/// `fanout log verify`: what each durable route's log holds, changing nothing. Exits 1 if a
/// log is damaged (a torn record at the very end of a log is not damage: a crash mid-write,
/// or a write under way while a running server is checked).
pub fn verify(data_dir: &Path) -> Result<(), StartupError> {
    let mut damaged = false;
    let mut durable = Vec::new();
    for route in Route::ALL {
        let spec = route.spec();
        if spec.storage == Storage::Disk {
            durable.push(spec.name);
            damaged |= log::verify(data_dir, spec).map_err(StartupError)?;
        }
    }
    for dir in log::unknown_route_dirs(data_dir, &durable) {
        println!(
            "route directory {}: no durable route of this binary has it (kept, not read)",
            dir.display()
        );
    }
    for spec in targets() {
        let path = dead_letter::path(data_dir, spec.route, spec.name);
        if let Ok(text) = std::fs::read_to_string(&path) {
            let count = text.lines().filter(|l| !l.trim().is_empty()).count();
            println!("dead letters {}/{}: {count}", spec.route, spec.name);
        }
    }
    if damaged {
        std::process::exit(1);
    }
    Ok(())
}
