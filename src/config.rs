//! Typed settings: flags of `chunkd`, each also read from the `CHUNKD_`
//! environment variable of the same name.

use crate::engine::{expand_path_template, ChecksumAlgo, EngineSettings, OwnerLimits};
use crate::meta::DatabaseUrl;
use crate::storage::s3::{self, part_size_for, S3Settings, MAX_PART_SIZE, MIN_PART_SIZE};
use chrono::Utc;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A duration written like `30s`, `15m`, `12h`, `1d`, `250ms` or `1h 30m`
/// (humantime's units); `0` is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl FromStr for Span {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        humantime::parse_duration(text.trim())
            .map(Span)
            .map_err(|err| format!("{text:?} is not a duration like 30s, 15m, 12h or 1d: {err}"))
    }
}

/// A size written like `512`, `64KiB`, `64MiB`, `10GB` or `1TiB`: `KB`, `MB`
/// and the like count in thousands, `KiB`, `MiB` in 1024s (bytesize's units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let size = text
            .trim()
            .parse::<bytesize::ByteSize>()
            .map_err(|err| format!("{text:?} is not a size like 512, 64KiB or 10GB: {err}"))?
            .as_u64();
        // bytesize saturates where a size overflows; rows hold an i64.
        if i64::try_from(size).is_err() {
            return Err(format!("{text:?} is too large"));
        }
        Ok(Size(size))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `scheme://host[:port]`, as a browser sends it in `Origin`.
fn is_origin(text: &str) -> bool {
    let Some((scheme, authority)) = text.split_once("://") else {
        return false;
    };
    let host = authority
        .rsplit_once(':')
        .filter(|(_, port)| port.parse::<u16>().is_ok())
        .map_or(authority, |(host, _)| host);
    !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c))
}

/// An octal file mode like `640` or `0o640`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl FromStr for FileMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let digits = text.trim().trim_start_matches("0o");
        match u32::from_str_radix(digits, 8) {
            Ok(mode) if mode <= 0o777 => Ok(FileMode(mode)),
            _ => Err(format!("{text:?} is not an octal file mode like 640")),
        }
    }
}

fn parse_checksum(text: &str) -> Result<ChecksumAlgo, String> {
    match ChecksumAlgo::parse(text) {
        Some(algo @ (ChecksumAlgo::Md5 | ChecksumAlgo::Sha256)) => Ok(algo),
        _ => Err(format!("{text:?}: use md5 or sha256")),
    }
}

fn parse_path_template(text: &str) -> Result<String, String> {
    match expand_path_template(text, Utc::now()) {
        Some(_) => Ok(text.to_owned()),
        None => Err(format!(
            "{text:?} must be a relative strftime path inside the data directory, like uploads/%Y/%m/%d"
        )),
    }
}

fn parse_extension(text: &str) -> Result<String, String> {
    let ext = text.trim().trim_start_matches('.').to_lowercase();
    if ext.is_empty() || ext.contains(['/', '\\']) {
        return Err(format!("{text:?} is not a file extension"));
    }
    Ok(ext)
}

fn parse_media_type(text: &str) -> Result<String, String> {
    let media = text.trim().to_lowercase();
    match media.split_once('/') {
        Some((kind, sub)) if !kind.is_empty() && !sub.is_empty() && kind != "*" => Ok(media),
        _ => Err(format!(
            "{text:?} is not a media type like image/png or image/*"
        )),
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "chunkd",
    version,
    about = "Resumable chunked-upload server",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Without a command, chunkd serves with these settings.
    #[command(flatten)]
    pub serve: Box<ServeArgs>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the upload API (the default command).
    Serve(Box<ServeArgs>),
    /// Apply pending database migrations and exit.
    Migrate(StoreArgs),
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Delete expired incomplete uploads (row and file) and print them; reads
    /// the same settings as serve.
    Cleanup(Box<ServeArgs>),
    /// What each owner holds, as the quotas count it: owner (`-` for
    /// anonymous uploads), uploads, uploads in progress, bytes.
    Usage(StoreArgs),
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Create a token for an owner; it is printed once and stored hashed.
    Create {
        #[arg(long)]
        owner: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List tokens (id, owner, creation time).
    List(StoreArgs),
    /// Revoke a token by its id.
    Revoke {
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Where the data lives: shared by every command.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Directory of the part files and of the default SQLite database.
    #[arg(long, env = "CHUNKD_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// postgres://… for PostgreSQL; unset for the SQLite file in the data
    /// directory (a SQLite path or sqlite://PATH also works). DATABASE_URL
    /// is read too.
    #[arg(long, env = "CHUNKD_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Most database connections a process opens for its requests (opened
    /// when needed, kept while busy). A few more serve leases and, on
    /// SQLite, lookups.
    #[arg(long, env = "CHUNKD_DB_CONNECTIONS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_connections: u32,
    /// Mode of stored files (uploads and the SQLite database), in octal.
    #[arg(long, env = "CHUNKD_FILE_MODE", default_value = "640")]
    pub file_mode: FileMode,
}

impl StoreArgs {
    pub fn database(&self) -> Result<DatabaseUrl, String> {
        let url = self
            .database_url
            .clone()
            .or_else(|| std::env::var("DATABASE_URL").ok());
        DatabaseUrl::resolve(url.as_deref(), &self.data_dir)
    }
}

/// How to reach an S3-compatible bucket; credentials and region are also
/// read from the usual AWS_* environment variables.
#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// Endpoint of an S3-compatible server (e.g. http://127.0.0.1:9000);
    /// AWS's own when unset.
    #[arg(long, env = "CHUNKD_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "CHUNKD_S3_REGION")]
    pub s3_region: Option<String>,
    /// Address the bucket as bucket.host (AWS) instead of host/bucket
    /// (path style, which S3-compatible servers expect).
    #[arg(long, env = "CHUNKD_S3_VIRTUAL_HOSTED_STYLE", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub s3_virtual_hosted_style: bool,
    #[arg(long, env = "CHUNKD_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    #[arg(long, env = "CHUNKD_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// Size of every part of a multipart upload but the last (at least
    /// 5MiB); larger where an upload would need more than 10,000 parts.
    #[arg(long, env = "CHUNKD_S3_PART_SIZE", default_value = "8MiB")]
    pub s3_part_size: Size,
    /// Memory all uploads together may hold for their parts; at least one
    /// part.
    #[arg(long, env = "CHUNKD_S3_BUFFER", default_value = "32MiB")]
    pub s3_buffer: Size,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "CHUNKD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// How long an incomplete upload lives, counted from its creation.
    #[arg(long, env = "CHUNKD_EXPIRATION", default_value = "1d")]
    pub expiration: Span,
    /// How long a session attachment lives, counted from when it was
    /// attached; the sweep then removes it.
    #[arg(long, env = "CHUNKD_ATTACHMENT_EXPIRATION", default_value = "7d")]
    pub attachment_expiration: Span,
    /// strftime pattern of the directory (in the data directory) of new part files.
    #[arg(long, env = "CHUNKD_PATH_TEMPLATE", default_value = "uploads/%Y/%m/%d", value_parser = parse_path_template)]
    pub path_template: String,
    /// Extension of completed files.
    #[arg(long, env = "CHUNKD_COMPLETE_EXT", default_value = ".done")]
    pub complete_ext: String,
    /// Extension of part files of incomplete uploads.
    #[arg(long, env = "CHUNKD_INCOMPLETE_EXT", default_value = ".part")]
    pub incomplete_ext: String,
    /// Checksum algorithm of completion (md5 or sha256); also the name of the form field.
    #[arg(long, env = "CHUNKD_CHECKSUM", default_value = "md5", value_parser = parse_checksum)]
    pub checksum: ChecksumAlgo,
    /// tus uploads are hashed whole as they arrive, with the checksum above,
    /// for the upload JSON (false: not hashed, which saves the CPU of the
    /// hash where it is the limit; their checksum is then null).
    #[arg(long, env = "CHUNKD_HASH_TUS", default_value_t = true, action = clap::ArgAction::Set)]
    pub hash_tus: bool,
    /// Uploads are visible to their owner only (others get 404).
    #[arg(long, env = "CHUNKD_OWNER_RESTRICTED", default_value_t = true, action = clap::ArgAction::Set)]
    pub owner_restricted: bool,
    /// Serve the demo page at /demo/ (and / redirects there): FilePond and
    /// Uppy uploading to this server. Off in production unless wanted.
    #[arg(long, env = "CHUNKD_DEMO", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub demo: bool,
    /// Let FilePond's `fetch` download remote files on a caller's behalf
    /// (callers with a token only): public addresses only, no redirects.
    #[arg(long, env = "CHUNKD_FILEPOND_FETCH", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub filepond_fetch: bool,
    /// Hosts FilePond's `fetch` may reach at any address, private ones
    /// included (an intranet the operator trusts); listing any turns fetch on.
    #[arg(long, env = "CHUNKD_FILEPOND_FETCH_HOSTS", value_delimiter = ',')]
    pub filepond_fetch_hosts: Vec<String>,
    /// Allow requests without credentials to create uploads.
    #[arg(long, env = "CHUNKD_ANONYMOUS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub anonymous: bool,
    /// Where upload bytes go: the data directory (the default), or
    /// s3://bucket/prefix for an S3-compatible bucket (see the --s3-* flags).
    #[arg(long, env = "CHUNKD_STORAGE", value_parser = parse_storage)]
    pub storage: Option<(String, String)>,
    #[command(flatten)]
    pub s3: S3Args,
    /// Largest file accepted (none by default).
    #[arg(long, env = "CHUNKD_MAX_BYTES")]
    pub max_bytes: Option<Size>,
    /// Smallest file accepted.
    #[arg(long, env = "CHUNKD_MIN_BYTES", default_value = "0")]
    pub min_bytes: Size,
    /// Allowed file extensions, comma-separated (any by default).
    #[arg(long, env = "CHUNKD_ALLOWED_EXTENSIONS", value_delimiter = ',', value_parser = parse_extension)]
    pub allowed_extensions: Vec<String>,
    /// Allowed media types (as implied by the extension), comma-separated, like image/*,application/pdf.
    #[arg(long, env = "CHUNKD_ALLOWED_MEDIA_TYPES", value_delimiter = ',', value_parser = parse_media_type)]
    pub allowed_media_types: Vec<String>,
    /// Largest body of one request (none by default).
    #[arg(long, env = "CHUNKD_MAX_CHUNK_BYTES")]
    pub max_chunk_bytes: Option<Size>,
    /// Bytes one owner may hold (anonymous uploads count as one owner):
    /// the sizes of its uploads, complete or in progress. A new upload past
    /// it gets 413.
    #[arg(long, env = "CHUNKD_QUOTA_BYTES")]
    pub quota_bytes: Option<Size>,
    /// Accept upload tokens that the application issues itself: JWTs signed
    /// with this secret (HS256; at least 32 bytes). `sub` is the owner.
    #[arg(
        long,
        env = "CHUNKD_JWT_SECRET",
        hide_env_values = true,
        conflicts_with = "jwt_public_key"
    )]
    pub jwt_secret: Option<String>,
    /// Accept JWTs signed with the private half of this public key (PEM
    /// file: RSA for RS256, P-256 for ES256, Ed25519 for EdDSA).
    #[arg(long, env = "CHUNKD_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// Ask the application here before each new upload is recorded: a 2xx
    /// answer accepts it (and may attach metadata), a 4xx refuses it with
    /// that status and message.
    #[arg(long, env = "CHUNKD_HOOK_URL")]
    pub hook_url: Option<String>,
    /// POST an event here when an upload completes, fails, is aborted,
    /// expires or is deleted (http or https; signed with --webhook-secret).
    #[arg(long, env = "CHUNKD_WEBHOOK_URL", requires = "webhook_secret")]
    pub webhook_url: Option<String>,
    /// The key of the events' signatures (HMAC-SHA256 of the body, in
    /// `Chunkd-Signature`; at least 16 bytes).
    #[arg(long, env = "CHUNKD_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// How long an undelivered event is kept and retried before it is
    /// dropped.
    #[arg(long, env = "CHUNKD_EVENT_RETENTION", default_value = "3d")]
    pub event_retention: Span,
    /// Uploads one owner may have in progress at once; one more gets 429.
    #[arg(long, env = "CHUNKD_MAX_UPLOADS_IN_PROGRESS")]
    pub max_uploads_in_progress: Option<u64>,
    /// How long a request waits for another one on the same upload before 409.
    #[arg(long, env = "CHUNKD_LOCK_TIMEOUT", default_value = "10s")]
    pub lock_timeout: Span,
    /// A client whose body makes no progress (64 KiB) for this long is cut off.
    #[arg(long, env = "CHUNKD_READ_TIMEOUT", default_value = "30s")]
    pub read_timeout: Span,
    /// How often the server removes expired incomplete uploads by itself,
    /// starting at startup (0: never; `chunkd cleanup` does it on demand).
    #[arg(long, env = "CHUNKD_CLEANUP_INTERVAL", default_value = "1h")]
    pub cleanup_interval: Span,
    /// How long the lock of a crashed server process outlives it.
    #[arg(long, env = "CHUNKD_LEASE_TIME", default_value = "10s")]
    pub lease_time: Span,
    /// Sync part files and database commits to the disk before
    /// acknowledging an offset (off: faster; an acknowledged offset still
    /// survives a crash of chunkd, but may be lost in a power failure).
    #[arg(long, env = "CHUNKD_SYNC", default_value_t = true, action = clap::ArgAction::Set)]
    pub sync: bool,
    /// Requests served at once; more get 503 (Retry-After: 1).
    #[arg(long, env = "CHUNKD_MAX_REQUESTS", default_value = "1024")]
    pub max_requests: usize,
    /// Build URLs from X-Forwarded-Proto / X-Forwarded-Host (behind a trusted proxy).
    #[arg(long, env = "CHUNKD_TRUST_PROXY", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub trust_proxy: bool,
    /// Origins that browsers may call from, comma-separated (`*`: any); none by default.
    #[arg(long, env = "CHUNKD_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Worker threads (default: one per core).
    #[arg(long, env = "CHUNKD_WORKERS")]
    pub workers: Option<usize>,
    /// On SIGTERM or SIGINT the server stops accepting; requests in flight
    /// get this long to finish (whole seconds), then are cut off and their
    /// chunks rolled back.
    #[arg(long, env = "CHUNKD_SHUTDOWN_TIMEOUT", default_value = "30s")]
    pub shutdown_timeout: Span,
    /// Log lines as text, or as one JSON object each (`json`): a request's
    /// with its id, owner, upload, status, bytes and duration.
    #[arg(long, env = "CHUNKD_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// A bound of a duration flag, as a person would write it.
fn describe(span: Duration) -> String {
    match span.as_millis() {
        0 => "0s".into(),
        ms if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

impl ServeArgs {
    /// The bucket's settings, with `--storage s3://…`.
    pub fn s3_settings(&self) -> Option<S3Settings> {
        let (bucket, prefix) = self.storage.clone()?;
        let max_bytes = self.max_bytes.map(|size| size.0);
        Some(S3Settings {
            bucket,
            prefix,
            endpoint: self.s3.s3_endpoint.clone(),
            region: self.s3.s3_region.clone(),
            virtual_hosted_style: self.s3.s3_virtual_hosted_style,
            access_key_id: self.s3.s3_access_key_id.clone(),
            secret_access_key: self.s3.s3_secret_access_key.clone(),
            part_size: self.s3.s3_part_size.0,
            buffer: self.s3.s3_buffer.0,
            max_bytes,
            complete_ext: self.complete_ext.clone(),
            incomplete_ext: self.incomplete_ext.clone(),
        })
    }

    pub fn engine_settings(&self) -> EngineSettings {
        EngineSettings {
            expiration: self.expiration.0,
            attachment_expiration: self.attachment_expiration.0,
            path_template: self.path_template.clone(),
            checksum: self.checksum,
            owner_restricted: self.owner_restricted,
            max_bytes: self.max_bytes.map(|s| s.0),
            min_bytes: self.min_bytes.0,
            allowed_extensions: self.allowed_extensions.clone(),
            allowed_media_types: self.allowed_media_types.clone(),
            max_chunk_bytes: self.max_chunk_bytes.map(|s| s.0),
            lock_timeout: self.lock_timeout.0,
            read_timeout: self.read_timeout.0,
            lease_time: self.lease_time.0,
            owner_limits: OwnerLimits {
                bytes: self.quota_bytes.map(|s| s.0),
                uploads_in_progress: self.max_uploads_in_progress,
            },
            hook_url: self.hook_url.clone(),
        }
    }

    /// Settings that a flag parser alone cannot check.
    pub fn validate(&self) -> Result<(), String> {
        for (name, ext) in [
            ("--complete-ext", &self.complete_ext),
            ("--incomplete-ext", &self.incomplete_ext),
        ] {
            if ext.is_empty() || ext.contains(['/', '\\']) {
                return Err(format!("{name} {ext:?} must be a non-empty file extension"));
            }
        }
        if self.complete_ext == self.incomplete_ext {
            return Err("--complete-ext and --incomplete-ext must differ".into());
        }
        if self
            .jwt_secret
            .as_ref()
            .is_some_and(|secret| secret.len() < 32)
        {
            return Err("--jwt-secret must be at least 32 bytes".into());
        }
        for (name, url) in [
            ("--webhook-url", &self.webhook_url),
            ("--hook-url", &self.hook_url),
        ] {
            if let Some(url) = url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!("{name} {url}: not an http or https URL"));
                }
            }
        }
        if self
            .webhook_secret
            .as_ref()
            .is_some_and(|secret| secret.len() < 16)
        {
            return Err("--webhook-secret must be at least 16 bytes".into());
        }
        for origin in &self.cors_origins {
            if origin != "*" && !is_origin(origin) {
                return Err(format!(
                    "--cors-origins {origin:?} must be `*` or an origin like https://app.example.com"
                ));
            }
        }
        const DAY: Duration = Duration::from_secs(86_400);
        // Every time the server computes from a duration (an expiry date,
        // a lease's end, a deadline) stays far inside what clocks and HTTP
        // dates can hold.
        for (name, span, least, most) in [
            (
                "--expiration",
                self.expiration,
                Duration::from_secs(1),
                DAY * 36_500,
            ),
            (
                "--attachment-expiration",
                self.attachment_expiration,
                Duration::from_secs(1),
                DAY * 36_500,
            ),
            (
                "--lease-time",
                self.lease_time,
                Duration::from_millis(400),
                DAY,
            ),
            ("--lock-timeout", self.lock_timeout, Duration::ZERO, DAY),
            (
                "--read-timeout",
                self.read_timeout,
                Duration::from_millis(100),
                DAY,
            ),
            (
                "--cleanup-interval",
                self.cleanup_interval,
                Duration::ZERO,
                DAY * 366,
            ),
            (
                "--shutdown-timeout",
                self.shutdown_timeout,
                Duration::ZERO,
                DAY,
            ),
            (
                "--event-retention",
                self.event_retention,
                Duration::from_secs(60),
                DAY * 366,
            ),
        ] {
            if span.0 < least || span.0 > most {
                return Err(format!(
                    "{name} must be from {} to {}",
                    describe(least),
                    describe(most)
                ));
            }
        }
        // Sizes are stored as BIGINT.
        let largest = i64::MAX as u64;
        for (name, size) in [
            ("--max-bytes", self.max_bytes),
            ("--min-bytes", Some(self.min_bytes)),
            ("--max-chunk-bytes", self.max_chunk_bytes),
        ] {
            if size.is_some_and(|size| size.0 > largest) {
                return Err(format!("{name} must be at most {largest} bytes"));
            }
        }
        if self.max_chunk_bytes.is_some_and(|size| size.0 == 0) {
            return Err("--max-chunk-bytes must be at least 1".into());
        }
        for (name, count) in [
            ("--max-requests", Some(self.max_requests)),
            ("--workers", self.workers),
        ] {
            if count == Some(0) {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if let Some(max) = self.max_bytes {
            if max.0 < self.min_bytes.0 {
                return Err("--max-bytes is below --min-bytes".into());
            }
        }
        if let Some(s3) = self.s3_settings() {
            if s3.part_size < MIN_PART_SIZE || s3.part_size > MAX_PART_SIZE {
                return Err("--s3-part-size must be from 5MiB to 5GiB".into());
            }
            let part = part_size_for(s3.part_size, None, s3.max_bytes);
            if part > s3.buffer {
                return Err(format!(
                    "--s3-buffer must hold one part ({part} bytes, sized for --max-bytes)"
                ));
            }
        }
        Ok(())
    }
}

/// `--storage`: an s3:// URL as (bucket, prefix).
fn parse_storage(url: &str) -> Result<(String, String), String> {
    s3::parse_url(url).ok_or_else(|| "expected s3://bucket or s3://bucket/prefix".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!("30s".parse::<Span>().unwrap().0, Duration::from_secs(30));
        assert_eq!("1d".parse::<Span>().unwrap().0, Duration::from_secs(86_400));
        assert_eq!("15m".parse::<Span>().unwrap().0, Duration::from_secs(900));
        assert_eq!(
            "250ms".parse::<Span>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!("0".parse::<Span>().unwrap().0, Duration::ZERO);
        assert_eq!(
            "1h 30m".parse::<Span>().unwrap().0,
            Duration::from_secs(5400)
        );
        assert!("7".parse::<Span>().is_err());
        assert!("s".parse::<Span>().is_err());
        assert!("-1s".parse::<Span>().is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!("64MiB".parse::<Size>().unwrap().0, 64 << 20);
        assert_eq!("10GB".parse::<Size>().unwrap().0, 10_000_000_000);
        assert_eq!("512".parse::<Size>().unwrap().0, 512);
        assert_eq!("1kib".parse::<Size>().unwrap().0, 1024);
        assert!("99999999999TiB".parse::<Size>().is_err());
        assert!("12XB".parse::<Size>().is_err());
    }

    #[test]
    fn origins() {
        for origin in [
            "https://app.example.com",
            "http://localhost:5173",
            "http://[::1]:80",
        ] {
            assert!(is_origin(origin), "{origin}");
        }
        for text in [
            "app.example.com",
            "https://",
            "https://a.example/path",
            "https://a b",
        ] {
            assert!(!is_origin(text), "{text}");
        }
    }

    #[test]
    fn modes_templates_and_lists() {
        assert_eq!("640".parse::<FileMode>().unwrap().0, 0o640);
        assert_eq!("0o600".parse::<FileMode>().unwrap().0, 0o600);
        assert!("999".parse::<FileMode>().is_err());
        assert!(parse_path_template("uploads/%Y/%m/%d").is_ok());
        assert!(parse_path_template("../escape").is_err());
        assert!(parse_path_template("/abs/%Y").is_err());
        assert!(parse_path_template("bad/%Q").is_err());
        assert_eq!(parse_extension(".PDF").unwrap(), "pdf");
        assert!(parse_media_type("image").is_err());
        assert_eq!(parse_media_type("Image/*").unwrap(), "image/*");
    }
}
