//! chunkd: a resumable chunked-upload server. `main` and the tests share
//! everything here.

pub mod config;
pub mod engine;
pub mod http;
pub mod meta;
pub mod protocol;
pub mod storage;
pub mod tokens;

use anyhow::Context;
use config::{ServeArgs, StoreArgs};
use engine::{Engine, Hashing};
use meta::{DieselStore, MetaStore};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use storage::LocalDisk;

const BLOCKING_THREADS_PER_WORKER: usize = 16;

/// Opens the database of the settings and brings its schema up to date;
/// `durable`: commits wait for the disk (`--sync`).
pub fn open_store(store: &StoreArgs, durable: bool) -> anyhow::Result<Arc<DieselStore>> {
    let url = store.database().map_err(anyhow::Error::msg)?;
    let meta =
        DieselStore::open(&url, store.db_connections, durable).with_context(|| url.describe())?;
    let applied = meta.migrate().context("applying migrations")?;
    for version in applied {
        log::info!("applied migration {version}");
    }
    Ok(Arc::new(meta))
}

pub fn build_engine(args: &ServeArgs, meta: Arc<dyn MetaStore>) -> Engine {
    let storage = LocalDisk::new(
        args.store.data_dir.clone(),
        args.file_mode.0,
        &args.incomplete_ext,
        &args.complete_ext,
        args.sync,
    );
    Engine::new(meta, Arc::new(storage), args.engine_settings())
}

/// Secure by default yet zero-setup: a server without any token makes one
/// for `admin` and prints it, once.
fn ensure_a_token(meta: &dyn MetaStore) -> anyhow::Result<()> {
    if meta.list_tokens()?.is_empty() {
        let (_, token) = tokens::create_token(meta, "admin")?;
        println!("No API token existed, so one was created for owner admin (shown only now):");
        println!("  Authorization: Token {token}");
    }
    Ok(())
}

/// The server's own `chunkd cleanup`, now and then. Uploads in use are left
/// for the next round, so several processes sweeping one database is safe.
async fn remove_expired_every(state: actix_web::web::Data<http::AppState>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match state.engine.remove_expired().await {
            Ok(removed) => {
                for upload in removed {
                    log::info!("upload {}: expired, removed", upload.id);
                }
            }
            Err(err) => log::warn!("removing expired uploads failed: {err}"),
        }
    }
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    args.validate().map_err(anyhow::Error::msg)?;
    let meta = open_store(&args.store, args.sync)?;
    log::info!("metadata in {}", meta.url().describe());
    log::info!("MD5 of one upload in {}", chunkd_md5::one_chain_kernel());
    match chunkd_md5::vector_kernels() {
        Some(set) => log::info!("MD5 of concurrent uploads side by side with {set}"),
        None => log::info!("MD5 of each upload on its own (no AVX2 on this CPU)"),
    }
    ensure_a_token(meta.as_ref())?;
    let engine = build_engine(&args, meta);
    engine
        .storage()
        .check()
        .with_context(|| format!("data directory {}", args.store.data_dir.display()))?;
    let state = actix_web::web::Data::new(http::AppState {
        engine,
        anonymous: args.anonymous,
        trust_proxy: args.trust_proxy,
        tus_hashing: if args.hash_tus {
            Hashing::Whole
        } else {
            Hashing::Off
        },
        max_requests: args.max_requests,
        active: Arc::default(),
        cors_origins: args.cors_origins.clone(),
        known_tokens: Default::default(),
    });
    if !args.cleanup_interval.0.is_zero() {
        actix_web::rt::spawn(remove_expired_every(state.clone(), args.cleanup_interval.0));
    }
    let mut server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(state.clone())
            .wrap(actix_web::middleware::from_fn(http::cap_requests))
            .wrap(actix_web::middleware::from_fn(http::cors))
            .wrap(actix_web::middleware::Logger::new("%a \"%r\" %s %b %Dms"))
            .configure(http::routes)
    })
    .client_request_timeout(args.read_timeout.0)
    // Disk and database work runs on these threads; a small pool keeps
    // memory flat under many concurrent uploads (the CPU has few cores
    // anyway, and waiting requests queue).
    .worker_max_blocking_threads(BLOCKING_THREADS_PER_WORKER)
    .bind(args.listen)
    .with_context(|| format!("cannot listen on {}", args.listen))?;
    if let Some(workers) = args.workers {
        server = server.workers(workers);
    }
    for addr in server.addrs() {
        println!("chunkd listening on http://{addr}");
    }
    std::io::stdout().flush()?;
    server.run().await?;
    Ok(())
}
