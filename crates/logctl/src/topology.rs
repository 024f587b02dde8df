//! `logctl topology`: declares the exchanges and queues (idempotent) and prints them, or with
//! `--check` only verifies that they exist, with passive declares that change nothing.
//!
//! A passive declare proves that an exchange or queue exists (and reports a queue's messages and
//! consumers); AMQP 0-9-1 has no passive check of a binding, so bindings are not verified.

use anyhow::{Context, bail};
use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ExchangeKind};
use logfleet::amqp::Topology;
use logfleet::config::Settings;

#[derive(clap::Args)]
pub struct TopologyArgs {
    /// Only check that every exchange and queue exists (passive declares) and that the logs
    /// exchange is of its type; exit 1 if anything is missing or wrong. Creates nothing.
    #[arg(long)]
    pub check: bool,
}

pub async fn run(settings: Settings, args: TopologyArgs) -> anyhow::Result<()> {
    let topology = Topology::new(&settings.amqp);
    let conn = logfleet::amqp::connect(&settings.amqp, "logctl")
        .await
        .context("RabbitMQ is not reachable")?;
    let result = if args.check {
        check(&conn, &topology).await
    } else {
        topology
            .declare(&conn)
            .await
            .context("declaring the topology")?;
        print(&topology);
        Ok(())
    };
    let _ = conn.close(200, "done".into()).await;
    result
}

fn print(t: &Topology) {
    println!(
        "exchange {} (x-modulus-hash, routing key = episodeId)",
        t.logs_exchange
    );
    for q in &t.partition_queues {
        println!(
            "  queue {q} ({}, one exclusive consumer)",
            t.partition_queue_type
        );
    }
    println!(
        "exchange {} -> queue {}",
        t.dead_letter_exchange, t.dead_letter_queue
    );
    println!(
        "exchange {} -> queue {}",
        t.archive_exchange, t.archive_queue
    );
    println!(
        "exchange {} -> queue {}",
        t.archive_dead_letter_exchange, t.archive_dead_letter_queue
    );
    println!(
        "queue {} (no messages; its consumers are the live ingest-workers)",
        t.workers_queue
    );
}

async fn check(conn: &Connection, t: &Topology) -> anyhow::Result<()> {
    let mut missing = 0;
    // A failed passive declare closes its channel: one channel per check.
    for ex in [
        &t.logs_exchange,
        &t.dead_letter_exchange,
        &t.archive_exchange,
        &t.archive_dead_letter_exchange,
    ] {
        let ch = conn.create_channel().await?;
        let r = ch
            .exchange_declare(
                ex.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        match r {
            Ok(()) if ex == &t.logs_exchange => {
                // A passive declare ignores the type: the logs exchange's is checked by
                // declaring it as the workers do, a no-op when it matches.
                let typed = conn.create_channel().await?;
                let r = typed
                    .exchange_declare(
                        ex.as_str().into(),
                        ExchangeKind::Custom(logfleet::amqp::LOGS_EXCHANGE_TYPE.into()),
                        ExchangeDeclareOptions {
                            durable: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await;
                match r {
                    Ok(()) => println!(
                        "ok       exchange {ex} ({})",
                        logfleet::amqp::LOGS_EXCHANGE_TYPE
                    ),
                    Err(e) => {
                        missing += 1;
                        println!(
                            "WRONG    exchange {ex}: not a durable {} ({e}); see docs/operations.md, \"The logs exchange\"",
                            logfleet::amqp::LOGS_EXCHANGE_TYPE
                        );
                    }
                }
                let _ = typed.close(200, "checked".into()).await;
            }
            Ok(()) => println!("ok       exchange {ex}"),
            Err(e) => {
                missing += 1;
                println!("MISSING  exchange {ex} ({e})");
            }
        }
        let _ = ch.close(200, "checked".into()).await;
    }
    for q in t.partition_queues.iter().chain([
        &t.dead_letter_queue,
        &t.archive_queue,
        &t.archive_dead_letter_queue,
        &t.workers_queue,
    ]) {
        let ch = conn.create_channel().await?;
        let r = ch
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        match r {
            Ok(info) => println!(
                "ok       queue {q}: {} messages, {} consumers",
                info.message_count(),
                info.consumer_count()
            ),
            Err(e) => {
                missing += 1;
                println!("MISSING  queue {q} ({e})");
            }
        }
        let _ = ch.close(200, "checked".into()).await;
    }
    if missing > 0 {
        bail!(
            "{missing} exchanges or queues are missing or wrong; `logctl topology` declares what is missing"
        );
    }
    println!("topology complete (bindings are not checked: AMQP has no passive bind)");
    Ok(())
}
