//! logfleet-bench: the benchmark figures, as ratios against baselines measured on the
//! same servers in the same run.
//!
//! ```text
//! cd /work/main && eval "$(./scripts/services.sh 2>/dev/null)"
//! cargo run --release -p logfleet-bench -- [--mongo ferretdb|nx|URI] [--quick] [--only NAME]...
//! ```
//!
//! Figures (NAME): `ingest` (1, ingest efficiency), `chunk` (2, chunk building), `archive`
//! (3, archive run), `memory` (4, peak RSS of the worker binaries), `scaling` (5, 1/2/4
//! ingest-workers), `query` (6, read path), `writes` (7, bytes sent to MongoDB per log, through a
//! wire proxy), `cpu` (8, ingest-worker CPU time per log), `sweep` (9, the archive sweep's query
//! over 100,000 LogMetadata), `viewer` (10, render and follow latency in headless chromium).
//! Services come from the environment exactly as in
//! the tests (`AMQP_URL`, `MONGODB_URI`, `S3_ENDPOINT`, `AWS_*`), each figure in fresh names
//! (`logfleet_testkit::TestEnv`); `--mongo` picks the MongoDB-protocol server. Every run first
//! measures that server's own raw insertMany rate, so figures from different servers can be
//! read side by side.
//! `memory`, `scaling`, `writes` and `cpu` run `target/release/{ingest,archive}-worker`, built first with
//! `cargo build --release -p ingest-worker -p archive-worker` unless `--no-build`.
//!
//! Every figure prints what each side of its ratio includes. Nothing here is a test: no figure
//! is asserted anywhere.

mod archive;
mod chunk;
mod common;
mod cpu;
mod ingest;
mod machine;
mod memory;
mod query;
mod report;
mod scaling;
mod sweep;
mod viewer;
mod wire;
mod writes;

use std::time::Instant;

use clap::Parser;

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "Benchmarks of the logfleet fleet, as ratios measured in one run")]
struct Args {
    /// Smaller loads (finishes in about 2 minutes); the full mode uses the sizes docs/benchmarks.md describes.
    #[arg(long)]
    quick: bool,
    /// Run only these figures: ingest, chunk, archive, memory, scaling, query, writes, cpu,
    /// sweep, viewer (repeatable).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Do not build the worker binaries before the memory, scaling, writes and cpu figures.
    #[arg(long)]
    no_build: bool,
    /// The MongoDB-protocol server: `ferretdb` (127.0.0.1:27018), `nx` (127.0.0.1:27017) or a
    /// connection string; default: the environment's `MONGODB_URI`.
    #[arg(long)]
    mongo: Option<String>,
}

/// The loads of one mode.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Logs per case of figure 1 (each case: 1-log messages, 1,000-log batches).
    pub ingest_logs: usize,
    /// Rounds figure 1 splits each case into, alternating raw and pipeline.
    pub ingest_rounds: usize,
    /// Episodes the figure 1 load is spread over.
    pub ingest_episodes: usize,
    /// Logs in the chunk of figure 2.
    pub chunk_logs: usize,
    /// Interleaved repetitions of figure 2 (the median is reported).
    pub chunk_reps: usize,
    /// Logs in the chunk of figures 3 and 4.
    pub archive_chunk: usize,
    /// `ingest.prefetch` of the memory figure (1,000-log messages held at once).
    pub mem_prefetch: usize,
    /// Logs per episode of figure 5 (16 episodes).
    pub scaling_logs_per_episode: usize,
    /// 1-log messages per episode of figure 7 (1,000 episodes).
    pub writes_logs_per_episode: usize,
    /// Logs of figure 8's 1-log case.
    pub cpu_single_logs: usize,
    /// Logs of figure 8's 1,000-log case.
    pub cpu_batch_logs: usize,
    /// LogMetadata documents of figure 9 (one in 1,000 due).
    pub sweep_episodes: usize,
}

impl Sizes {
    fn full() -> Self {
        Self {
            ingest_logs: 50_000,
            ingest_rounds: 5,
            ingest_episodes: 4,
            chunk_logs: 50_000,
            chunk_reps: 11,
            archive_chunk: 50_000,
            mem_prefetch: 500,
            scaling_logs_per_episode: 5_000,
            writes_logs_per_episode: 100,
            cpu_single_logs: 32_000,
            cpu_batch_logs: 192_000,
            sweep_episodes: 100_000,
        }
    }

    fn quick() -> Self {
        Self {
            ingest_logs: 8_000,
            ingest_rounds: 2,
            ingest_episodes: 4,
            chunk_logs: 50_000,
            chunk_reps: 3,
            archive_chunk: 5_000,
            mem_prefetch: 50,
            scaling_logs_per_episode: 500,
            writes_logs_per_episode: 5,
            cpu_single_logs: 8_000,
            cpu_batch_logs: 32_000,
            sweep_episodes: 20_000,
        }
    }
}

const FIGURES: [&str; 10] = [
    "ingest", "chunk", "archive", "memory", "scaling", "query", "writes", "cpu", "sweep", "viewer",
];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(m) = &args.mongo {
        let uri = common::mongo_uri(m);
        // SAFETY: no other thread exists yet: the runtime starts below.
        unsafe { std::env::set_var("MONGODB_URI", &uri) };
    }
    tokio::runtime::Runtime::new()?.block_on(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    // Before any TestEnv installs its own: warnings only, and not lapin's noise about channels
    // closed during clean-up. `RUST_LOG` still wins.
    logfleet::telemetry::init(&logfleet::config::TelemetrySettings {
        format: "human".into(),
        filter: std::env::var("TEST_LOG").unwrap_or_else(|_| "warn,lapin=off".into()),
    });
    for name in &args.only {
        anyhow::ensure!(
            FIGURES.contains(&name.as_str()),
            "unknown figure {name:?}; expected one of {FIGURES:?}"
        );
    }
    let selected = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    let needs_workers = ["memory", "scaling", "writes", "cpu"];
    if !args.no_build && needs_workers.iter().any(|n| selected(n)) {
        common::build_workers()?;
    }
    let log_dir = std::env::temp_dir().join(format!("logfleet-bench-logs-{}", std::process::id()));
    std::fs::create_dir_all(&log_dir)?;

    println!(
        "logfleet-bench ({} mode)",
        if args.quick { "quick" } else { "full" }
    );
    for l in machine::header() {
        println!("  {l}");
    }
    println!(
        "  services: the environment's AMQP_URL, MONGODB_URI, S3_ENDPOINT (each figure in fresh queues, database and bucket)"
    );
    let uri = std::env::var("MONGODB_URI").unwrap_or_else(|_| "(default settings)".into());
    println!(
        "  MongoDB-protocol server: {} ({uri})",
        common::server_name(&uri)
    );
    let raw = common::raw_insert_rate().await?;
    println!(
        "  its raw insertMany rate: {:.0} logs/s (median of {} insertMany of {} LogEntry documents, unordered, schema indexes, w majority + journal)",
        raw.median, raw.runs, raw.docs
    );
    println!("  worker logs: {}", log_dir.display());
    let started = Instant::now();
    common::progress("started");
    let mut figures = Vec::new();
    for name in FIGURES.into_iter().filter(|n| selected(n)) {
        let t = Instant::now();
        common::progress(format!("figure {name}: starting"));
        let fig = match name {
            "ingest" => ingest::run(&sizes).await,
            "chunk" => chunk::run(&sizes),
            "archive" => archive::run(&sizes).await,
            "memory" => memory::run(&sizes, &log_dir).await,
            "scaling" => scaling::run(&sizes, &log_dir).await,
            "query" => query::run(&sizes).await,
            "writes" => writes::run(&sizes, &log_dir).await,
            "cpu" => cpu::run(&sizes, &log_dir).await,
            "sweep" => sweep::run(&sizes).await,
            "viewer" => viewer::run(&sizes).await,
            _ => unreachable!("checked above"),
        };
        match fig {
            Ok(mut fig) => {
                fig.line(format!("(figure took {:.0} s)", t.elapsed().as_secs_f64()));
                fig.print();
                figures.push(fig);
            }
            Err(e) => {
                println!("\n== {name}: FAILED: {e:#}");
                let mut fig = report::Figure::new(&format!("{name}: FAILED"));
                fig.line(format!("{e:#}"));
                figures.push(fig);
            }
        }
    }
    println!("\n== Summary ==");
    for f in &figures {
        for v in &f.verdicts {
            println!("  {}", v.line());
        }
        if f.title.ends_with("FAILED") {
            println!("  {}", f.title);
        }
    }
    println!(
        "  total {:.0} s; load at end {} (1/5/15 min)",
        started.elapsed().as_secs_f64(),
        machine::load_average()
    );
    Ok(())
}
