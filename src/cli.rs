//! Command-line flags: deployment knobs only. Routes are compiled in; see `fanout --routes`.

use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::time::Duration;

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
}
