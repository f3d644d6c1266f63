//! Command-line flags: deployment knobs only. Routes are compiled in; see `fanout --routes`.

use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// An event fan-out proxy with its routes compiled in.
///
/// POST an event to a route's path: fanout answers 202 {"id": ...} and repeats it to every
/// target of the route. RUST_LOG sets the log level (default: info). Values written as
/// ${NAME} in routes.yaml are read from the environment at start-up.
#[derive(Debug, Parser)]
#[command(name = "fanout", version)]
pub struct Cli {
    /// Address to listen on [default: server.listen of the compiled routes]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Print the compiled routing table (routes, targets, effective settings) and exit
    #[arg(long)]
    pub routes: bool,

    /// Log line format
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Time a client has to send a request's headers; also how long an HTTP/1.1 connection
    /// may wait for its next request [default: server.header_read_timeout]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Option<Duration>,

    /// On SIGTERM/SIGINT, how long lanes may keep delivering [default: server.drain_timeout]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub drain_timeout: Option<Duration>,

    /// Data directory: durable routes' logs and every lane's dead letters
    /// [default: server.data_dir of the compiled routes]
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,

    /// Serve the ingest listener over TLS with this PEM certificate chain (with --tls-key),
    /// re-read on SIGHUP [default: server.tls.cert]
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert [default: server.tls.key]
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Serve /metrics and /healthz on this address instead of the ingest listener
    /// [default: server.admin_listen]
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,

    /// Tokio worker threads [default: one per core]
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines
    Text,
    /// One JSON object per line
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a receiver on every 127.0.0.1/localhost target of the compiled routes, printing
    /// each event it gets, then run the proxy: a self-contained demo
    Demo,
    /// Events the lanes gave up on, kept in the data directory
    #[command(subcommand)]
    DeadLetters(DeadLetters),
    /// Durable routes' logs in the data directory
    #[command(subcommand)]
    Log(LogCommand),
}

#[derive(Debug, Subcommand)]
pub enum DeadLetters {
    /// Print every dead letter (one line each), then a count per lane
    List {
        /// Only this route's
        #[arg(long)]
        route: Option<String>,
        /// Only this target's
        #[arg(long)]
        target: Option<String>,
    },
    /// Send a lane's dead letters again, oldest first; those delivered leave their file, the
    /// others stay
    Replay {
        #[arg(long)]
        route: String,
        #[arg(long)]
        target: String,
        /// POST them to the route of a running fanout at this base url (e.g.
        /// http://127.0.0.1:8000), which takes them in as new events for every target of the
        /// route; without it, send them straight to the target, with their original ids
        #[arg(long, value_name = "URL")]
        via: Option<String>,
    },
    /// Remove a lane's dead letters written before a time; print how many were removed and
    /// how many are left (unreadable lines always stay)
    Purge {
        #[arg(long)]
        route: String,
        #[arg(long)]
        target: String,
        /// An RFC 3339 time (2026-11-23T18:00:00Z), or a duration (24h: those older than that)
        #[arg(long, value_name = "TIME", value_parser = before)]
        before: SystemTime,
    },
}

/// The time `--before` names: an RFC 3339 time, or a duration before now.
fn before(text: &str) -> Result<SystemTime, String> {
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        return Ok(time);
    }
    let ago = humantime::parse_duration(text).map_err(|_| {
        "expected an RFC 3339 time such as 2026-11-23T18:00:00Z or a duration such as 24h"
            .to_owned()
    })?;
    SystemTime::now()
        .checked_sub(ago)
        .ok_or_else(|| format!("{text} before now is before 1970"))
}

#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Check the durable routes' logs and report what they hold per lane, changing nothing;
    /// exits 1 if a log is damaged
    Verify,
}
