//! The `fanout` binary: parse flags, set up logging, resolve the compiled targets, bind, and
//! run the server until SIGTERM or SIGINT.

use clap::Parser;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::net::TcpListener;

use fanout::cli::{Cli, Command, LogFormat};
use fanout::proxy::Proxy;
use fanout::routes::{Route, Table, SERVER};
use fanout::server::{self, Options};
use fanout::spec::Listing;
use fanout::startup::StartupError;
use fanout::{demo, shutdown};

/// mimalloc instead of the system allocator: every event and every delivery allocates a few
/// small blocks, and in the no-loss load run with 4 targets it carried 27% more events per
/// second than glibc's malloc. Its v2 line (the `v2` feature): against v3 in one session it
/// held a million events in 4 lanes in 263 MiB instead of 296 at the same or better
/// throughput (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.routes {
        let listing = Listing {
            server: &SERVER,
            routes: Route::ALL.iter().map(|r| r.spec()).collect(),
        };
        print!("{listing}");
        return ExitCode::SUCCESS;
    }
    let log_format = cli.log_format;
    init_logging(log_format);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = cli.workers {
        runtime.worker_threads(workers.max(1));
    }
    let runtime = runtime
        .enable_all()
        .build()
        .expect("a tokio runtime can be built at start-up");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line on stderr, in the format asked for.
            match log_format {
                LogFormat::Json => tracing::error!("{error}"),
                LogFormat::Text => eprintln!("fanout: {error}"),
            }
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<(), StartupError> {
    let proxy = Proxy::<Table>::new(&|name| std::env::var(name).ok())?;
    if matches!(cli.command, Some(Command::Demo)) {
        demo::start(&proxy).await?;
    }
    let address: SocketAddr = match cli.listen {
        Some(address) => address,
        None => SERVER
            .listen
            .parse()
            .expect("build.rs checked that server.listen is an address"),
    };
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| StartupError(format!("cannot listen on {address}: {e}")))?;
    for route in Route::ALL {
        let spec = route.spec();
        let targets: Vec<&str> = spec.targets.iter().map(|t| t.endpoint.address()).collect();
        tracing::info!(route = spec.name, path = spec.path, targets = ?targets, "route");
    }
    tracing::info!(listen = %listener.local_addr().unwrap_or(address), "fanout ready");
    let mut options = Options::from_spec(&SERVER);
    if let Some(timeout) = cli.header_read_timeout {
        options.header_read_timeout = timeout;
    }
    if let Some(timeout) = cli.drain_timeout {
        options.drain_timeout = timeout;
    }
    raise_open_files_limit(options.max_connections);
    server::run(
        listener,
        Arc::new(proxy),
        options,
        shutdown::signal_received(),
    )
    .await;
    tracing::info!("fanout stopped");
    Ok(())
}

/// Raises the soft limit of open files towards the hard one, as Go's runtime does, so that
/// `max_connections` (plus the connections to targets) is not cut short by a default of 1024.
fn raise_open_files_limit(max_connections: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        }
    }
    if (limit.rlim_cur as u128) < max_connections as u128 + 1024 {
        tracing::warn!(
            open_files = limit.rlim_cur,
            max_connections,
            "the open files limit is below max_connections: raise it (ulimit -n) or lower server.max_connections"
        );
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}
