use chunkd::config::{Cli, Command, LogFormat, ServeArgs, TokenAction};
use chunkd::meta::MetaStore;
use clap::Parser;
use std::process::ExitCode;

/// Tunes glibc's allocator for many concurrent uploads. The read buffers of
/// a connection whose body waits for the disk or the hasher grow past
/// 128 KiB; from mmap (glibc's default for them) each one cost page faults
/// to fill and an unmapping that flushes every core's TLB. From the heap
/// instead they are reused; four arenas keep what the heap holds near what
/// is in use (docs/benchmarks/tuning.md). The engine's own write buffers
/// do not come from malloc.
fn tune_the_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters, before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

/// Logs through env_logger (`RUST_LOG`, `info` by default), with the
/// HTTP layer's complaints about requests it could not parse demoted from
/// ERROR to INFO: they are a client's fault, and at ERROR any client could
/// flood the error log.
fn init_logging(format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if format == LogFormat::Json {
        builder.format(json_line);
    }
    let inner = builder.build();
    log::set_max_level(inner.filter());
    if log::set_boxed_logger(Box::new(ClientFaultsAtInfo(inner))).is_err() {
        eprintln!("chunkd: a logger was already set");
    }
}

/// A log record as one JSON object: a request's line is one already
/// (`log_requests`), to which the time and level are added; any other
/// record's text goes in `message`.
fn json_line(buf: &mut env_logger::fmt::Formatter, record: &log::Record) -> std::io::Result<()> {
    use std::io::Write;
    let head = serde_json::json!({
        "time": buf.timestamp_micros().to_string(),
        "level": record.level().as_str(),
        "target": record.target(),
    })
    .to_string();
    let head = head.strip_suffix('}').unwrap_or(&head);
    let message = record.args().to_string();
    match message.strip_prefix('{') {
        Some(fields) if record.target() == chunkd::http::REQUEST_TARGET => {
            writeln!(buf, "{head},{fields}")
        }
        _ => writeln!(
            buf,
            "{head},\"message\":{}}}",
            serde_json::Value::String(message)
        ),
    }
}

/// The target under which actix-http logs a connection it gave up on
/// ("stream error: request parse error …").
const HTTP_DISPATCHER: &str = "actix_http::h1::dispatcher";

struct ClientFaultsAtInfo(env_logger::Logger);

impl log::Log for ClientFaultsAtInfo {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if record.target() != HTTP_DISPATCHER || record.level() != log::Level::Error {
            return self.0.log(record);
        }
        let demoted = log::Record::builder()
            .args(*record.args())
            .level(log::Level::Info)
            .target(record.target())
            .module_path(record.module_path())
            .file(record.file())
            .line(record.line())
            .build();
        if self.0.enabled(demoted.metadata()) {
            self.0.log(&demoted);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

fn main() -> ExitCode {
    tune_the_allocator();
    let cli = Cli::parse();
    let format = match &cli.command {
        None => cli.serve.log_format,
        Some(Command::Serve(args) | Command::Cleanup(args)) => args.log_format,
        Some(_) => LogFormat::Text,
    };
    init_logging(format);
    let result = match cli.command {
        None => run_async(chunkd::serve(*cli.serve)),
        Some(Command::Serve(args)) => run_async(chunkd::serve(*args)),
        Some(Command::Migrate(store)) => chunkd::open_store(&store, true).map(|_| {
            println!("database is up to date");
            ExitCode::SUCCESS
        }),
        Some(Command::Token { action }) => token(action),
        Some(Command::Cleanup(args)) => run_async(cleanup(*args)),
        Some(Command::Usage(store)) => usage(&store),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("chunkd: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_async<T, F: std::future::Future<Output = anyhow::Result<T>>>(
    future: F,
) -> anyhow::Result<ExitCode> {
    actix_web::rt::System::new().block_on(future)?;
    Ok(ExitCode::SUCCESS)
}

fn usage(store: &chunkd::config::StoreArgs) -> anyhow::Result<ExitCode> {
    let meta = chunkd::open_store(store, true)?;
    for usage in meta.usage_by_owner()? {
        println!(
            "{}\t{}\t{}\t{}",
            usage.owner.as_deref().unwrap_or("-"),
            usage.uploads,
            usage.uploads_in_progress,
            usage.bytes
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn token(action: TokenAction) -> anyhow::Result<ExitCode> {
    match action {
        TokenAction::Create { owner, store } => {
            let owner = owner.trim();
            anyhow::ensure!(!owner.is_empty(), "--owner must not be empty");
            let meta = chunkd::open_store(&store, true)?;
            let (record, token) = chunkd::tokens::create_token(meta.as_ref(), owner)?;
            eprintln!(
                "token {} for owner {} (shown only now):",
                record.id, record.owner
            );
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        TokenAction::List(store) => {
            let meta = chunkd::open_store(&store, true)?;
            for record in meta.list_tokens()? {
                println!(
                    "{}\t{}\t{}",
                    record.id,
                    record.owner,
                    record.created_at.format("%Y-%m-%dT%H:%M:%SZ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenAction::Revoke { id, store } => {
            let meta = chunkd::open_store(&store, true)?;
            if meta.delete_token(&id)? {
                println!("revoked token {id}");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("chunkd: no token {id}");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

/// Cleanup reads the server's settings: the same database, data directory
/// and file extensions.
async fn cleanup(args: ServeArgs) -> anyhow::Result<()> {
    args.validate().map_err(anyhow::Error::msg)?;
    let meta = chunkd::open_store(&args.store, args.sync)?;
    let engine = chunkd::build_engine(&args, meta.clone())?;
    let swept = chunkd::cleanup(&engine, meta, args.event_retention.0).await?;
    let (removed, orphans) = (swept.expired, swept.orphans);
    for upload in &removed {
        println!(
            "removed {} {:?} ({} of {} bytes, expired {})",
            upload.id,
            upload.filename,
            upload.offset,
            upload.total.map_or("?".to_owned(), |t| t.to_string()),
            upload.expires_at.format("%Y-%m-%dT%H:%M:%SZ")
        );
    }
    println!("{} expired uploads removed", removed.len());
    println!("{} expired attachments removed", swept.attachments);
    for key in &orphans {
        println!(
            "removed the files of {} in {:?}, which no upload row knows",
            key.id, key.dir
        );
    }
    println!("{} files without an upload removed", orphans.len());
    println!(
        "{} events older than --event-retention removed",
        swept.events
    );
    Ok(())
}
