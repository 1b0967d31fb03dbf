//! chunkup: pushes files to chunkd (or any drf-chunked-upload or tus 1.0
//! server) over bad networks. It resumes instead of restarting, retries with
//! backoff, shows a progress bar to a person and plain lines in CI logs, and
//! ends with an exit code a script can act on (see `chunkup --help`).

use chunkup_client::{Error, Event, Observer, Options, Protocol, RetryPolicy, Source};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const EXIT_CODES: &str = "Exit codes:
  0  done
  1  a local error (the file or the resume state cannot be read or written)
  2  usage error (bad arguments, an option the server cannot honour)
  3  the server refused the upload (4xx that a retry cannot fix)
  4  checksum mismatch (the server holds other bytes than the file)
  5  retries exhausted (network or server down for longer than --retries/--retry-time)";

#[derive(Parser)]
#[command(name = "chunkup", version, about = "Resumable uploads to chunkd", after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Uploads FILE (`-` for standard input) to URL, resuming an earlier
    /// interrupted run of the same file to the same URL; prints the upload's URL.
    Push {
        /// The file to upload, or `-` for standard input.
        file: PathBuf,
        /// The chunked endpoint (…/upload/) or a tus endpoint (…/files/).
        url: String,
        /// Bytes per request: a number with an optional K, M or G (powers of 1024).
        #[arg(long, default_value = "8MiB", value_parser = parse_size)]
        chunk_size: u64,
        /// Send this many parts at once (tus concatenation), for high-latency links.
        #[arg(long, default_value_t = 1)]
        parallel: usize,
        /// The upload's name on the server (default: the file's name; `stdin` for `-`).
        #[arg(long)]
        name: Option<String>,
        /// Do not read or write resume state.
        #[arg(long)]
        no_resume: bool,
        /// Where resume state lives (default: $XDG_CACHE_HOME/chunkup or ~/.cache/chunkup).
        #[arg(long, env = "CHUNKUP_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// Seconds between progress lines when the output is not a terminal.
        #[arg(long, default_value_t = 10.0)]
        progress_interval: f64,
        #[command(flatten)]
        common: Common,
    },
    /// Shows where an upload stands.
    Status {
        /// The upload's URL, as `push` printed it.
        url: String,
        #[command(flatten)]
        common: Common,
    },
    /// Removes an upload from the server (and its resume state).
    Abort {
        url: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args)]
struct Common {
    /// API token.
    #[arg(long, env = "CHUNKUP_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// `auto`: tus if the URL answers OPTIONS as a tus server, else chunked.
    #[arg(long, value_enum, default_value = "auto")]
    protocol: ProtocolArg,
    /// Failed attempts in a row (without progress) before giving up.
    #[arg(long, default_value_t = 10)]
    retries: u32,
    /// Seconds of failures in a row (without progress) after which no retry starts.
    #[arg(long, default_value_t = 600.0)]
    retry_time: f64,
    /// The first retry delay in seconds; each next one doubles (with jitter), up to 30 s.
    #[arg(long, default_value_t = 0.5)]
    retry_delay: f64,
    /// Seconds a connection may stay silent before the attempt fails.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// No progress output: only the result (standard output) and errors.
    #[arg(long, short)]
    quiet: bool,
    /// Print one JSON object with the result (or the error) on standard output.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProtocolArg {
    Auto,
    Chunked,
    Tus,
}

/// A chunk size in bytesize's units, as the server's size flags take them:
/// `KB`, `MB` count in thousands, `KiB`, `MiB` in 1024s.
fn parse_size(text: &str) -> Result<u64, String> {
    match text.trim().parse::<bytesize::ByteSize>()?.as_u64() {
        0 => Err(format!("{text} is not a usable chunk size")),
        size => Ok(size),
    }
}

/// The value of the option `--name`, in seconds, as a duration.
fn seconds(name: &str, value: f64) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| Error::Usage(format!("--{name} must be a number of seconds")))
}

impl Common {
    fn options(&self) -> Result<Options, Error> {
        Ok(Options {
            protocol: match self.protocol {
                ProtocolArg::Auto => Protocol::Auto,
                ProtocolArg::Chunked => Protocol::Chunked,
                ProtocolArg::Tus => Protocol::Tus,
            },
            token: self.token.clone(),
            retry: RetryPolicy {
                retries: self.retries,
                max_time: seconds("retry-time", self.retry_time)?,
                base_delay: seconds("retry-delay", self.retry_delay)?,
                max_delay: Duration::from_secs(30),
            },
            timeout: seconds("timeout", self.timeout)?,
            ..Options::default()
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let common = match &cli.command {
        Command::Push { common, .. }
        | Command::Status { common, .. }
        | Command::Abort { common, .. } => common,
    };
    let result = run(&cli.command, common);
    match result {
        Ok(json) => {
            if common.json {
                println!("{json}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            let code = exit_code(&err);
            eprintln!("chunkup: error: {err}");
            if common.json {
                let report = serde_json::json!({
                    "error": err.to_string(),
                    "exit_code": code,
                    "status": err.status(),
                });
                println!("{report}");
            }
            ExitCode::from(code)
        }
    }
}

fn exit_code(err: &Error) -> u8 {
    match err {
        Error::Local { .. } => 1,
        Error::Usage(_) => 2,
        Error::Rejected { .. } | Error::Gone { .. } | Error::Protocol(_) => 3,
        Error::ChecksumMismatch(_) => 4,
        Error::RetriesExhausted { .. } | Error::Transient(_) | Error::Throttled { .. } => 5,
    }
}

/// Runs a command; answers its result as JSON (printed with `--json`).
fn run(command: &Command, common: &Common) -> Result<serde_json::Value, Error> {
    let mut options = common.options()?;
    match command {
        Command::Push {
            file,
            url,
            chunk_size,
            parallel,
            name,
            no_resume,
            state_dir,
            progress_interval,
            ..
        } => {
            options.chunk_size = *chunk_size;
            options.parallel = *parallel;
            if let Some(dir) = state_dir {
                options.state_dir = Some(dir.clone());
            }
            let spool_dir = options.state_dir.clone().unwrap_or_else(std::env::temp_dir);
            if *no_resume {
                options.state_dir = None;
            }
            let mut source = if file.as_os_str() == "-" {
                Source::stdin(&spool_dir, "stdin")?
            } else {
                Source::open(file)?
            };
            if let Some(name) = name {
                source.rename(name);
            }
            let interval = seconds("progress-interval", *progress_interval)?;
            let display = Display::new(common, interval);
            let outcome = chunkup_client::push(&source, url, &options, &display);
            display.finish();
            let outcome = outcome?;
            if !common.json {
                println!("{}", outcome.url);
            }
            Ok(serde_json::to_value(&outcome).expect("outcome serializes"))
        }
        Command::Status { url, .. } => {
            let status = chunkup_client::status(url, &options)?;
            if !common.json {
                let total = status.total.map_or("unknown".to_owned(), |t| t.to_string());
                println!("{}", status.url);
                println!("protocol: {:?}", status.protocol);
                println!("offset:   {} of {total} bytes", status.offset);
                println!(
                    "state:    {}",
                    if status.complete {
                        "complete"
                    } else {
                        "incomplete"
                    }
                );
                if let Some(md5) = &status.md5 {
                    println!("md5:      {md5}");
                }
                if let Some(expires) = &status.expires {
                    println!("expires:  {expires}");
                }
            }
            Ok(serde_json::to_value(&status).expect("status serializes"))
        }
        Command::Abort { url, .. } => {
            chunkup_client::abort(url, &options)?;
            if !common.json {
                println!("aborted {url}");
            }
            Ok(serde_json::json!({ "aborted": url }))
        }
    }
}

/// Progress for a person (a bar on a terminal), for a log (a line now and
/// then), or nothing (`--quiet`, `--json`). It all goes to standard error.
enum Display {
    Silent,
    Bar(ProgressBar),
    Lines(Mutex<Lines>),
}

struct Lines {
    interval: Duration,
    start: Instant,
    last: Option<Instant>,
    from: u64,
    done: u64,
    total: Option<u64>,
}

impl Display {
    fn new(common: &Common, interval: Duration) -> Display {
        if common.quiet || common.json {
            Display::Silent
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            Display::Bar(bar)
        } else {
            Display::Lines(Mutex::new(Lines {
                interval,
                start: Instant::now(),
                last: None,
                from: 0,
                done: 0,
                total: None,
            }))
        }
    }

    fn say(&self, text: &str) {
        match self {
            Display::Silent => {}
            Display::Bar(bar) => bar.println(format!("chunkup: {text}")),
            Display::Lines(_) => eprintln!("chunkup: {text}"),
        }
    }

    fn finish(&self) {
        match self {
            Display::Bar(bar) => bar.finish_and_clear(),
            Display::Lines(lines) => {
                let mut lines = lines.lock().expect("progress lock");
                if lines.last.is_some() {
                    lines.print();
                }
            }
            Display::Silent => {}
        }
    }
}

impl Lines {
    fn print(&mut self) {
        let elapsed = self.start.elapsed().as_secs_f64();
        let rate = (self.done.saturating_sub(self.from)) as f64 / elapsed.max(1e-3);
        let mut line = format!("chunkup: {}", human(self.done as f64));
        if let Some(total) = self.total {
            let percent = if total == 0 {
                100.0
            } else {
                self.done as f64 * 100.0 / total as f64
            };
            line.push_str(&format!(" of {} ({percent:.0}%)", human(total as f64)));
        }
        line.push_str(&format!(", {}/s", human(rate)));
        if let (Some(total), true) = (self.total, rate > 0.0) {
            let left = total.saturating_sub(self.done) as f64 / rate;
            line.push_str(&format!(", {left:.0}s left"));
        }
        eprintln!("{line}");
        self.last = Some(Instant::now());
    }
}

fn human(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

impl Observer for Display {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Started { url, total, offset } => {
                match offset {
                    0 => self.say(&format!("uploading to {url}")),
                    _ => self.say(&format!("resuming {url} at byte {offset}")),
                }
                match self {
                    Display::Bar(bar) => {
                        let template = match total {
                            Some(total) => {
                                bar.set_length(total);
                                "{bar:40.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}"
                            }
                            None => "{spinner} {bytes} {binary_bytes_per_sec}",
                        };
                        bar.set_style(
                            ProgressStyle::with_template(template).expect("valid template"),
                        );
                        bar.reset_eta();
                        bar.set_position(offset);
                    }
                    Display::Lines(lines) => {
                        let mut lines = lines.lock().expect("progress lock");
                        (lines.from, lines.done, lines.total) = (offset, offset, total);
                        lines.start = Instant::now();
                    }
                    Display::Silent => {}
                }
            }
            Event::Progress { done, total } => match self {
                Display::Bar(bar) => {
                    if let Some(total) = total {
                        bar.set_length(total);
                    }
                    bar.set_position(done);
                }
                Display::Lines(lines) => {
                    let mut lines = lines.lock().expect("progress lock");
                    (lines.done, lines.total) = (done, total.or(lines.total));
                    if lines
                        .last
                        .is_none_or(|last| last.elapsed() >= lines.interval)
                    {
                        lines.print();
                    }
                }
                Display::Silent => {}
            },
            Event::Retrying {
                error,
                delay,
                attempt,
            } => self.say(&format!(
                "attempt {attempt} failed: {error}; retrying in {:.1}s",
                delay.as_secs_f64()
            )),
            Event::Restarting { reason } => self.say(&format!("{reason}; starting a new upload")),
        }
    }
}
