//! The `portcullis` command line: parsing and wiring only.
//!
//! Exit codes: 0 success, 1 failure (bad config, policy errors, a denied check), 2 usage error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use portcullis::config::{Config, ListenAddr};
use portcullis::policy::{PolicyOptions, PolicyStore};
use portcullis::server::{self, App, GrpcListener, Listeners};
use portcullis::telemetry::{self, LogFormat, decision_log::DecisionLog};

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "OPA-Envoy compatible ext_authz sidecar"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the sidecar (like `opa run --server` with the Envoy plugin).
    Run(RunArgs),
    /// Send one CheckRequest to an ext_authz server and print the response as JSON.
    Check(portcullis::client::check::CheckArgs),
    /// Evaluate a Rego query against policies and data (like `opa eval`).
    Eval(portcullis::offline::eval::EvalArgs),
    /// Run the `test_*` rules of policies (like `opa test`).
    Test(portcullis::offline::test::TestArgs),
    /// Load tools: a Check load generator and a no-op floor server.
    Bench {
        #[command(subcommand)]
        cmd: portcullis::client::bench::BenchCommand,
    },
    /// Internal token tools.
    Token {
        #[command(subcommand)]
        cmd: TokenCommand,
    },
    /// Print the version.
    Version,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Verify a token with a JWK Set, as an upstream would, and print its claims as JSON.
    /// Exit code 0 when valid, 1 when not.
    Verify {
        /// The JWK Set: an http(s) URL (e.g. http://localhost:8181/.well-known/jwks.json) or a file.
        #[arg(long)]
        jwks: String,
        /// Require this `iss`.
        #[arg(long)]
        issuer: Option<String>,
        /// Require this audience.
        #[arg(long)]
        audience: Option<String>,
        /// The token, or `-` to read it from standard input.
        token: String,
    },
}

/// `portcullis run`: OPA's flags. Flags that only concern OPA's own services are accepted and
/// have no effect (`--skip-version-check`, `--disable-telemetry`).
#[derive(Debug, Args, Default)]
struct RunArgs {
    /// Start the server (accepted for compatibility; `run` always serves).
    #[arg(short = 's', long)]
    server: bool,
    /// Config file (YAML).
    #[arg(short = 'c', long = "config-file")]
    config_file: Option<PathBuf>,
    /// Override a config key with OPA's dotted syntax, e.g.
    /// `plugins.envoy_ext_authz_grpc.addr=:9191`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// HTTP API address.
    #[arg(short = 'a', long = "addr", default_value = "localhost:8181")]
    addr: Vec<String>,
    /// Address serving only /health (off unless set).
    #[arg(long = "diagnostic-addr")]
    diagnostic_addr: Option<String>,
    /// Reload policies and data when a file changes.
    #[arg(short = 'w', long)]
    watch: bool,
    /// Log level: debug, info, warn, error (or a tracing filter).
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long = "log-format", value_enum, default_value = "json")]
    log_format: LogFormat,
    /// File name patterns to skip when loading directories (e.g. `.*`, `*_test.rego`).
    #[arg(long = "ignore")]
    ignore: Vec<String>,
    /// Parse policies as Rego v0.
    #[arg(long = "v0-compatible")]
    v0_compatible: bool,
    /// Seconds to wait for in-flight requests at shutdown.
    #[arg(long = "shutdown-grace-period", default_value_t = 10)]
    shutdown_grace_period: u64,
    /// Accepted for compatibility with OPA; Portcullis never phones home.
    #[arg(long = "skip-version-check", hide = true)]
    skip_version_check: bool,
    /// Accepted for compatibility with OPA; Portcullis never phones home.
    #[arg(long = "disable-telemetry", hide = true)]
    disable_telemetry: bool,
    /// Policy and data files or directories.
    paths: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        None => run(RunArgs {
            addr: vec!["localhost:8181".into()],
            log_level: "info".into(),
            shutdown_grace_period: 10,
            ..Default::default()
        }),
        Some(Command::Run(args)) => run(args),
        Some(Command::Eval(args)) => exit(portcullis::offline::eval::main(&args)),
        Some(Command::Test(args)) => exit(portcullis::offline::test::main(&args)),
        Some(Command::Check(args)) => client_command(portcullis::client::check::main(args)),
        Some(Command::Bench { cmd }) => client_command(cmd.main()),
        Some(Command::Token { cmd }) => client_command(token_command(cmd)),
        Some(Command::Version) => {
            println!("portcullis {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Runs a client command on a small runtime and maps its exit code.
fn client_command(fut: impl std::future::Future<Output = i32>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => ExitCode::from(u8::try_from(rt.block_on(fut)).unwrap_or(1)),
        Err(e) => fail(&format!("cannot start the runtime: {e}")),
    }
}

async fn token_command(cmd: TokenCommand) -> i32 {
    match cmd {
        TokenCommand::Verify {
            jwks,
            issuer,
            audience,
            token,
        } => {
            let token = if token == "-" {
                let mut text = String::new();
                if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
                    eprintln!("error: reading the token: {e}");
                    return 2;
                }
                text.trim().to_string()
            } else {
                token
            };
            let set = match portcullis::token::verify::load_jwks(&jwks).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: --jwks: {e}");
                    return 1;
                }
            };
            let expect = portcullis::token::verify::Expect { issuer, audience };
            match portcullis::token::verify::verify(&token, &set, &expect, portcullis::authn::now())
                .await
            {
                Ok(claims) => {
                    let text = serde_json::to_string_pretty(&claims).unwrap_or_default();
                    println!("{text}");
                    0
                }
                Err(e) => {
                    eprintln!("invalid token: {e}");
                    1
                }
            }
        }
    }
}

/// The example policy shipped next to the binary's sources, served when no PATH is given.
fn default_policy_dir() -> PathBuf {
    let local = PathBuf::from("policies");
    if local.is_dir() {
        return local;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")
}

fn run(mut args: RunArgs) -> ExitCode {
    telemetry::init(&args.log_level, args.log_format);
    let config = match Config::load(args.config_file.as_deref(), &args.set) {
        Ok(c) => c,
        Err(e) => return fail(&format!("config: {e}")),
    };
    if args.paths.is_empty() && args.config_file.is_none() {
        args.paths.push(default_policy_dir());
    }
    let threads = config
        .runtime
        .worker_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get().min(4)));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(serve(config, args))
}

async fn serve(config: Config, args: RunArgs) -> ExitCode {
    let ext = &config.plugins.envoy_ext_authz_grpc;
    let opts = PolicyOptions {
        rego_v0: args.v0_compatible,
        ignore: args.ignore.clone(),
        ..server::policy_options(&config)
    };
    let started = std::time::Instant::now();
    let store = match PolicyStore::load(args.paths.clone(), opts) {
        Ok(s) => Arc::new(s),
        Err(e) => return fail(&format!("policy: {e}")),
    };
    if !store.snapshot().has_decision() {
        tracing::warn!(
            path = ext.decision_path(),
            "no policy defines the decision path; every Check will fail as undefined"
        );
    }
    let log = if config.decision_logs.console {
        DecisionLog::console(serde_json::json!({
            "id": uuid::Uuid::new_v4().to_string(),
            "version": env!("CARGO_PKG_VERSION"),
            "labels": config.labels,
        }))
    } else {
        DecisionLog::disabled()
    };
    let mut app = match App::from_config(&config, store.clone(), log) {
        Ok(app) => app,
        Err(e) => return fail(&format!("config: {e}")),
    };
    app.grpc.shutdown_grace = Duration::from_secs(args.shutdown_grace_period);

    let listeners = match bind(&config, &args).await {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    let _watcher = if args.watch {
        match portcullis::policy::watch::watch(store.clone(), |r| match r {
            Ok(rev) => tracing::info!(revision = rev, "policies reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "policy reload rejected; previous policies keep serving")
            }
        }) {
            Ok(w) => Some(w),
            Err(e) => return fail(&format!("--watch: {e}")),
        }
    } else {
        None
    };
    tracing::info!(
        ext_authz = %listeners.ext_authz.describe(),
        http = %listeners.http.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.to_string()).unwrap_or_default(),
        revision = store.snapshot().revision(),
        ready_ms = started.elapsed().as_millis() as u64,
        "portcullis serving"
    );
    match server::run(app, listeners, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("server: {e}")),
    }
}

async fn bind(config: &Config, args: &RunArgs) -> Result<Listeners, String> {
    let ext_addr_text = &config.plugins.envoy_ext_authz_grpc.addr;
    let ext_addr = ListenAddr::parse(ext_addr_text)
        .map_err(|e| format!("config: plugins.envoy_ext_authz_grpc.addr: {e}"))?;
    let ext_authz = GrpcListener::bind(&ext_addr)
        .await
        .map_err(|e| format!("cannot listen on {ext_addr_text}: {e}"))?;
    let http_text = args
        .addr
        .first()
        .map(String::as_str)
        .unwrap_or("localhost:8181");
    let http_addr = ListenAddr::parse(http_text).map_err(|e| format!("--addr: {e}"))?;
    let http = server::bind_tcp(&http_addr)
        .await
        .map_err(|e| format!("cannot listen on {http_text}: {e}"))?;
    let diagnostic = match &args.diagnostic_addr {
        None => None,
        Some(text) => {
            let addr = ListenAddr::parse(text).map_err(|e| format!("--diagnostic-addr: {e}"))?;
            Some(
                server::bind_tcp(&addr)
                    .await
                    .map_err(|e| format!("cannot listen on {text}: {e}"))?,
            )
        }
    };
    Ok(Listeners {
        ext_authz,
        http: Some(http),
        diagnostic,
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    tracing::error!("{message}");
    ExitCode::from(1)
}
