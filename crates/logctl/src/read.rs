//! The read subcommands of logctl, over [`logfleet::query`] (both tiers, MongoDB and S3):
//!
//! - `logs EPISODE`: a page (or, with `--all`, every page) of logs with the filters
//!   `--seq A..B`, `--time T1..T2`, `--level warn,error`, `--contains TEXT`, `--order`, `--cursor`,
//!   `--limit`.
//! - `tail EPISODE [-n N] [-f]`: the last N matching logs; `-f` then prints new ones as they come.
//! - `export EPISODE --out FILE`: every matching log to an NDJSON or JSONL.gz file (by the file's
//!   extension or `--format`), with a progress bar on standard error.
//! - `stats EPISODE`, `chunks EPISODE`, `episodes`.
//!
//! Output is a table for people (levels coloured when standard output is a terminal and
//! `NO_COLOR` is unset) or, with `--json`, JSON for scripts: pages and records as the HTTP API
//! returns them (`logs`: one page object per page; `tail`: one record per line).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use logfleet::config::Settings;
use logfleet::domain::{EpisodeId, LogLevel};
use logfleet::query::{
    ExportFormat, LogFilter, LogQuery, LogRecord, Order, QueryService, parse_levels,
    parse_seq_range, parse_time_range,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// The filters every log-reading subcommand takes.
#[derive(Args, Debug, Clone)]
pub struct FilterArgs {
    /// Sequence range FROM..TO, half-open (FROM..  ..TO  or a single N also work).
    #[arg(long)]
    seq: Option<String>,
    /// Timestamp range FROM..TO, half-open, RFC 3339 or epoch milliseconds.
    #[arg(long)]
    time: Option<String>,
    /// Levels, comma-separated (e.g. warn,error).
    #[arg(long)]
    level: Option<String>,
    /// Substring the message must contain (case-sensitive).
    #[arg(long)]
    contains: Option<String>,
}

impl FilterArgs {
    fn filter(&self) -> anyhow::Result<LogFilter> {
        Ok(LogFilter {
            seq: self
                .seq
                .as_deref()
                .map(parse_seq_range)
                .transpose()?
                .unwrap_or_default(),
            time: self
                .time
                .as_deref()
                .map(parse_time_range)
                .transpose()?
                .unwrap_or_default(),
            levels: self
                .level
                .as_deref()
                .map(parse_levels)
                .transpose()?
                .unwrap_or_default(),
            contains: match self.contains.as_deref() {
                Some("") => bail!("--contains must not be empty"),
                c => c.map(str::to_owned),
            },
        })
    }
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The episode id.
    episode: String,
    #[command(flatten)]
    filters: FilterArgs,
    /// asc or desc (by sequence number).
    #[arg(long, default_value = "asc")]
    order: String,
    /// Start at this sequence number (a previous page's next cursor).
    #[arg(long)]
    cursor: Option<i64>,
    /// Logs per page (default query.default_page_size, at most query.max_page_size).
    #[arg(long)]
    limit: Option<usize>,
    /// Follow the cursor through every page to the end.
    #[arg(long)]
    all: bool,
    /// JSON output (one page object per page) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct TailArgs {
    /// The episode id.
    episode: String,
    #[command(flatten)]
    filters: FilterArgs,
    /// How many of the latest matching logs to print first.
    #[arg(short = 'n', long, default_value_t = 10)]
    lines: usize,
    /// Keep printing new logs as they are written (Ctrl-C to stop).
    #[arg(short = 'f', long)]
    follow: bool,
    /// One JSON record per line instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The episode id.
    episode: String,
    #[command(flatten)]
    filters: FilterArgs,
    /// File to write (a `.gz` name selects JSONL.gz unless --format says otherwise).
    #[arg(short = 'o', long)]
    out: PathBuf,
    /// ndjson or jsonl.gz.
    #[arg(long)]
    format: Option<String>,
    /// asc or desc.
    #[arg(long, default_value = "asc")]
    order: String,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Debug)]
pub struct EpisodeArgs {
    /// The episode id.
    episode: String,
    /// JSON output instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct ChunksArgs {
    /// The episode id.
    episode: String,
    /// First chunk number.
    #[arg(long)]
    cursor: Option<i32>,
    /// Chunks per page.
    #[arg(long)]
    limit: Option<usize>,
    /// JSON output instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct EpisodesArgs {
    /// Episode id the page starts at (a previous page's next cursor).
    #[arg(long)]
    cursor: Option<String>,
    /// Episodes per page.
    #[arg(long)]
    limit: Option<usize>,
    /// JSON output instead of a table.
    #[arg(long)]
    json: bool,
}

fn colour_on() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn level_cell(l: LogLevel, colour: bool) -> String {
    let text = format!("{:<5}", l.as_str().to_ascii_uppercase());
    if !colour {
        return text;
    }
    let code = match l {
        LogLevel::Debug => "2",
        LogLevel::Info => "32",
        LogLevel::Warn => "33",
        LogLevel::Error => "31",
        LogLevel::Fatal => "1;97;41",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// One table line: `SEQ  TIMESTAMP  LEVEL  MESSAGE  {metadata}`.
fn table_line(r: &LogRecord, colour: bool) -> String {
    let mut s = format!(
        "{:>10}  {}  {}  {}",
        r.sequence_number,
        r.timestamp
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        level_cell(r.level, colour),
        r.message
    );
    if let Some(m) = &r.metadata {
        s.push_str("  ");
        s.push_str(&m.to_string());
    }
    s
}

async fn service(settings: &Settings) -> anyhow::Result<QueryService> {
    QueryService::connect(settings)
        .await
        .context("connecting to MongoDB and S3")
}

pub async fn logs(settings: Settings, a: LogsArgs) -> anyhow::Result<()> {
    let svc = service(&settings).await?;
    let mut q = LogQuery {
        episode: EpisodeId::parse(&a.episode)?,
        filter: a.filters.filter()?,
        order: Order::parse(&a.order)?,
        cursor: a.cursor,
        limit: svc.page_size(a.limit)?,
    };
    let colour = colour_on();
    let mut out = std::io::stdout().lock();
    loop {
        let page = svc.read_page(&q).await?;
        if a.json {
            serde_json::to_writer(&mut out, &page)?;
            writeln!(out)?;
        } else {
            for r in &page.logs {
                writeln!(out, "{}", table_line(r, colour))?;
            }
        }
        match page.next_cursor {
            Some(c) if a.all => q.cursor = Some(c),
            Some(c) => {
                if !a.json {
                    eprintln!("-- more: --cursor {c}");
                }
                break;
            }
            None => break,
        }
    }
    Ok(())
}

pub async fn tail(settings: Settings, a: TailArgs) -> anyhow::Result<()> {
    let svc = service(&settings).await?;
    let q = LogQuery {
        episode: EpisodeId::parse(&a.episode)?,
        filter: a.filters.filter()?,
        order: Order::Desc,
        cursor: None,
        limit: svc.settings().max_page_size,
    };
    if a.lines > svc.settings().max_page_size {
        bail!("-n is at most {}", svc.settings().max_page_size);
    }
    let colour = colour_on();
    let print = |logs: &[LogRecord]| -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        for r in logs {
            if a.json {
                serde_json::to_writer(&mut out, r)?;
                writeln!(out)?;
            } else {
                writeln!(out, "{}", table_line(r, colour))?;
            }
        }
        out.flush()?;
        Ok(())
    };
    if !a.follow {
        if a.lines == 0 {
            return Ok(());
        }
        let mut page = svc
            .read_page(&LogQuery {
                limit: a.lines,
                ..q
            })
            .await?;
        page.logs.reverse();
        return print(&page.logs);
    }
    let (tx, mut rx) = mpsc::channel(4);
    let follow = svc.follow(&q, a.lines, &tx);
    tokio::pin!(follow);
    loop {
        tokio::select! {
            r = &mut follow => {
                while let Ok(logs) = rx.try_recv() {
                    print(&logs)?;
                }
                return Ok(r?);
            }
            Some(logs) = rx.recv() => print(&logs)?,
            _ = logfleet::shutdown_signal() => return Ok(()),
        }
    }
}

pub async fn export(settings: Settings, a: ExportArgs) -> anyhow::Result<()> {
    let svc = service(&settings).await?;
    let ep = EpisodeId::parse(&a.episode)?;
    let format = match &a.format {
        Some(f) => ExportFormat::parse(f)?,
        None if a.out.extension().is_some_and(|e| e == "gz") => ExportFormat::JsonlGz,
        None => ExportFormat::Ndjson,
    };
    let filter = a.filters.filter()?;
    let stats = svc.stats(&ep).await?;
    let q = LogQuery {
        episode: ep.clone(),
        filter,
        order: Order::parse(&a.order)?,
        cursor: None,
        limit: logfleet::query::EXPORT_PAGE,
    };
    let tmp = a.out.with_extension(format!(
        "{}.part",
        a.out
            .extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .with_context(|| format!("creating {}", tmp.display()))?;
    let bar = if a.quiet || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(stats.total_logs.max(0) as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} logs ({per_sec}, eta {eta})",
        )
        .expect("valid template"),
    );
    let (tx, mut rx) = mpsc::channel(4);
    let produce = async {
        let r = svc.export(&q, format, &tx).await;
        drop(tx);
        r
    };
    let consume = async {
        let mut written = 0u64;
        while let Some(piece) = rx.recv().await {
            let p = piece.context("export failed")?;
            file.write_all(&p.bytes).await?;
            written += p.logs;
            bar.set_position(written);
        }
        anyhow::Ok(written)
    };
    let (produced, written) = tokio::join!(produce, consume);
    produced?;
    let written = written?;
    file.flush().await?;
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&tmp, &a.out).await?;
    bar.finish_and_clear();
    eprintln!("exported {written} logs of {ep} to {}", a.out.display());
    Ok(())
}

pub async fn stats(settings: Settings, a: EpisodeArgs) -> anyhow::Result<()> {
    let svc = service(&settings).await?;
    let s = svc.stats(&EpisodeId::parse(&a.episode)?).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    let none = || "-".to_owned();
    let rows = [
        ("episode", s.episode_id.clone()),
        ("total logs", s.total_logs.to_string()),
        ("hot logs (MongoDB)", s.current_logs.to_string()),
        ("archived logs (S3)", s.archived_logs.to_string()),
        ("chunks", s.total_chunks.to_string()),
        ("next sequence", s.next_sequence_number.to_string()),
        ("first log", s.first_log_at.clone().unwrap_or_else(none)),
        ("last log", s.last_log_at.clone().unwrap_or_else(none)),
        ("MongoDB bytes", s.current_mongo_bytes.to_string()),
        ("S3 bytes", s.archived_s3_bytes.to_string()),
        (
            "levels",
            s.level_counts
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        (
            "threshold / chunk size",
            format!("{} / {}", s.archive_threshold, s.chunk_size),
        ),
        ("archiving now", s.is_archiving.to_string()),
        (
            "last archived",
            s.last_archived_at.clone().unwrap_or_else(none),
        ),
        ("updated", s.updated_at.clone()),
    ];
    for (k, v) in rows {
        println!("{k:<24}{v}");
    }
    Ok(())
}

pub async fn chunks(settings: Settings, a: ChunksArgs) -> anyhow::Result<()> {
    let svc = service(&settings).await?;
    let limit = svc.page_size(a.limit)?;
    let page = svc
        .chunks(&EpisodeId::parse(&a.episode)?, a.cursor, limit)
        .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(());
    }
    println!(
        "{:>6}  {:>12}  {:>12}  {:>7}  {:>10}  {:<24}  {:<24}  {:<24}  src",
        "chunk", "start seq", "end seq", "logs", "bytes", "start time", "end time", "last accessed"
    );
    for c in &page.chunks {
        println!(
            "{:>6}  {:>12}  {:>12}  {:>7}  {:>10}  {:<24}  {:<24}  {:<24}  {}",
            c.chunk_number,
            c.start_sequence,
            c.end_sequence,
            c.log_count,
            c.size_bytes,
            c.start_time,
            c.end_time,
            c.last_accessed,
            c.src
        );
    }
    if let Some(c) = page.next_cursor {
        eprintln!("-- more: --cursor {c}");
    }
    Ok(())
}

pub async fn episodes(settings: Settings, a: EpisodesArgs) -> anyhow::Result<()> {
    let svc = service(&settings).await?;
    let limit = svc.page_size(a.limit)?;
    let cursor = a.cursor.as_deref().map(EpisodeId::parse).transpose()?;
    let page = svc.episodes(cursor.as_ref(), limit).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(());
    }
    println!(
        "{:<40}  {:>10}  {:>10}  {:>10}  {:>6}  last log",
        "episode", "total", "hot", "archived", "chunks"
    );
    for e in &page.episodes {
        println!(
            "{:<40}  {:>10}  {:>10}  {:>10}  {:>6}  {}",
            e.episode_id,
            e.total_logs,
            e.current_logs,
            e.archived_logs,
            e.total_chunks,
            e.last_log_at.as_deref().unwrap_or("-")
        );
    }
    if let Some(c) = page.next_cursor {
        eprintln!("-- more: --cursor {c}");
    }
    Ok(())
}
