//! `fanout dead-letters list|replay|purge`: a lane's dead letters across its files, oldest
//! first (`crate::storage::dead_letter`). Replay and purge hold the lane's lock, as a server's writes do.

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::targets;
use crate::auth::gate::Gate;
use crate::event::Event;
use crate::ops::cli::DeadLetters;
use crate::ops::startup::StartupError;
use crate::routes::Route;
use crate::sink::parcel::Parcel;
use crate::sink::{Endpoint, Outcome, Resolver};
use crate::spec::TargetSpec;
use crate::storage::dead_letter::{self, Locked};

/// `fanout dead-letters list|replay|purge`.
pub async fn dead_letters(command: &DeadLetters, data_dir: &Path) -> Result<(), StartupError> {
    match command {
        DeadLetters::List { route, target } => list(data_dir, route.as_deref(), target.as_deref()),
        DeadLetters::Replay { route, target, via } => {
            replay(data_dir, route, target, via.as_deref()).await
        }
        DeadLetters::Purge {
            route,
            target,
            before,
        } => purge(data_dir, route, target, *before),
    }
}

/// The compiled target `target` of `route`.
fn lane(route: &str, target: &str) -> Result<&'static TargetSpec, StartupError> {
    targets()
        .find(|t| t.route == route && t.name == target)
        .ok_or_else(|| StartupError(format!("no target \"{target}\" in route \"{route}\"")))
}

/// The lane's dead-letter files, oldest first.
fn files(dir: &Path, target: &str) -> Result<Vec<PathBuf>, StartupError> {
    dead_letter::files(dir, target).map_err(|e| StartupError(format!("{}: {e}", dir.display())))
}

fn read(path: &Path) -> Result<String, StartupError> {
    std::fs::read_to_string(path).map_err(|e| StartupError(format!("{}: {e}", path.display())))
}

fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| !l.trim().is_empty())
}

fn list(data_dir: &Path, route: Option<&str>, target: Option<&str>) -> Result<(), StartupError> {
    let mut counts = Vec::new();
    for spec in targets() {
        if route.is_some_and(|r| r != spec.route) || target.is_some_and(|t| t != spec.name) {
            continue;
        }
        let paths = files(&dead_letter::dir(data_dir, spec.route), spec.name)?;
        if paths.is_empty() {
            continue;
        }
        let mut count = 0;
        for path in paths {
            for line in lines(&read(&path)?) {
                count += 1;
                print_letter(spec, line);
            }
        }
        counts.push(format!("{}/{}: {count}", spec.route, spec.name));
    }
    if counts.is_empty() {
        println!("no dead letters in {}", data_dir.display());
    }
    for count in counts {
        println!("{count}");
    }
    Ok(())
}

fn print_letter(spec: &TargetSpec, line: &str) {
    let Ok(letter) = serde_json::from_str::<serde_json::Value>(line) else {
        println!("{}/{}: unreadable line: {line}", spec.route, spec.name);
        return;
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

/// Sends a lane's dead letters again, oldest first; what is delivered leaves its file, the
/// rest stays (exit code 1).
async fn replay(
    data_dir: &Path,
    route: &str,
    target: &str,
    via: Option<&str>,
) -> Result<(), StartupError> {
    let spec = lane(route, target)?;
    let dir = dead_letter::dir(data_dir, route);
    let current = dead_letter::path(data_dir, route, target);
    if files(&dir, target)?.is_empty() {
        return Err(StartupError(format!(
            "{}: no dead letters",
            current.display()
        )));
    }
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
    let fail = |e: std::io::Error| StartupError(format!("{}: {e}", dir.display()));
    let mut locked = Locked::lane(&dir, target).map_err(fail)?;
    let (mut sent, mut left) = (0, 0);
    for path in files(&dir, target)? {
        let (mut kept, mut sent_here) = (String::new(), 0);
        for line in lines(&read(&path)?) {
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
                sent_here += 1;
            } else {
                kept.push_str(line);
                kept.push('\n');
                left += 1;
            }
        }
        if sent_here > 0 {
            locked.rewrite(&path, &kept).map_err(fail)?;
            sent += sent_here;
        }
    }
    drop(locked);
    let rolled = files(&dir, target)?.len().saturating_sub(1);
    let older = match rolled {
        0 => String::new(),
        n => format!(" and {n} older files"),
    };
    println!(
        "{route}/{target}: {sent} replayed, {left} left in {}{older}",
        current.display()
    );
    if left > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// Removes a lane's dead letters written before `before`; unreadable lines stay.
fn purge(
    data_dir: &Path,
    route: &str,
    target: &str,
    before: SystemTime,
) -> Result<(), StartupError> {
    lane(route, target)?;
    let dir = dead_letter::dir(data_dir, route);
    let purged = dead_letter::purge(&dir, target, before)
        .map_err(|e| StartupError(format!("{}: {e}", dir.display())))?;
    println!(
        "{route}/{target}: {} removed (written before {}), {} left",
        purged.removed,
        dead_letter::timestamp(before),
        purged.left
    );
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
