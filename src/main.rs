//! The `portcullis` command line: parsing and wiring only.
//!
//! Exit codes: 0 success, 1 failure (bad config, policy errors, a denied check), 2 usage error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use portcullis::config::{Config, ListenAddr};
use portcullis::decision_log::DecisionLog;
use portcullis::policy::{LoadSpec, PolicyOptions, PolicyStore};
use portcullis::server::{self, App, GrpcListener, Listeners};
use portcullis::telemetry::trace::{Tracer, TracingSettings};
use portcullis::telemetry::{self, LogFormat};

/// mimalloc (regorus' allocator, the global one) commits the arenas it reserves eagerly on
/// Linux, and memory it committed that way is never returned to the system while the process
/// runs: peak RSS under load is ~10 MB higher than with lazy commit, for no gain in CPU. This
/// sets its `arena_eager_commit` option to 0 before the first allocation (the first arena is
/// reserved on the first allocation, so a later setting would come too late), unless
/// `MIMALLOC_ARENA_EAGER_COMMIT` is set in the environment, which then decides as usual.
#[cfg(all(target_os = "linux", not(miri)))]
mod allocator {
    use std::ffi::{c_char, c_int, c_long};

    /// `mi_option_arena_eager_commit` in mimalloc 2.2's `mi_option_t`.
    const MI_OPTION_ARENA_EAGER_COMMIT: c_int = 4;

    unsafe extern "C" {
        /// mimalloc's, linked in by regorus' allocator crate.
        fn mi_option_set(option: c_int, value: c_long);
        fn getenv(name: *const c_char) -> *mut c_char;
    }

    /// Runs as an ELF constructor, before `main` and before Rust's runtime allocates.
    extern "C" fn lazy_arena_commit() {
        // SAFETY: getenv reads the environment with a NUL-terminated name; nothing modifies
        // the environment this early (no other thread runs yet). mi_option_set only stores the
        // value in mimalloc's option table, which is valid from load time.
        unsafe {
            if getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() {
                mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
            }
        }
    }

    #[used]
    #[unsafe(link_section = ".init_array")]
    static LAZY_ARENA_COMMIT: extern "C" fn() = lazy_arena_commit;
}

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
    /// Send one CheckRequest to an ext_authz server and print the response as JSON
    /// (exit 0 allowed, 1 denied or an error, 2 a usage error).
    Authorize(portcullis::client::check::CheckArgs),
    /// Parse and compile policies and report every error (like `opa check`).
    Check(portcullis::offline::check::CheckArgs),
    /// Evaluate a Rego query against policies and data (like `opa eval`).
    Eval(portcullis::offline::eval::EvalArgs),
    /// Run the `test_*` rules of policies (like `opa test`).
    Test(portcullis::offline::test::TestArgs),
    /// Evaluate a decision for each input file (like `opa exec`).
    Exec(portcullis::offline::exec::ExecArgs),
    /// Package a policy directory as a bundle, optionally signed (like `opa build -b`).
    Build(portcullis::offline::build::BuildArgs),
    /// Write `.signatures.json` for a bundle directory (like `opa sign --bundle`).
    Sign(portcullis::offline::build::SignArgs),
    /// Print the builtins this build supports as OPA capabilities JSON.
    Capabilities(portcullis::offline::capabilities::CapabilitiesArgs),
    /// Show a bundle's manifest, namespaces, rules and annotations (like `opa inspect`).
    Inspect(portcullis::offline::inspect::InspectArgs),
    /// List the base and virtual documents a query depends on (like `opa deps`).
    Deps(portcullis::offline::deps::DepsArgs),
    /// Print a Rego file's syntax tree as JSON (regorus' tree, not OPA's).
    Parse(portcullis::offline::parse::ParseArgs),
    /// Load tools: a Check load generator and a no-op floor server.
    Bench {
        #[command(subcommand)]
        cmd: portcullis::client::bench::BenchCommand,
    },
    /// Gateway tokens: mint one locally with the gateway's JWT secret, or log in with OpenID
    /// Connect (`auth login|logout|whoami`).
    Auth {
        #[command(subcommand)]
        cmd: portcullis::cli::auth::AuthCommand,
    },
    /// Offline authentication tools: test a credential, list failures, API keys, passwords.
    Authn {
        #[command(subcommand)]
        cmd: portcullis::cli::authn::AuthnCommand,
    },
    /// Ask the gateway for a decision (exit 1 unless it is an allow).
    Decide(portcullis::cli::commands::DecideArgs),
    /// List, read, write and remove a namespace's policies through the gateway.
    Policy {
        #[command(subcommand)]
        cmd: portcullis::cli::commands::PolicyCommand,
    },
    /// Read, write and remove a namespace's data through the gateway.
    Data {
        #[command(subcommand)]
        cmd: portcullis::cli::commands::DataCommand,
    },
    /// Follow the decision log through the gateway.
    Logs {
        #[command(subcommand)]
        cmd: portcullis::cli::commands::LogsCommand,
    },
    /// Manage API keys through the gateway.
    Keys {
        #[command(subcommand)]
        cmd: portcullis::cli::commands::KeysCommand,
    },
    /// Show what the gateway serves.
    Status(portcullis::cli::commands::StatusArgs),
    /// Internal token tools; token revocation through the gateway.
    Token {
        #[command(subcommand)]
        cmd: TokenCommand,
    },
    /// OPA bundles: `bundle build DIR -o bundle.tar.gz`.
    Bundle {
        #[command(subcommand)]
        cmd: BundleCommand,
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
        /// Require this audience (every internal token has one).
        #[arg(long, required_unless_present = "any_audience")]
        audience: Option<String>,
        /// Accept any audience (to inspect a token; an upstream always checks its own).
        #[arg(long, conflicts_with = "audience")]
        any_audience: bool,
        /// The token, or `-` to read it from standard input.
        token: String,
    },
    /// Revoke tokens through the gateway: by --jti, every token of a --subject issued before a
    /// time, the caller's own (--current), or a token's id (--from-token).
    Revoke(portcullis::cli::commands::RevokeArgs),
    /// List the revocations that still apply.
    Revocations(portcullis::cli::commands::RevocationsArgs),
}

#[derive(Debug, Subcommand)]
enum BundleCommand {
    /// Package a policy directory as an OPA bundle (optionally signed).
    Build(portcullis::offline::build::BuildArgs),
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
    /// Address serving only /health and /metrics (off unless set).
    #[arg(long = "diagnostic-addr")]
    diagnostic_addr: Option<String>,
    /// How callers of the HTTP API are identified, as OPA's flag: `token` makes a bearer
    /// token `input.identity` of the system.authz policy; `tls` requires a client certificate
    /// chaining to --tls-ca-cert-file and makes its subject `input.identity`.
    #[arg(long = "authentication", value_enum, default_value = "off")]
    authentication: portcullis::http::authz::Authentication,
    /// PEM certificate chain of the HTTP API: with it (and --tls-private-key-file) --addr and
    /// --diagnostic-addr serve HTTPS unless written http://.
    #[arg(long = "tls-cert-file", value_name = "PATH")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file (mode 0600 or 0400).
    #[arg(long = "tls-private-key-file", value_name = "PATH")]
    tls_private_key_file: Option<PathBuf>,
    /// PEM CAs that HTTP API client certificates must chain to (required by
    /// --authentication=tls; otherwise a presented certificate must still verify).
    #[arg(long = "tls-ca-cert-file", value_name = "PATH")]
    tls_ca_cert_file: Option<PathBuf>,
    /// How often the HTTP API's certificate, key and CA files are checked for changes
    /// (e.g. 30s, 5m); 0s checks every 5s.
    #[arg(
        long = "tls-cert-refresh-period",
        value_name = "DURATION",
        default_value = "0s"
    )]
    tls_cert_refresh_period: String,
    /// How calls on the HTTP API are authorized, as OPA's flag: `basic` has
    /// data.system.authz.allow decide every call, and is needed for writes through the REST API.
    #[arg(long = "authorization", value_enum, default_value = "off")]
    authorization: portcullis::http::authz::Authorization,
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
    /// Neither OPA nor Portcullis has `--port`: refused with the flags that set the ports.
    #[arg(long = "port", hide = true)]
    port: Option<String>,
    /// Seconds the drain at shutdown may take: in-flight requests finishing, then the decision
    /// log's flush.
    #[arg(long = "shutdown-grace-period", default_value_t = 10)]
    shutdown_grace_period: u64,
    /// Seconds to keep serving after SIGTERM/SIGINT, with gRPC health NOT_SERVING, before the
    /// drain starts (so that Envoy stops sending here first).
    #[arg(long = "shutdown-wait-period", default_value_t = 0)]
    shutdown_wait_period: u64,
    /// Load this path (directory or .tar.gz) as an OPA bundle; may be repeated. Like OPA's
    /// `--bundle`, this makes every PATH argument a bundle too.
    #[arg(short = 'b', long = "bundle")]
    bundle: bool,
    /// PEM public key file (or HMAC secret) that verifies signed bundles given on the command
    /// line.
    #[arg(long = "verification-key")]
    verification_key: Option<String>,
    /// The id of `--verification-key`.
    #[arg(long = "verification-key-id", default_value = "default")]
    verification_key_id: String,
    /// The algorithm of `--verification-key`.
    #[arg(long = "signing-alg", default_value = "RS256")]
    signing_alg: String,
    /// The scope signed bundles must carry.
    #[arg(long = "scope")]
    scope: Option<String>,
    /// Globs of bundle files left out of signature verification.
    #[arg(long = "exclude-files-verify")]
    exclude_files_verify: Vec<String>,
    /// Load signed bundles given on the command line without verifying their signatures.
    #[arg(long = "skip-verify")]
    skip_verify: bool,
    /// Accepted for compatibility with OPA; Portcullis never phones home.
    #[arg(long = "skip-version-check", hide = true)]
    skip_version_check: bool,
    /// Accepted for compatibility with OPA; Portcullis never phones home.
    #[arg(long = "disable-telemetry", hide = true)]
    disable_telemetry: bool,
    /// Policy and data files or directories.
    paths: Vec<PathBuf>,
}

/// The Check client's flags, which `check` had before it became OPA's `check`.
const CLIENT_FLAGS: &[&str] = &[
    "--addr",
    "--case",
    "--method",
    "-X",
    "--path",
    "--header",
    "-H",
    "--body",
    "--timeout",
];

/// Whether the arguments are the Check client's old form, `check --addr ...`.
fn is_old_check_form(args: &[String]) -> bool {
    args.get(1).is_some_and(|a| a == "check")
        && args.iter().skip(2).any(|a| {
            let flag = a.split('=').next().unwrap_or_default();
            CLIENT_FLAGS.contains(&flag)
                || (a.starts_with("-H") && a.len() > 2 && !a.starts_with("--"))
        })
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if is_old_check_form(&argv) {
        eprintln!("error: {}", portcullis::offline::check::AUTHORIZE_HINT);
        return ExitCode::from(2);
    }
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
        Some(Command::Exec(args)) => exit(portcullis::offline::exec::main(&args)),
        Some(Command::Build(args)) => exit(portcullis::offline::build::main(args)),
        Some(Command::Sign(args)) => exit(portcullis::offline::build::sign_main(&args)),
        Some(Command::Capabilities(args)) => exit(portcullis::offline::capabilities::main(&args)),
        Some(Command::Inspect(args)) => exit(portcullis::offline::inspect::main(&args)),
        Some(Command::Deps(args)) => exit(portcullis::offline::deps::main(&args)),
        Some(Command::Parse(args)) => exit(portcullis::offline::parse::main(&args)),
        Some(Command::Authorize(args)) => client_command(portcullis::client::check::main(args)),
        Some(Command::Check(args)) => exit(portcullis::offline::check::main(&args)),
        Some(Command::Bench { cmd }) => client_command(cmd.main()),
        Some(Command::Auth { cmd }) => client_command(portcullis::cli::finish(
            cmd.run(&portcullis::env::ProcessEnv),
        )),
        Some(Command::Authn { cmd }) => {
            client_command(portcullis::cli::finish(portcullis::cli::authn::authn(cmd)))
        }
        Some(Command::Decide(args)) => client_command(portcullis::cli::finish(
            portcullis::cli::commands::decide(args),
        )),
        Some(Command::Policy { cmd }) => client_command(portcullis::cli::finish(
            portcullis::cli::commands::policy(cmd),
        )),
        Some(Command::Data { cmd }) => client_command(portcullis::cli::finish(
            portcullis::cli::commands::data(cmd),
        )),
        Some(Command::Logs { cmd }) => client_command(portcullis::cli::finish(
            portcullis::cli::commands::logs(cmd),
        )),
        Some(Command::Keys { cmd }) => client_command(portcullis::cli::finish(
            portcullis::cli::commands::keys(cmd),
        )),
        Some(Command::Status(args)) => client_command(portcullis::cli::finish(
            portcullis::cli::commands::status(args),
        )),
        Some(Command::Token { cmd }) => client_command(token_command(cmd)),
        Some(Command::Bundle {
            cmd: BundleCommand::Build(args),
        }) => ExitCode::from(u8::try_from(portcullis::offline::build::main(args)).unwrap_or(1)),
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
        TokenCommand::Revoke(args) => {
            portcullis::cli::finish(portcullis::cli::commands::revoke(args)).await
        }
        TokenCommand::Revocations(args) => {
            portcullis::cli::finish(portcullis::cli::commands::revocations(args)).await
        }
        TokenCommand::Verify {
            jwks,
            issuer,
            audience,
            any_audience: _,
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
            match portcullis::token::verify::verify(
                &token,
                &set,
                &expect,
                portcullis::jose::clock::now(),
            )
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
    if let Some(port) = &args.port {
        let port = port.trim_start_matches(':');
        return fail(&format!(
            "run has no --port: set the ext_authz gRPC address with \
             --set plugins.envoy_ext_authz_grpc.addr=:{port} and the HTTP API's with --addr :{port}"
        ));
    }
    let config = match Config::load(args.config_file.as_deref(), &args.set) {
        Ok(c) => c,
        Err(e) => {
            telemetry::init(&args.log_level, args.log_format);
            return fail(&format!("config: {e}"));
        }
    };
    if args.paths.is_empty() && args.config_file.is_none() && config.bundles.is_empty() {
        args.paths.push(default_policy_dir());
    }
    let threads = config
        .runtime
        .worker_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get().min(4)));
    let memory_limit = config.runtime.memory_limit();
    portcullis::policy::set_memory_limit(memory_limit);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_stack_size(portcullis::policy::EVAL_STACK_BYTES)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        // The OTLP exporter's gRPC channel lives on this runtime.
        let tracing = TracingSettings::resolve(
            config.distributed_tracing.as_ref(),
            &portcullis::env::ProcessEnv,
        );
        let tracer = match tracing.as_ref().map(Tracer::start).transpose() {
            Ok(t) => t,
            Err(e) => {
                telemetry::init(&args.log_level, args.log_format);
                return fail(&e.to_string());
            }
        };
        if let Err(e) = telemetry::init_with_tracing(&args.log_level, args.log_format, tracer.as_ref()) {
            eprintln!("warning: logging: {e}");
        }
        if let Some(t) = &tracing {
            tracing::info!(endpoint = %t.endpoint, sample_ratio = t.sample_ratio, "distributed tracing on");
        }
        let code = serve(config, args).await;
        if let Some(tracer) = tracer {
            let _ = tokio::task::spawn_blocking(move || tracer.shutdown()).await;
        }
        code
    })
}

async fn serve(config: Config, args: RunArgs) -> ExitCode {
    // First, so that a signal during start-up does not take its default action (ending the
    // process) but is handled once serving.
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => return fail(&format!("cannot handle signals: {e}")),
    };
    let ext = &config.plugins.envoy_ext_authz_grpc;
    let protection = portcullis::http::authz::Protection {
        authentication: args.authentication,
        authorization: args.authorization,
    };
    let http_tls = match http_tls(&args) {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    let verification = match local_verification(&args) {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    let opts = PolicyOptions {
        rego_v0: args.v0_compatible,
        ignore: args.ignore.clone(),
        verification,
        skip_verify: args.skip_verify,
        ..server::policy_options(&config)
    };
    let started = std::time::Instant::now();
    // OPA's --bundle: every PATH is read as a bundle (directory or archive).
    let (paths, bundle_paths) = if args.bundle {
        (Vec::new(), args.paths.clone())
    } else {
        (args.paths.clone(), Vec::new())
    };
    let spec = LoadSpec {
        paths,
        bundle_paths,
        remote_bundles: config.bundles.keys().cloned().collect(),
    };
    let store = match PolicyStore::load_with(spec, opts) {
        Ok(s) => Arc::new(s),
        Err(e) => return fail(&format!("policy: {e}")),
    };
    let downloaders = match config.bundle_downloaders(store.clone()) {
        Ok(d) => d,
        Err(e) => return fail(&format!("config: {e}")),
    };
    let _bundle_tasks: Vec<AbortOnDrop> = downloaders
        .into_iter()
        .map(|d| {
            tracing::info!(bundle = d.name(), url = d.url(), "downloading bundle");
            AbortOnDrop(tokio::spawn(d.run()))
        })
        .collect();
    if let Some(query) = &ext.query {
        tracing::warn!(
            query = %query,
            "plugins.envoy_ext_authz_grpc.query is deprecated (as in OPA-Envoy); use path"
        );
    }
    if !store.is_ready() {
        tracing::info!(
            pending = ?store.pending_bundles(),
            "waiting for bundles: Checks fail as undefined and gRPC health is NOT_SERVING until each is activated"
        );
    } else if !store.snapshot().has_decision() {
        tracing::warn!(
            path = ext.decision_label(),
            "no policy defines the decision path; every Check will fail as undefined"
        );
    }
    let log = match DecisionLog::start(config.decision_log_settings(), None) {
        Ok(log) => log,
        Err(e) => return fail(&format!("decision_logs: {e}")),
    };
    let mut app = match App::builder(&config, store.clone())
        .log(log.clone())
        .build()
    {
        Ok(app) => app,
        Err(e) => return fail(&format!("config: {e}")),
    };
    let metrics = app.metrics.clone();
    app.grpc.shutdown_grace = Duration::from_secs(args.shutdown_grace_period);
    app.grpc.shutdown_wait = Duration::from_secs(args.shutdown_wait_period);
    app.rest.protection = protection;
    if let Err(e) = set_http_tls(&mut app, &args, http_tls) {
        return fail(&e);
    }

    let listeners = match bind(&config, &args, &app).await {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    let _watcher = if args.watch {
        let m = metrics.clone();
        match portcullis::policy::watch::watch(store.clone(), move |r| {
            server::record_reload(&m, portcullis::namespaces::DEFAULT_NAMESPACE, r)
        }) {
            Ok(w) => Some(w),
            Err(e) => return fail(&format!("--watch: {e}")),
        }
    } else {
        None
    };
    let mut _namespace_watchers = Vec::new();
    if args.watch {
        for (name, ns_store) in app.namespaces.all().into_iter().skip(1) {
            if ns_store.paths().is_empty() {
                continue;
            }
            let ns = name.clone();
            let m = metrics.clone();
            match portcullis::policy::watch::watch(ns_store, move |r| {
                server::record_reload(&m, &ns, r)
            }) {
                Ok(w) => _namespace_watchers.push(w),
                Err(e) => return fail(&format!("--watch: namespace {name}: {e}")),
            }
        }
    }
    tracing::info!(
        ext_authz = %listeners.ext_authz.describe(),
        http = %listeners.http.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.to_string()).unwrap_or_default(),
        gateway = %listeners.gateway.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.to_string()).unwrap_or_default(),
        ext_authz_http = %listeners.ext_authz_http.as_ref().and_then(|l| l.local_addr().ok()).map(|a| a.to_string()).unwrap_or_default(),
        ext_proc = %listeners.ext_proc.as_ref().map(|l| l.describe()).unwrap_or_default(),
        revision = store.snapshot().revision(),
        ready_ms = started.elapsed().as_millis() as u64,
        "portcullis serving"
    );
    let wait = app.grpc.shutdown_wait;
    let grace = app.grpc.shutdown_grace;
    let reloader = app.clone();
    let signalled: Arc<std::sync::OnceLock<tokio::time::Instant>> = Arc::default();
    let shutdown = {
        let signalled = signalled.clone();
        async move {
            signals
                .shutdown(move || {
                    let app = reloader.clone();
                    tokio::task::spawn_blocking(move || app.reload_files());
                })
                .await;
            let _ = signalled.set(tokio::time::Instant::now());
        }
    };
    let result = server::run(app, listeners, shutdown).await;
    // The grace period covers the drain and the decision log's flush (and last upload).
    let flush = signalled.get().map_or(grace, |at| {
        wait.saturating_add(grace).saturating_sub(at.elapsed())
    });
    log.shutdown(flush).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("server: {e}")),
    }
}

/// The HTTP API's TLS from the `--tls-*` flags, files read (`None` without the flags).
fn http_tls(args: &RunArgs) -> Result<Option<Arc<portcullis::tls::ServerTls>>, String> {
    let flags = portcullis::http::tls::TlsFlags {
        cert_file: args.tls_cert_file.clone(),
        private_key_file: args.tls_private_key_file.clone(),
        ca_cert_file: args.tls_ca_cert_file.clone(),
        refresh_period: portcullis::client::parse_duration(&args.tls_cert_refresh_period)
            .map_err(|e| format!("--tls-cert-refresh-period: {e}"))?,
    };
    flags
        .config(args.authentication)?
        .map(|c| {
            portcullis::tls::ServerTls::load(&c, &[b"http/1.1"])
                .map_err(portcullis::http::tls::flag_error)
        })
        .transpose()
}

/// Gives the HTTP API listeners their TLS, by OPA's scheme rule (see `http::tls`).
fn set_http_tls(
    app: &mut App,
    args: &RunArgs,
    tls: Option<Arc<portcullis::tls::ServerTls>>,
) -> Result<(), String> {
    let cert = tls.is_some();
    let (https, _) = portcullis::http::tls::scheme(http_addr_text(args), "--addr", cert)?;
    app.tls.http = tls.clone().filter(|_| https);
    if let Some(d) = &args.diagnostic_addr {
        let (https, _) = portcullis::http::tls::scheme(d, "--diagnostic-addr", cert)?;
        app.tls.diagnostic = tls.filter(|_| https);
    }
    Ok(())
}

fn http_addr_text(args: &RunArgs) -> &str {
    args.addr
        .first()
        .map(String::as_str)
        .unwrap_or("localhost:8181")
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// OPA's `--verification-key` flags, for bundles given on the command line.
fn local_verification(args: &RunArgs) -> Result<Option<portcullis::bundle::Verification>, String> {
    let Some(key) = &args.verification_key else {
        return Ok(None);
    };
    // As in OPA, the flag takes a PEM file path, or the key (or HMAC secret) itself.
    let key = match std::fs::read_to_string(key) {
        Ok(text) => text,
        Err(_) => key.clone(),
    };
    portcullis::bundle::signing::algorithm(&args.signing_alg)
        .map_err(|e| format!("--signing-alg: {e}"))?;
    let mut keys = std::collections::BTreeMap::new();
    keys.insert(
        args.verification_key_id.clone(),
        portcullis::config::KeyConfig {
            algorithm: args.signing_alg.clone(),
            key: Some(key),
            private_key: None,
            scope: args.scope.clone(),
        },
    );
    Ok(Some(portcullis::bundle::Verification {
        keys,
        key_id: Some(args.verification_key_id.clone()),
        scope: args.scope.clone(),
        exclude_files: args.exclude_files_verify.clone(),
    }))
}

async fn bind(config: &Config, args: &RunArgs, app: &App) -> Result<Listeners, String> {
    let ext_addr_text = &config.plugins.envoy_ext_authz_grpc.addr;
    let ext_addr = ListenAddr::parse(ext_addr_text)
        .map_err(|e| format!("config: plugins.envoy_ext_authz_grpc.addr: {e}"))?;
    let ext_authz = GrpcListener::bind(&ext_addr)
        .await
        .map_err(|e| format!("cannot listen on {ext_addr_text}: {e}"))?;
    let http_text = http_addr_text(args);
    let (_, http_bare) =
        portcullis::http::tls::scheme(http_text, "--addr", app.tls.http.is_some())?;
    let http_addr = ListenAddr::parse(http_bare).map_err(|e| format!("--addr: {e}"))?;
    let http = server::bind_tcp(&http_addr)
        .await
        .map_err(|e| format!("cannot listen on {http_text}: {e}"))?;
    let diagnostic = match &args.diagnostic_addr {
        None => None,
        Some(text) => {
            let (_, bare) = portcullis::http::tls::scheme(
                text,
                "--diagnostic-addr",
                app.tls.diagnostic.is_some(),
            )?;
            let addr = ListenAddr::parse(bare).map_err(|e| format!("--diagnostic-addr: {e}"))?;
            Some(
                server::bind_tcp(&addr)
                    .await
                    .map_err(|e| format!("cannot listen on {text}: {e}"))?,
            )
        }
    };
    let gateway = match (&config.gateway, &app.gateway) {
        (Some(g), Some(gw)) => {
            let addr = g
                .socket_addr()
                .map_err(|e| format!("config: gateway.addr: {e}"))?;
            let listener = server::bind_tcp(&addr)
                .await
                .map_err(|e| format!("cannot listen on {}: {e}", g.addr))?;
            let bound = listener
                .local_addr()
                .map_err(|e| format!("gateway address: {e}"))?;
            gw.authenticator()
                .mode()
                .check_bind(&bound, g.allow_open)
                .map_err(|e| format!("gateway: {e}"))?;
            Some(listener)
        }
        _ => None,
    };
    let ext_authz_http = match &config.plugins.envoy_ext_authz_http {
        Some(h) => {
            let addr = h
                .socket_addr()
                .map_err(|e| format!("config: plugins.envoy_ext_authz_http.{e}"))?;
            Some(
                server::bind_tcp(&addr)
                    .await
                    .map_err(|e| format!("cannot listen on {}: {e}", h.addr))?,
            )
        }
        None => None,
    };
    let ext_proc = match &config.plugins.envoy_ext_proc_grpc {
        Some(p) if app.ext_proc.is_some() => {
            let addr = ListenAddr::parse(&p.addr)
                .map_err(|e| format!("config: plugins.envoy_ext_proc_grpc.addr: {e}"))?;
            Some(
                GrpcListener::bind(&addr)
                    .await
                    .map_err(|e| format!("cannot listen on {}: {e}", p.addr))?,
            )
        }
        _ => None,
    };
    Ok(Listeners {
        ext_authz,
        http: Some(http),
        diagnostic,
        gateway,
        ext_authz_http,
        ext_proc,
    })
}

/// The signals `run` handles. All three end the process by default; once installed, none does:
///
/// - SIGTERM or SIGINT starts the graceful shutdown (`server::run`); a second one while it runs
///   exits at once with status 128 + the signal's number (143, 130), as a shell reports a
///   process killed by it: requests still in flight are cut and decision-log events not yet
///   written are lost;
/// - SIGHUP re-reads the policy and TLS files ([`App::reload_files`]); ignored once shutting
///   down.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Resolves at the first SIGTERM or SIGINT, calling `reload` at each SIGHUP before it; then
    /// watches for the second one.
    async fn shutdown(mut self, reload: impl Fn()) {
        loop {
            tokio::select! {
                _ = self.term.recv() => break,
                _ = self.int.recv() => break,
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP: re-reading the policy and TLS files");
                    reload();
                }
            }
        }
        tokio::spawn(async move {
            let (name, code) = loop {
                tokio::select! {
                    _ = self.term.recv() => break ("SIGTERM", 143),
                    _ = self.int.recv() => break ("SIGINT", 130),
                    _ = self.hup.recv() => tracing::info!("SIGHUP ignored: shutting down"),
                }
            };
            tracing::warn!(signal = name, "second signal during shutdown: exiting now");
            std::process::exit(code);
        });
    }
}

/// A fatal error: printed once, as `error: ...` on stderr (as OPA's command line does), exit 1.
fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(1)
}
