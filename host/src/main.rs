use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use absurd_host::args::LogFormat;
use absurd_host::cli::Command;
use absurd_host::config::AbsurdConfig;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = absurd_host::cli::parse();
    // `check` prints its own report; its logs would only clutter it.
    // So does `demo` (its warnings still show, such as the contained guests' failures).
    let quiet = matches!(
        cli.command,
        Command::Check(_) | Command::Demo(_) | Command::Bench(_) | Command::BuildPy(_)
    );
    init_tracing(cli.global.log_format, quiet);
    let result = match &cli.command {
        Command::Worker(args) => {
            let shutdown = CancellationToken::new();
            tokio::spawn(on_signals(shutdown.clone()));
            absurd_host::cli::run_worker(&cli.global, args, shutdown).await
        }
        Command::Serve(args) => {
            let shutdown = CancellationToken::new();
            tokio::spawn(on_signals(shutdown.clone()));
            absurd_host::cli::run_serve(&cli.global, args, shutdown).await
        }
        Command::Maintain(args) => absurd_host::maintain::run_command(&cli.global, args).await,
        Command::Dev(args) => absurd_host::devmode::run_dev(&cli.global, args).await,
        Command::Demo(args) => absurd_host::devmode::run_demo(&cli.global, args).await,
        Command::Bench(args) => match absurd_host::bench::run(&cli.global, args).await {
            Ok(true) => Ok(()),
            Ok(false) => return std::process::ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::BuildPy(args) => absurd_host::buildpy::run(args),
        Command::Check(args) => match absurd_host::check::run(&cli.global, args).await {
            Ok(true) => Ok(()),
            Ok(false) => return std::process::ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        _ => match AbsurdConfig::from_env() {
            Ok(config) => absurd_host::cli::run_admin(cli, config).await,
            Err(e) => Err(e.into()),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// First SIGTERM/SIGINT: drain gracefully. Second: stop now (the grace period is skipped by
/// exiting; running tasks are then recovered by lease expiry).
async fn on_signals(shutdown: CancellationToken) {
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutdown requested; draining (send the signal again to exit at once)");
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal; exiting without waiting for running tasks");
    std::process::exit(130);
}

/// Logs go to stderr, filtered by `ABSURD_LOG`, else `RUST_LOG`, else the default; colour only
/// when stderr is a terminal (journald and log files get plain text). A filter that does not
/// parse is reported, not silently replaced.
fn init_tracing(format: LogFormat, quiet: bool) {
    use std::io::IsTerminal;
    let default = if quiet { "warn" } else { "info,sqlx=warn" };
    let (filter, problem) = ["ABSURD_LOG", "RUST_LOG"]
        .into_iter()
        .find_map(|var| {
            let value = std::env::var(var).ok().filter(|v| !v.trim().is_empty())?;
            Some(match tracing_subscriber::EnvFilter::try_new(&value) {
                Ok(f) => (f, None),
                Err(e) => (
                    tracing_subscriber::EnvFilter::new(default),
                    Some(format!(
                        "ignoring {var}={value:?} ({e}); logging at {default:?}"
                    )),
                ),
            })
        })
        .unwrap_or_else(|| (tracing_subscriber::EnvFilter::new(default), None));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    if let Some(p) = problem {
        tracing::warn!("{p}");
    }
}
