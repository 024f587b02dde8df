//! `logctl demo`: both workers, a sample load, a summary of what landed where.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use logfleet::amqp::request_archive;
use logfleet::amqp::{ConfirmedPublisher, Topology};
use logfleet::config::Settings;
use logfleet::contract::ArchiveKind;
use logfleet::domain::EpisodeId;
use logfleet::mongo::MongoStore;
use logfleet::object_store::{ObjectStore, S3ObjectStore};
use serde_json::json;
use tokio::sync::oneshot;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Logs published to each of the three sample episodes.
    #[arg(long, value_delimiter = ',', default_values_t = [110_000u64, 15_000, 3_000])]
    logs: Vec<u64>,
    /// Logs per published message.
    #[arg(long, default_value_t = 1_000)]
    batch: u64,
    /// Give up waiting for the fleet after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
}

pub async fn run(settings: Settings, args: DemoArgs) -> anyhow::Result<()> {
    if args.batch == 0 || args.batch > settings.limits.max_logs_per_message as u64 {
        bail!(
            "--batch must be 1..={}",
            settings.limits.max_logs_per_message
        );
    }
    let run_id = chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string();
    let episodes: Vec<(EpisodeId, u64)> = args
        .logs
        .iter()
        .enumerate()
        .map(|(i, n)| {
            Ok((
                EpisodeId::parse(&format!("demo-{run_id}-{}", (b'a' + i as u8) as char))?,
                *n,
            ))
        })
        .collect::<anyhow::Result<_>>()?;

    let store = MongoStore::connect(&settings.mongo).await?;
    store
        .ensure_indexes()
        .await
        .context("MongoDB is not reachable")?;
    let objects = S3ObjectStore::connect(&settings.s3)
        .await
        .context("S3 is not reachable")?;
    let topology = Topology::new(&settings.amqp);
    let conn = logfleet::amqp::connect(&settings.amqp, "logctl-demo")
        .await
        .context("RabbitMQ is not reachable")?;
    topology.declare(&conn).await?;
    let publisher = ConfirmedPublisher::open(&conn).await?;

    println!(
        "starting an ingest-worker and an archive-worker (prefix {})",
        settings.amqp.prefix
    );
    let (stop_ingest, ingest_rx) = oneshot::channel::<()>();
    let (stop_archive, archive_rx) = oneshot::channel::<()>();
    let ingest = tokio::spawn(logfleet::ingest::run(settings.clone(), async {
        let _ = ingest_rx.await;
    }));
    let archive = tokio::spawn(logfleet::archive::run(settings.clone(), async {
        let _ = archive_rx.await;
    }));

    let levels = ["info", "info", "debug", "warn", "info", "error"];
    let total: u64 = episodes.iter().map(|(_, n)| n).sum();
    println!(
        "publishing {total} logs over {} episodes in messages of {} logs",
        episodes.len(),
        args.batch
    );
    let started = std::time::Instant::now();
    let mut published = vec![0u64; episodes.len()];
    while published.iter().zip(&episodes).any(|(p, (_, n))| p < n) {
        for (k, (ep, n)) in episodes.iter().enumerate() {
            let from = published[k];
            let to = (from + args.batch).min(*n);
            if from >= to {
                continue;
            }
            let logs: Vec<_> = (from..to)
                .map(|i| {
                    let mut log = json!({
                        "timestamp": chrono::Utc::now().timestamp_millis(),
                        "level": levels[i as usize % levels.len()],
                        "message": format!("step {i} of {ep}"),
                    });
                    if i % 4 == 0 {
                        log["metadata"] = json!({"step": i, "worker": format!("sim-{}", i % 7)});
                    }
                    log
                })
                .collect();
            let body = serde_json::to_vec(&json!({"episodeId": ep.as_str(), "logs": logs}))?;
            publisher
                .publish_json(
                    &topology.logs_exchange,
                    ep.as_str(),
                    &body,
                    Some(&format!("{ep}-{from}")),
                )
                .await?;
            published[k] = to;
        }
    }
    println!(
        "published and confirmed in {:.1} s; waiting for the fleet",
        started.elapsed().as_secs_f64()
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_secs);
    let total: u64 = episodes.iter().map(|(_, n)| n).sum();
    // Ingested against everything published; archived shown beside it. On a terminal the bar
    // redraws in place; otherwise a line every 10 s says the same.
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} logs ingested, {msg} [{elapsed_precise}]",
        )
        .expect("valid template"),
    );
    let plain = !std::io::stderr().is_terminal();
    let mut last_line = tokio::time::Instant::now();
    // Ingested, and every full chunk due at the threshold archived.
    loop {
        let mut settled = true;
        let (mut ingested, mut archived) = (0u64, 0u64);
        let mut stuck = Vec::new();
        for (ep, n) in &episodes {
            let m = store.metadata_of(ep).await?;
            let done = m.as_ref().is_some_and(|m| {
                let due = m.current_logs >= i64::from(m.archive_threshold)
                    && m.current_logs >= i64::from(m.chunk_size);
                m.total_logs == *n as i64 && !due && !m.is_archiving
            });
            settled &= done;
            if let Some(m) = &m {
                ingested += m.total_logs.max(0) as u64;
                archived += m.archived_logs.max(0) as u64;
            }
            if !done {
                stuck.push((ep.clone(), m.map(|m| (m.total_logs, m.archived_logs))));
            }
        }
        bar.set_position(ingested);
        bar.set_message(format!("{archived} archived"));
        if plain && (settled || last_line.elapsed() >= Duration::from_secs(10)) {
            eprintln!("{ingested}/{total} logs ingested, {archived} archived");
            last_line = tokio::time::Instant::now();
        }
        if settled {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bar.abandon();
            bail!(
                "not settled within {} s (episode, (ingested, archived)): {stuck:?}",
                args.timeout_secs
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    bar.finish_and_clear();
    // The last episode is "finished": flush its final partial chunk.
    let (last, last_n) = episodes.last().expect("at least one episode");
    request_archive(&publisher, &topology, last, ArchiveKind::Flush).await?;
    println!("episode {last} finished: flush requested");
    loop {
        let m = store.metadata_of(last).await?;
        if m.as_ref()
            .is_some_and(|m| m.archived_logs == *last_n as i64 && !m.is_archiving)
        {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the flush of {last} did not finish within {} s",
                args.timeout_secs
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    println!(
        "fleet settled after {:.1} s\n",
        started.elapsed().as_secs_f64()
    );

    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>7} {:>12} {:>12}",
        "episode", "total", "hot", "archived", "chunks", "mongo bytes", "s3 bytes"
    );
    for (ep, _) in &episodes {
        let m = store.metadata_of(ep).await?.context("metadata")?;
        println!(
            "{:<28} {:>9} {:>9} {:>9} {:>7} {:>12} {:>12}",
            ep.as_str(),
            m.total_logs,
            m.current_logs,
            m.archived_logs,
            m.total_chunks,
            m.current_mongo_bytes,
            m.archived_s3_bytes
        );
    }
    println!("\nchunks in s3://{}:", objects.bucket());
    for (ep, _) in &episodes {
        for c in store.chunks_of(ep).await? {
            let info = objects.head(&c.src).await?;
            println!(
                "  {}  #{:<3} seq {:>6}..={:<6} {:>6} logs  {:>9} bytes (object {} bytes)",
                c.src,
                c.chunk_number,
                c.start_sequence,
                c.end_sequence,
                c.log_count,
                c.size_bytes,
                info.size
            );
        }
    }
    let dlq = logfleet::amqp::queue_depth(&conn, &topology.dead_letter_queue).await?;
    println!(
        "\ndead-letter queue {}: {dlq} messages",
        topology.dead_letter_queue
    );

    let _ = stop_ingest.send(());
    let _ = stop_archive.send(());
    ingest.await??;
    archive.await??;
    println!("workers stopped cleanly");
    Ok(())
}
