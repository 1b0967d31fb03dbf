//! chunkd: a resumable chunked-upload server. `main` and the tests share
//! everything here.

pub mod config;
pub mod engine;
pub mod http;
pub mod meta;
pub mod protocol;
pub mod storage;
pub mod tokens;

use actix_http::error::DispatchError;
use actix_http::Protocol;
use actix_service::{fn_service, map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::AppConfig;
use actix_web::rt::net::TcpStream;
use anyhow::Context;
use config::{ServeArgs, StoreArgs};
use engine::{drop_old_events, Engine, EventDelivery, Hashing, Webhook};
use meta::{DieselStore, MetaStore, Outbox};
use protocol::kit::gate::GatedIo;
use protocol::kit::jwt::JwtKeys;
use protocol::kit::{AppState, ListenAddr};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use storage::{LocalDisk, PartStore, S3Store};

const BLOCKING_THREADS_PER_WORKER: usize = 16;

/// How long a response may take to reach a client that stopped reading,
/// before its connection is dropped (actix-web's default).
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Pending connections the kernel queues for accepting (actix-web's
/// default).
const LISTEN_BACKLOG: i32 = 1024;

/// The listening socket, as actix-web would make it.
fn listen_on(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Opens the database of the settings and brings its schema up to date;
/// `durable`: commits wait for the disk (`--sync`).
pub fn open_store(store: &StoreArgs, durable: bool) -> anyhow::Result<Arc<DieselStore>> {
    let url = store.database().map_err(anyhow::Error::msg)?;
    let meta = DieselStore::open(&url, store.db_connections, durable, store.file_mode.0)
        .with_context(|| url.describe())?;
    let applied = meta.migrate().context("applying migrations")?;
    for version in applied {
        log::info!("applied migration {version}");
    }
    Ok(Arc::new(meta))
}

/// The engine on the storage of the settings: the data directory, or a
/// bucket (checked here, so a wrong address or key fails at start).
pub fn build_engine(args: &ServeArgs, meta: Arc<dyn MetaStore>) -> anyhow::Result<Engine> {
    let storage: Arc<dyn PartStore> = match args.s3_settings() {
        Some(s3) => {
            let described = format!("s3://{}/{}", s3.bucket, s3.prefix);
            let bucket = S3Store::new(s3).with_context(|| described.clone())?;
            bucket.check().with_context(|| described.clone())?;
            log::info!("upload bytes in {described}");
            Arc::new(bucket)
        }
        None => Arc::new(LocalDisk::new(
            args.store.data_dir.clone(),
            args.store.file_mode.0,
            &args.incomplete_ext,
            &args.complete_ext,
            args.sync,
        )),
    };
    Ok(Engine::new(meta, storage, args.engine_settings()))
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

/// The server's own `chunkd cleanup`, at startup and now and then.
/// Uploads in use are left for the next round, so several processes
/// sweeping one database is safe.
async fn remove_expired_every(
    state: actix_web::web::Data<AppState>,
    outbox: Arc<dyn Outbox>,
    retention: Duration,
    every: Duration,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match cleanup(&state.engine, outbox.clone(), retention).await {
            Ok(swept) => {
                for upload in swept.expired {
                    log::info!("upload {}: expired, removed", upload.id);
                }
                for key in swept.orphans {
                    log::info!("upload {}: files without a row, removed", key.id);
                }
                if swept.attachments > 0 {
                    log::info!("{} expired attachments removed", swept.attachments);
                }
                if swept.events > 0 {
                    log::info!("{} events older than {retention:?} removed", swept.events);
                }
            }
            Err(err) => log::warn!("cleanup failed: {err}"),
        }
    }
}

/// What a sweep removed.
pub struct Swept {
    pub expired: Vec<meta::UploadRecord>,
    /// Session attachments past `--attachment-expiration`.
    pub attachments: usize,
    /// Files no upload row knew.
    pub orphans: Vec<storage::PartKey>,
    /// Events past their retention, delivered or not.
    pub events: u64,
}

/// Removes expired uploads and attachments, then files no upload row
/// knows, then events older than `retention`.
pub async fn cleanup(
    engine: &Engine,
    outbox: Arc<dyn Outbox>,
    retention: Duration,
) -> engine::EngineResult<Swept> {
    let expired = engine.remove_expired().await?;
    let attachments = engine.remove_old_attachments().await?;
    let orphans = engine.remove_orphans().await?;
    let metrics = engine.metrics().clone();
    let events =
        engine::run_blocking(move || Ok(drop_old_events(outbox.as_ref(), retention, &metrics)?))
            .await?;
    Ok(Swept {
        expired,
        attachments,
        orphans,
        events,
    })
}

/// The key of the application's upload tokens, from `--jwt-secret` or
/// `--jwt-public-key`.
fn jwt_keys(args: &ServeArgs) -> anyhow::Result<Option<JwtKeys>> {
    if let Some(secret) = &args.jwt_secret {
        return JwtKeys::from_secret(secret.as_bytes())
            .map(Some)
            .map_err(|err| anyhow::anyhow!("--jwt-secret: {err}"));
    }
    let Some(path) = &args.jwt_public_key else {
        return Ok(None);
    };
    let pem =
        std::fs::read(path).with_context(|| format!("--jwt-public-key {}", path.display()))?;
    JwtKeys::from_public_key(&pem)
        .map(Some)
        .map_err(|err| anyhow::anyhow!("--jwt-public-key {}: {err}", path.display()))
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
    LocalDisk::check_root(&args.store.data_dir)
        .with_context(|| format!("data directory {}", args.store.data_dir.display()))?;
    let jwt = jwt_keys(&args)?;
    let outbox: Arc<dyn Outbox> = meta.clone();
    let engine = build_engine(&args, meta)?;
    if let Some(url) = args.webhook_url.clone() {
        let webhook = Webhook {
            url,
            secret: args.webhook_secret.clone().unwrap_or_default(),
        };
        EventDelivery::new(outbox.clone(), webhook, engine.metrics().clone())
            .spawn()
            .context("starting the delivery of events")?;
    }
    let state = actix_web::web::Data::new(AppState {
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
        known_tokens: Default::default(),
        jwt,
        fetch_hosts: (args.filepond_fetch || !args.filepond_fetch_hosts.is_empty())
            .then(|| Arc::new(args.filepond_fetch_hosts.clone())),
    });
    if !args.cleanup_interval.0.is_zero() {
        actix_web::rt::spawn(remove_expired_every(
            state.clone(),
            outbox,
            args.event_retention.0,
            args.cleanup_interval.0,
        ));
    }
    let listener =
        listen_on(args.listen).with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let read_timeout = args.read_timeout.0;
    let cors_origins = args.cors_origins.clone();
    let log_format = args.log_format;
    let demo = args.demo;
    let metrics = actix_web::web::Data::new(http::Metrics::new(&state.engine));
    let builder = actix_server::Server::build();
    let shutdown = builder.graceful_shutdown_signal();
    let mut builder = builder
        // Disk and database work runs on these threads; a small pool keeps
        // memory flat under many concurrent uploads (the CPU has few cores
        // anyway, and waiting requests queue).
        .worker_max_blocking_threads(BLOCKING_THREADS_PER_WORKER)
        .listen("chunkd", listener, move || {
            let app = actix_web::App::new()
                .app_data(state.clone())
                .app_data(ListenAddr(addr))
                .app_data(metrics.clone())
                .app_data(log_format)
                .wrap(actix_web::middleware::from_fn(http::cap_requests))
                .wrap(actix_web::middleware::from_fn(http::count_requests))
                .wrap(http::cors(&cors_origins))
                .wrap(actix_web::middleware::from_fn(http::log_requests))
                .configure(|cfg| {
                    if demo {
                        http::demo::routes(cfg);
                    }
                    http::routes(cfg);
                })
                .into_factory()
                .map_err(|err: actix_web::Error| err.error_response());
            let shutdown = shutdown.clone();
            let service = actix_http::HttpService::build()
                .graceful_shutdown_signal(move || {
                    let shutdown = shutdown.clone();
                    async move { shutdown.notified().await }
                })
                .client_request_timeout(read_timeout)
                .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
                .on_connect_ext(|io: &GatedIo<TcpStream>, data| {
                    data.insert(io.gate());
                })
                // Only the URLs of responses would read it, and they take
                // the listen address from `ListenAddr` instead.
                .finish(map_config(app, |()| AppConfig::default()));
            fn_service(|io: TcpStream| async move {
                let peer = io.peer_addr().ok();
                Ok::<_, DispatchError>((GatedIo::new(io), Protocol::Http1, peer))
            })
            .and_then(service)
        })?;
    if let Some(workers) = args.workers {
        builder = builder.workers(workers);
    }
    builder = builder.shutdown_timeout(args.shutdown_timeout.0.as_secs());
    println!("chunkd listening on http://{addr}");
    std::io::stdout().flush()?;
    builder.run().await?;
    Ok(())
}
