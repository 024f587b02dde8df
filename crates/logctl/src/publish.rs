//! `logctl publish`: NDJSON from a file or standard input, published through the producer
//! library (`logfleet-client`) with confirms, a progress bar and a final count.
//!
//! Input: one producer message per line, in either form of the contract (a single log
//! `{"episodeId","timestamp","level","message","metadata"}` or a batch `{"episodeId","logs"}`);
//! blank lines are ignored. Each line is validated with the ingest-worker's own decoder and the
//! configured `limits.*`. By default an invalid line is reported on stderr with its line number
//! and skipped, the valid lines are published, and the command exits 1 after its summary. With
//! `--strict` the whole input is validated first and nothing is published unless every line is
//! valid (standard input is then held in memory).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use logfleet::config::Settings;
use logfleet::contract::{MessageProperties, decode};
use logfleet::domain::EpisodeId;
use logfleet_client::{Log, Producer, ProducerConfig};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Invalid lines reported one by one; past this many only the count goes on.
const MAX_REPORTED: u64 = 100;

#[derive(clap::Args)]
pub struct PublishArgs {
    /// NDJSON file to publish; `-` or nothing reads standard input.
    pub file: Option<PathBuf>,
    /// Validate the whole input first and publish nothing unless every line is valid.
    #[arg(long)]
    pub strict: bool,
    /// Most logs per published message (clamped to `limits.max_logs_per_message`).
    #[arg(long, default_value_t = 1_000)]
    pub batch_logs: usize,
    /// Largest message body in bytes (clamped to `limits.max_message_bytes`).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub batch_bytes: usize,
    /// Milliseconds a batch waits for more logs of its episode; 0 publishes only full batches
    /// and, at the end, the rest.
    #[arg(long, default_value_t = 200)]
    pub linger_ms: u64,
    /// Prefix of the message ids (`{producer-id}-{n}`); random by default.
    #[arg(long)]
    pub producer_id: Option<String>,
    /// Tries of one publish before giving up.
    #[arg(long, default_value_t = 8)]
    pub max_attempts: u32,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// The logs of one valid line.
type Parsed = (EpisodeId, Vec<Log>);

/// Validates one line against the producer contract and the limits.
fn parse_line(line: &str, settings: &Settings) -> Result<Parsed, String> {
    // A line carries no AMQP properties: the producer library gives each batch its
    // message_id when it seals it, so any valid id stands in while the rest is checked.
    let props = MessageProperties {
        message_id: Some("logctl-validation"),
        ..MessageProperties::default()
    };
    let m = decode(line.as_bytes(), props, &settings.limits).map_err(|e| e.to_string())?;
    let logs = m
        .logs
        .into_iter()
        .map(|l| Log {
            timestamp_ms: l.timestamp_ms,
            level: l.level,
            message: l.message,
            metadata: l.metadata,
        })
        .collect();
    Ok((m.episode_id, logs))
}

/// Counts of one run.
#[derive(Default)]
struct Counts {
    /// Lines read (blank ones included).
    lines: u64,
    /// Logs handed to the producer.
    logs: u64,
    /// Invalid lines skipped.
    invalid: u64,
}

pub async fn run(settings: Settings, args: PublishArgs) -> anyhow::Result<()> {
    let (reader, size): (Box<dyn AsyncRead + Unpin + Send>, Option<u64>) = match &args.file {
        Some(p) if p.as_os_str() != "-" => {
            let f = tokio::fs::File::open(p)
                .await
                .with_context(|| format!("opening {}", p.display()))?;
            let size = f.metadata().await.ok().map(|m| m.len());
            (Box::new(f), size)
        }
        _ => (Box::new(tokio::io::stdin()), None),
    };
    let mut lines = BufReader::new(reader).lines();

    let mut config = ProducerConfig::for_fleet(
        &settings.amqp.url,
        &settings.amqp.prefix,
        settings.limits.clone(),
    );
    config.max_batch_logs = args.batch_logs;
    config.max_batch_bytes = args.batch_bytes;
    config.linger = (args.linger_ms > 0).then(|| Duration::from_millis(args.linger_ms));
    config.max_attempts = args.max_attempts;
    if let Some(id) = &args.producer_id {
        config.producer_id = id.clone();
    }
    config.connection_name = format!("logctl-publish {}", config.producer_id);

    let bar = if args.quiet {
        ProgressBar::hidden()
    } else if let Some(size) = size {
        ProgressBar::new(size).with_style(ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} {msg}",
        )?)
    } else {
        ProgressBar::new_spinner().with_style(ProgressStyle::with_template("{spinner} {msg}")?)
    };
    let mut counts = Counts::default();

    if args.strict {
        let mut parsed = Vec::new();
        while let Some(line) = lines.next_line().await.context("reading the input")? {
            counts.lines += 1;
            if line.trim().is_empty() {
                continue;
            }
            match parse_line(&line, &settings) {
                Ok(p) => parsed.push(p),
                Err(reason) => bail!(
                    "line {}: {reason}; nothing was published (--strict)",
                    counts.lines
                ),
            }
        }
        bar.set_length(parsed.len() as u64);
        bar.set_position(0);
        let producer = Producer::connect(config).await?;
        for (ep, logs) in parsed {
            for log in logs {
                producer.send(&ep, log).await?;
                counts.logs += 1;
            }
            bar.inc(1);
            bar.set_message(progress_message(&counts, &producer));
        }
        return finish(producer, counts, bar).await;
    }

    let producer = Producer::connect(config).await?;
    while let Some(line) = lines.next_line().await.context("reading the input")? {
        counts.lines += 1;
        bar.inc(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line, &settings) {
            Ok((ep, logs)) => {
                for log in logs {
                    producer.send(&ep, log).await?;
                    counts.logs += 1;
                }
            }
            Err(reason) => {
                counts.invalid += 1;
                if counts.invalid <= MAX_REPORTED {
                    bar.suspend(|| eprintln!("line {}: {reason} (skipped)", counts.lines));
                } else if counts.invalid == MAX_REPORTED + 1 {
                    bar.suspend(|| eprintln!("more invalid lines; only their count is reported"));
                }
            }
        }
        if counts.lines % 256 == 0 {
            bar.set_message(progress_message(&counts, &producer));
        }
    }
    finish(producer, counts, bar).await
}

fn progress_message(c: &Counts, p: &Producer) -> String {
    let s = p.stats();
    format!(
        "{} lines, {} logs read, {} confirmed",
        c.lines, c.logs, s.confirmed_logs
    )
}

/// Flushes, prints the final count and fails if lines were skipped.
async fn finish(producer: Producer, counts: Counts, bar: ProgressBar) -> anyhow::Result<()> {
    let id = producer.producer_id().to_owned();
    let stats = producer.close().await;
    bar.finish_and_clear();
    let stats =
        stats.context("publishing did not complete; logs not confirmed were not counted")?;
    println!(
        "confirmed {} messages, {} logs (producer id {id}); {} lines read, {} invalid skipped",
        stats.confirmed_messages, stats.confirmed_logs, counts.lines, counts.invalid
    );
    if counts.invalid > 0 {
        bail!("{} invalid lines were skipped", counts.invalid);
    }
    Ok(())
}
