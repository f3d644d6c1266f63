//! The `fanout` binary: parse flags, set up logging, resolve the compiled targets, bind, and
//! run the server until SIGTERM or SIGINT.

use clap::Parser;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::net::TcpListener;

use fanout::ingress::admin;
use fanout::ingress::server::{self, Options};
use fanout::ingress::tls::Certificates;
use fanout::ops::cli::{Cli, Command, LogCommand, LogFormat};
use fanout::ops::startup::StartupError;
use fanout::ops::{data_dir, demo, shutdown, tools};
use fanout::routes::{Route, Table, SERVER};
use fanout::shared::Shared;
use fanout::spec::Listing;
use std::path::PathBuf;

/// mimalloc instead of the system allocator: every event and every delivery allocates a few
/// small blocks, and in the no-loss load run with 4 targets it carried 27% more events per
/// second than glibc's malloc. Its v2 line (the `v2` feature): against v3 in one session it
/// held a million events in 4 lanes in 263 MiB instead of 296 at the same or better
/// throughput (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    #[cfg(feature = "failpoints")]
    fanout::failpoints::setup();
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
    let env = |name: &str| std::env::var(name).ok();
    let data_dir = data_dir(&cli, &env)?;
    match &cli.command {
        Some(Command::DeadLetters(command)) => {
            return tools::dead_letters(command, &data_dir?).await
        }
        Some(Command::Log(LogCommand::Verify)) => return tools::verify(&data_dir?),
        _ => {}
    }
    let tls = tls(&cli, &env)?;
    let admin_address = match cli.admin_listen {
        Some(address) => Some(address),
        None => SERVER.admin_listen.map(|address| {
            address
                .parse()
                .expect("build.rs checked that server.admin_listen is an address")
        }),
    };
    let mut shared = Shared::<Table>::new(&env)?;
    shared.admin_apart = admin_address.is_some();
    let shared = Arc::new(shared);
    if matches!(cli.command, Some(Command::Demo)) {
        demo::start(&shared).await?;
    }
    let address: SocketAddr = match cli.listen {
        Some(address) => address,
        None => SERVER
            .listen
            .parse()
            .expect("build.rs checked that server.listen is an address"),
    };
    let listener =
        listen(address).map_err(|e| StartupError(format!("cannot listen on {address}: {e}")))?;
    let mut admin_bound = None;
    if let Some(address) = admin_address {
        // SO_REUSEPORT would let both bind one port, and the kernel split connections between
        // them: refuse instead.
        let ingest = listener.local_addr().unwrap_or(address);
        let same_ip = ingest.ip().to_canonical() == address.ip().to_canonical()
            || ingest.ip().is_unspecified()
            || address.ip().is_unspecified();
        if ingest.port() == address.port() && same_ip {
            return Err(StartupError(format!(
                "admin_listen {address} is the ingest listener's address: give it a port of its own"
            )));
        }
        let admin = listen(address)
            .map_err(|e| StartupError(format!("cannot listen on {address} (admin_listen): {e}")))?;
        admin_bound = Some(admin.local_addr().unwrap_or(address));
        admin::spawn(admin, shared.clone());
    }
    open_data_dir(&shared, data_dir)?;
    // SIGHUP reloads the TLS certificate; without one it is logged and ignored, never the
    // default (which would end the process and its memory lanes).
    match &tls {
        Some(tls) => tls.reload_on_sighup(),
        None => shutdown::ignore_hangup(),
    }
    for route in Route::ALL {
        let spec = route.spec();
        let targets: Vec<&str> = spec.targets.iter().map(|t| t.endpoint.address()).collect();
        tracing::info!(route = spec.name, path = spec.path, targets = ?targets, "route");
    }
    tracing::info!(
        listen = %listener.local_addr().unwrap_or(address),
        tls = tls.is_some(),
        admin_listen = admin_bound.map(|a| a.to_string()),
        "fanout ready"
    );
    let mut options = Options::from_spec(&SERVER);
    if let Some(timeout) = cli.header_read_timeout {
        options.header_read_timeout = timeout;
    }
    if let Some(timeout) = cli.drain_timeout {
        options.drain_timeout = timeout;
    }
    options.tls = tls;
    raise_open_files_limit(options.max_connections);
    server::run(listener, shared, options, shutdown::signal_received()).await;
    tracing::info!("fanout stopped");
    Ok(())
}

/// The TLS listener's certificates: `--tls-cert`/`--tls-key`, else `server.tls` with its
/// `${NAME}` resolved, read now; `None` for cleartext.
fn tls(
    cli: &Cli,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Arc<Certificates>>, StartupError> {
    let (cert, key) = match (&cli.tls_cert, &cli.tls_key, &SERVER.tls) {
        (Some(cert), Some(key), _) => (cert.clone(), key.clone()),
        (_, _, Some(files)) => {
            let path = |field: &str, written: &str| {
                fanout::sink::substitute(written, env)
                    .map(PathBuf::from)
                    .map_err(|e| StartupError(format!("server.tls.{field}: {e}")))
            };
            (path("cert", files.cert)?, path("key", files.key)?)
        }
        _ => return Ok(None),
    };
    Certificates::load(cert, key).map(Some)
}

/// The data directory: `--data-dir`, else `server.data_dir` with its `${NAME}` resolved; an
/// error if there is none (which only durable routes make fatal).
fn data_dir(
    cli: &Cli,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Result<PathBuf, StartupError>, StartupError> {
    if let Some(dir) = &cli.data_dir {
        return Ok(Ok(dir.clone()));
    }
    match SERVER.data_dir {
        Some(dir) => {
            let dir = fanout::sink::substitute(dir, env)
                .map_err(|e| StartupError(format!("server.data_dir: {e}")))?;
            Ok(Ok(PathBuf::from(dir)))
        }
        None => Ok(Err(StartupError(
            "no data directory: set server.data_dir in routes.yaml or pass --data-dir".into(),
        ))),
    }
}

/// Locks and opens the data directory if there is one: at once if it is free, else (another
/// process is handing it over) in the background while serving. Without one, durable routes
/// cannot start.
fn open_data_dir(
    shared: &Arc<Shared<Table>>,
    dir: Result<PathBuf, StartupError>,
) -> Result<(), StartupError> {
    let dir = match dir {
        Ok(dir) => dir,
        Err(error) => {
            if let Some(log) = shared.logs.first() {
                return Err(StartupError(format!(
                    "route \"{}\" is durable (storage: disk): {error}",
                    log.route.name
                )));
            }
            return Ok(());
        }
    };
    match data_dir::try_lock(&dir)? {
        Some(locked) => shared.own(locked),
        None => {
            let shared = shared.clone();
            tokio::spawn(async move {
                let opened = match data_dir::lock(&dir).await {
                    Ok(locked) => shared.own(locked),
                    Err(error) => Err(error),
                };
                if let Err(error) = opened {
                    tracing::error!(%error, "cannot open the data directory: durable routes answer 503");
                }
            });
            Ok(())
        }
    }
}

/// A listener that shares its address (SO_REUSEPORT) with a process taking over from this one.
fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
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
