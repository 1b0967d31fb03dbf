use chunkd::config::{Cli, Command, ServeArgs, TokenAction};
use chunkd::meta::MetaStore;
use clap::Parser;
use std::process::ExitCode;

/// Buffers larger than the engine's 128 KiB write batches (actix read
/// buffers that grew) come from mmap and go back to the system when freed.
/// By default glibc raises this threshold as large buffers are freed and
/// then keeps them in per-thread arenas: with 64 concurrent uploads that
/// held tens of MiB. The batches themselves stay below it, so that they are
/// reused without page faults.
fn return_large_buffers_to_the_system() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter, before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024 + 1);
    }
}

fn main() -> ExitCode {
    return_large_buffers_to_the_system();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        None => run_async(chunkd::serve(*cli.serve)),
        Some(Command::Serve(args)) => run_async(chunkd::serve(*args)),
        Some(Command::Migrate(store)) => chunkd::open_store(&store).map(|_| {
            println!("database is up to date");
            ExitCode::SUCCESS
        }),
        Some(Command::Token { action }) => token(action),
        Some(Command::Cleanup(args)) => run_async(cleanup(*args)),
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

fn token(action: TokenAction) -> anyhow::Result<ExitCode> {
    match action {
        TokenAction::Create { owner, store } => {
            let owner = owner.trim();
            anyhow::ensure!(!owner.is_empty(), "--owner must not be empty");
            let meta = chunkd::open_store(&store)?;
            let (record, token) = chunkd::tokens::create_token(meta.as_ref(), owner)?;
            eprintln!(
                "token {} for owner {} (shown only now):",
                record.id, record.owner
            );
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        TokenAction::List(store) => {
            let meta = chunkd::open_store(&store)?;
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
            let meta = chunkd::open_store(&store)?;
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
    let meta = chunkd::open_store(&args.store)?;
    let engine = chunkd::build_engine(&args, meta);
    let removed = engine.remove_expired().await?;
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
    Ok(())
}
