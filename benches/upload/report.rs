//! The figures of a round, and their medians and ranges over rounds.

use std::time::Duration;

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// MB/s, in millions of bytes.
pub fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

/// The `p` quantile of `sorted`, in milliseconds.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

pub struct Row {
    pub bytes: u64,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    pub peak_rss: u64,
    /// CPU time the server spent (user and system, all threads): steadier
    /// than throughput on a shared machine.
    pub server_cpu: Duration,
    /// Percent of the machine's time that the hypervisor gave to other
    /// guests meanwhile: where it is high, the row measured the neighbours.
    pub steal: f64,
    /// PostgreSQL: CPU time of the database's processes serving the server's
    /// connections (those open at the end: the pools keep theirs).
    pub database_cpu: Option<Duration>,
}

impl Row {
    pub fn mb_per_s(&self) -> f64 {
        mb_per_s(self.bytes, self.elapsed)
    }
}

/// A row, and the md5sum throughput measured just before it (MB/s).
pub fn print_row(head: &str, row: &Row, md5sum: f64) {
    let mut latencies = row.latencies.clone();
    latencies.sort();
    println!(
        "{head} {:>6.0} MB/s  {:>4.2} x md5sum {:>4.0}  p50 {:>7.1} ms  p99 {:>7.1} ms  peak RSS {:>4} MiB  server CPU {:>4.2} s  steal {:>2.0} %{}",
        row.mb_per_s(),
        row.mb_per_s() / md5sum,
        md5sum,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        row.peak_rss >> 20,
        row.server_cpu.as_secs_f64(),
        row.steal,
        row.database_cpu
            .map(|cpu| format!("  database CPU {:.2} s", cpu.as_secs_f64()))
            .unwrap_or_default()
    );
}

/// One printed figure of a round.
pub struct Line {
    pub subject: String,
    pub label: String,
    pub figures: Figures,
}

pub enum Figures {
    /// A scenario's row, and md5sum's MB/s just before it.
    Row(Row, f64),
    Completion(Duration),
    /// Small uploads: how many a second, and the server's peak RSS and CPU
    /// time, and the steal, as a row has them.
    Small {
        per_s: f64,
        peak_rss: u64,
        server_cpu: Duration,
        steal: f64,
    },
    /// In MB/s: md5sum, a plain write with fdatasync, the bare receive of
    /// (c); and the percent of the machine's time stolen meanwhile.
    Machine {
        md5sum: f64,
        write: f64,
        bare: f64,
        steal: f64,
    },
    /// In MB/s: the S3 emulator taking the bytes of (a) and of (c) straight
    /// from a plain client; and the steal meanwhile.
    Emulator {
        parts: f64,
        whole: f64,
        many: f64,
        steal: f64,
    },
}

impl Line {
    pub fn print(&self) {
        let head = format!("{:<9} {:<48}", self.subject, self.label);
        match &self.figures {
            Figures::Row(row, md5sum) => print_row(&head, row, *md5sum),
            Figures::Completion(took) => println!("{head} {:.1} ms", took.as_secs_f64() * 1e3),
            Figures::Small {
                per_s,
                peak_rss,
                server_cpu,
                steal,
            } => println!(
                "{head} {per_s:>6.0} uploads/s  peak RSS {:>4} MiB  server CPU {:>4.2} s  steal {steal:>2.0} %",
                peak_rss >> 20,
                server_cpu.as_secs_f64()
            ),
            Figures::Machine {
                md5sum,
                write,
                bare,
                steal,
            } => println!(
                "machine   md5sum of 1 GiB: {md5sum:.0} MB/s; plain write of 1 GiB + fdatasync: {write:.0} MB/s; bare receive of (c): {bare:.0} MB/s  steal {steal:.0} %"
            ),
            Figures::Emulator {
                parts,
                whole,
                many,
                steal,
            } => println!(
                "emulator  multipart straight in, 8 MiB parts: (a) 1 GiB {parts:.0} MB/s, {whole:.0} MB/s with its completion; (c) 64 x 16 MiB at once {many:.0} MB/s  steal {steal:.0} %"
            ),
        }
    }
}

/// The median, lowest and highest of some figures, with `decimals`.
pub fn spread(mut values: Vec<f64>, decimals: usize) -> String {
    values.sort_by(f64::total_cmp);
    let (low, median, high) = (
        values[0],
        values[values.len() / 2],
        values[values.len() - 1],
    );
    format!("{median:>6.decimals$} [{low:.decimals$}-{high:.decimals$}]")
}

impl Figures {
    /// What the summary gives the spread of.
    pub fn numbers(&self) -> Vec<f64> {
        match self {
            Figures::Row(row, md5sum) => vec![
                row.mb_per_s(),
                row.mb_per_s() / md5sum,
                (row.peak_rss >> 20) as f64,
                row.server_cpu.as_secs_f64(),
                row.steal,
            ],
            Figures::Completion(took) => vec![took.as_secs_f64() * 1e3],
            Figures::Small {
                per_s,
                peak_rss,
                server_cpu,
                steal,
            } => vec![
                *per_s,
                (peak_rss >> 20) as f64,
                server_cpu.as_secs_f64(),
                *steal,
            ],
            Figures::Machine {
                md5sum,
                write,
                bare,
                steal,
            } => vec![*md5sum, *write, *bare, *steal],
            Figures::Emulator {
                parts,
                whole,
                many,
                steal,
            } => vec![*parts, *whole, *many, *steal],
        }
    }
}

/// After several rounds: each figure's median and range over them.
pub fn print_summary(rounds: &[Vec<Line>]) {
    println!("\nover {} rounds: median [lowest-highest]", rounds.len());
    for (i, first) in rounds[0].iter().enumerate() {
        let numbers: Vec<Vec<f64>> = rounds.iter().map(|r| r[i].figures.numbers()).collect();
        let of =
            |n: usize, decimals| spread(numbers.iter().map(|each| each[n]).collect(), decimals);
        let head = format!("{:<9} {:<48}", first.subject, first.label);
        match first.figures {
            Figures::Row(..) => println!(
                "{head} {} MB/s  {} x md5sum  peak RSS {} MiB  server CPU {} s  steal {} %",
                of(0, 0),
                of(1, 2),
                of(2, 0),
                of(3, 2),
                of(4, 0)
            ),
            Figures::Completion(_) => println!("{head} {} ms", of(0, 1)),
            Figures::Small { .. } => println!(
                "{head} {} uploads/s  peak RSS {} MiB  server CPU {} s  steal {} %",
                of(0, 0),
                of(1, 0),
                of(2, 2),
                of(3, 0)
            ),
            Figures::Machine { .. } => println!(
                "machine   md5sum of 1 GiB: {} MB/s; plain write of 1 GiB + fdatasync: {} MB/s; bare receive of (c): {} MB/s  steal {} %",
                of(0, 0),
                of(1, 0),
                of(2, 0),
                of(3, 0)
            ),
            Figures::Emulator { .. } => println!(
                "emulator  multipart straight in, 8 MiB parts: (a) 1 GiB {} MB/s, {} MB/s with its completion; (c) 64 x 16 MiB at once {} MB/s  steal {} %",
                of(0, 0),
                of(1, 0),
                of(2, 0),
                of(3, 0)
            ),
        }
    }
}
