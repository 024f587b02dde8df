//! `logctl dlq`: inspect, replay and purge the logs dead-letter queue `{prefix}.logs.dlq`.
//!
//! - `list` / `peek` read without consuming: `basic.get` without ack on a channel of their own,
//!   which is then closed so every message returns to the queue. Caveats: the messages read are
//!   invisible to others until then, and they come back marked redelivered (a quorum queue also
//!   counts the return in `x-delivery-count`).
//! - `replay` moves messages back to `{prefix}.logs` with their routing key, body, properties and
//!   `message_id`: each is republished with a publisher confirm and acked in the DLQ only after
//!   that confirm, so a replay killed at any point loses nothing; a message republished but not
//!   acked yet is replayed again by the next run and ingested once, thanks to its message id.
//!   The last failure moves into the `x-logfleet-history` header and `x-logfleet-replays` counts
//!   the replays, so a message that fails again returns to the DLQ with its history.
//! - `purge` empties the queue after a typed confirmation.

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueuePurgeOptions};
use lapin::types::{AMQPValue, ShortString};
use lapin::{Channel, Connection};
use logfleet::amqp::{
    self, ConfirmedPublisher, FAILED_AT_HEADER, HISTORY_HEADER, REASON_HEADER, REPLAY_RUN_HEADER,
    REPLAYS_HEADER, ROUTING_KEY_HEADER, SOURCE_QUEUE_HEADER, Topology,
};
use logfleet::config::Settings;
use logfleet::domain::EpisodeId;

#[derive(clap::Subcommand)]
pub enum DlqCommand {
    /// Count, then one line per message: first-death time, episodeId, size, replays, reason.
    /// Consumes nothing.
    List(ListArgs),
    /// Count, then every header, the properties and the start of the body of each message.
    /// Consumes nothing.
    Peek(ListArgs),
    /// Move dead letters back to the logs exchange (confirmed, then acked in the DLQ).
    Replay(ReplayArgs),
    /// Delete every message in the DLQ, after confirmation.
    Purge(PurgeArgs),
}

/// Which dead letters a command looks at; all given conditions must hold.
#[derive(clap::Args, Clone, Default)]
pub struct FilterArgs {
    /// Only messages whose reason contains this text (ignoring case).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only messages of this episode (their routing key).
    #[arg(long)]
    pub episode: Option<String>,
    /// Only messages last dead-lettered at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<DateTime<Utc>>,
    /// Only messages last dead-lettered before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<DateTime<Utc>>,
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Read at most this many messages.
    #[arg(long, default_value_t = 10_000)]
    pub limit: u64,
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// Replay every message (otherwise at least one filter is required).
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Replay at most this many messages.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Replay at most this many messages per second.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Show what would be replayed; move nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(clap::Args)]
pub struct PurgeArgs {
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

/// What the filters say, parsed.
struct Filter {
    /// Lowercase substring of the reason.
    reason: Option<String>,
    /// The episode.
    episode: Option<EpisodeId>,
    /// Lower bound of the last failure time.
    since: Option<DateTime<Utc>>,
    /// Upper bound (exclusive) of the last failure time.
    until: Option<DateTime<Utc>>,
}

impl Filter {
    fn parse(a: &FilterArgs) -> anyhow::Result<Self> {
        Ok(Self {
            reason: a.reason.as_ref().map(|r| r.to_lowercase()),
            episode: a.episode.as_deref().map(EpisodeId::parse).transpose()?,
            since: a.since,
            until: a.until,
        })
    }

    fn is_empty(&self) -> bool {
        self.reason.is_none()
            && self.episode.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }

    fn matches(&self, d: &DeadLetter) -> bool {
        if let Some(r) = &self.reason
            && !d.reason.to_lowercase().contains(r)
        {
            return false;
        }
        if let Some(ep) = &self.episode
            && d.routing_key.as_deref() != Some(ep.as_str())
        {
            return false;
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(t) = d.failed_at else { return false };
            if self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t >= u) {
                return false;
            }
        }
        true
    }
}

/// One earlier dead-lettering, from `x-logfleet-history`.
struct PastFailure {
    /// Its reason.
    reason: String,
    /// When it happened.
    failed_at: Option<DateTime<Utc>>,
}

/// What the DLQ commands show of one message.
struct DeadLetter {
    /// Reason of the last dead-lettering (`x-logfleet-reason`, else the broker's
    /// `x-first-death-reason`).
    reason: String,
    /// When it was last dead-lettered.
    failed_at: Option<DateTime<Utc>>,
    /// When it was first dead-lettered (the history's oldest entry, or the broker's x-death).
    first_death: Option<DateTime<Utc>>,
    /// Routing key to replay with: the original one, the delivery's, or the body's episodeId.
    routing_key: Option<String>,
    /// Body size in bytes.
    size: usize,
    /// The message id, if any.
    message_id: Option<String>,
    /// Times replayed before.
    replays: i64,
    /// Earlier failures, oldest first.
    history: Vec<PastFailure>,
    /// The replay run that last republished it.
    replay_run: Option<String>,
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn table_str(t: &lapin::types::FieldTable, k: &str) -> Option<String> {
    match t.inner().get(&ShortString::from(k))? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

impl DeadLetter {
    fn of(d: &Delivery) -> Self {
        let p = &d.properties;
        let headers = p.headers().clone().unwrap_or_default();
        let history: Vec<PastFailure> =
            match headers.inner().get(&ShortString::from(HISTORY_HEADER)) {
                Some(AMQPValue::FieldArray(a)) => a
                    .as_slice()
                    .iter()
                    .filter_map(|e| match e {
                        AMQPValue::FieldTable(t) => Some(PastFailure {
                            reason: table_str(t, "reason").unwrap_or_default(),
                            failed_at: table_str(t, "failed-at").as_deref().and_then(parse_time),
                        }),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
        // Dead-lettered by the broker itself (a quorum queue's delivery limit, a reject):
        // x-death entries carry reason, time and routing keys.
        let x_death: Vec<&lapin::types::FieldTable> =
            match headers.inner().get(&ShortString::from("x-death")) {
                Some(AMQPValue::FieldArray(a)) => a
                    .as_slice()
                    .iter()
                    .filter_map(|e| match e {
                        AMQPValue::FieldTable(t) => Some(t),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
        let death_times =
            x_death
                .iter()
                .filter_map(|t| match t.inner().get(&ShortString::from("time")) {
                    Some(AMQPValue::Timestamp(s)) => DateTime::from_timestamp(*s as i64, 0),
                    _ => None,
                });
        let failed_at = amqp::header_str(p, FAILED_AT_HEADER)
            .as_deref()
            .and_then(parse_time);
        let first_death = history
            .iter()
            .filter_map(|h| h.failed_at)
            .chain(failed_at)
            .chain(death_times)
            .min();
        let reason = amqp::header_str(p, REASON_HEADER)
            .or_else(|| amqp::header_str(p, "x-first-death-reason").map(|r| format!("broker: {r}")))
            .unwrap_or_else(|| "(no reason header)".into());
        let x_death_key =
            x_death.first().and_then(
                |t| match t.inner().get(&ShortString::from("routing-keys")) {
                    Some(AMQPValue::FieldArray(a)) => a.as_slice().iter().find_map(|k| match k {
                        AMQPValue::LongString(s) => {
                            Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                        }
                        _ => None,
                    }),
                    _ => None,
                },
            );
        let body_episode = || {
            serde_json::from_slice::<serde_json::Value>(&d.data)
                .ok()
                .and_then(|v| v.get("episodeId")?.as_str().map(str::to_owned))
        };
        let delivery_key = (!d.routing_key.as_str().is_empty()).then(|| d.routing_key.to_string());
        let routing_key = amqp::header_str(p, ROUTING_KEY_HEADER)
            .or(x_death_key)
            .or(delivery_key)
            .or_else(body_episode);
        Self {
            reason,
            failed_at,
            first_death,
            routing_key,
            size: d.data.len(),
            message_id: p.message_id().as_ref().map(|s| s.to_string()),
            replays: amqp::header_i64(p, REPLAYS_HEADER).unwrap_or(0),
            history,
            replay_run: amqp::header_str(p, REPLAY_RUN_HEADER),
        }
    }
}

fn fmt_time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "-".into())
}

pub async fn run(settings: Settings, command: DlqCommand) -> anyhow::Result<()> {
    let topology = Topology::new(&settings.amqp);
    let name = format!("logctl-dlq {}", settings.amqp.prefix);
    let conn = amqp::connect(&settings.amqp, &name)
        .await
        .context("RabbitMQ is not reachable")?;
    let result = match command {
        DlqCommand::List(a) => list(&conn, &topology, &a, false).await,
        DlqCommand::Peek(a) => list(&conn, &topology, &a, true).await,
        DlqCommand::Replay(a) => replay(&conn, &topology, &a).await,
        DlqCommand::Purge(a) => purge(&conn, &topology, &a).await,
    };
    let _ = conn.close(200, "done".into()).await;
    result
}

/// After a channel holding unacked messages closed: waits (at most 10 s) until the broker shows
/// at least `at_least` ready messages again, so that the command ends with the messages it held
/// back in the queue (a quorum queue processes the return asynchronously).
async fn wait_returned(conn: &Connection, queue: &str, at_least: u32) {
    for _ in 0..100 {
        match amqp::queue_depth(conn, queue).await {
            Ok(n) if n < at_least => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => return,
        }
    }
    tracing::warn!(
        queue,
        at_least,
        "messages held by this command have not all returned yet"
    );
}

/// Takes the next message without acking it (it returns when `ch` closes).
async fn get(ch: &Channel, queue: &str) -> anyhow::Result<Option<Delivery>> {
    Ok(ch
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
        .with_context(|| format!("reading {queue}"))?
        .map(|m| m.delivery))
}

async fn list(conn: &Connection, t: &Topology, a: &ListArgs, detail: bool) -> anyhow::Result<()> {
    let filter = Filter::parse(&a.filter)?;
    let queue = &t.dead_letter_queue;
    let depth = amqp::queue_depth(conn, queue)
        .await
        .with_context(|| format!("{queue} does not exist; run `logctl topology`"))?;
    println!("{queue}: {depth} messages");
    let ch = conn.create_channel().await?;
    let (mut read, mut shown) = (0u64, 0u64);
    if !detail {
        println!(
            "{:>6}  {:<24}  {:<32}  {:>9}  {:>7}  reason",
            "#", "first death", "episodeId", "bytes", "replays"
        );
    }
    while read < u64::from(depth).min(a.limit) {
        let Some(d) = get(&ch, queue).await? else {
            break;
        };
        read += 1;
        let dl = DeadLetter::of(&d);
        if !filter.matches(&dl) {
            continue;
        }
        shown += 1;
        let ep = dl.routing_key.as_deref().unwrap_or("?");
        if !detail {
            println!(
                "{read:>6}  {:<24}  {ep:<32}  {:>9}  {:>7}  {}",
                fmt_time(dl.first_death),
                dl.size,
                dl.replays,
                dl.reason
            );
            continue;
        }
        println!("--- message {read}");
        println!("episodeId:    {ep}");
        println!("message_id:   {}", dl.message_id.as_deref().unwrap_or("-"));
        println!("reason:       {}", dl.reason);
        println!("failed at:    {}", fmt_time(dl.failed_at));
        println!("first death:  {}", fmt_time(dl.first_death));
        println!(
            "source queue: {}",
            amqp::header_str(&d.properties, SOURCE_QUEUE_HEADER)
                .as_deref()
                .unwrap_or("-")
        );
        println!("size:         {} bytes", dl.size);
        println!("replays:      {}", dl.replays);
        for (i, h) in dl.history.iter().enumerate() {
            println!("history[{i}]:   {} at {}", h.reason, fmt_time(h.failed_at));
        }
        if let Some(ct) = d.properties.content_type() {
            println!("content_type: {ct}");
        }
        let body = String::from_utf8_lossy(&d.data);
        let excerpt: String = body.chars().take(300).collect();
        let more = if body.chars().count() > 300 {
            " …"
        } else {
            ""
        };
        println!("body:         {excerpt}{more}");
    }
    // Closing the channel returns every message read, unacked, to the queue.
    ch.close(200, "peek done".into()).await?;
    wait_returned(conn, queue, depth).await;
    if filter.is_empty() {
        println!("{shown} shown");
    } else {
        println!("{shown} of {read} read match the filter");
    }
    Ok(())
}

async fn replay(conn: &Connection, t: &Topology, a: &ReplayArgs) -> anyhow::Result<()> {
    let filter = Filter::parse(&a.filter)?;
    if !a.all && filter.is_empty() {
        bail!(
            "say which messages: --all, or at least one of --reason, --episode, --since, --until"
        );
    }
    if a.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        bail!("--rate must be positive");
    }
    let queue = &t.dead_letter_queue;
    if !a.dry_run {
        t.declare(conn).await.context("declaring the topology")?;
    }
    let depth = amqp::queue_depth(conn, queue)
        .await
        .with_context(|| format!("{queue} does not exist; run `logctl topology`"))?;
    let limit = a.limit.unwrap_or(u64::MAX);
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    tracing::info!(queue, depth, run = %run_id, dry_run = a.dry_run, "replaying dead letters");
    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(u64::from(depth).min(limit)).with_style(ProgressStyle::with_template(
            "{bar:30} {pos}/{len} replayed {msg}",
        )?)
    };
    let ch = conn.create_channel().await?;
    let publisher = ConfirmedPublisher::open(conn).await?;
    let mut ticker = a.rate.map(|r| {
        let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let (mut examined, mut replayed, mut held, mut no_route) = (0u64, 0u64, 0u64, 0u64);
    // Only the messages present at the start: a replayed message that fails again comes back
    // behind them (and carries this run's id), and is left for the next run.
    while examined < u64::from(depth) && replayed < limit {
        let Some(d) = get(&ch, queue).await? else {
            break;
        };
        examined += 1;
        let dl = DeadLetter::of(&d);
        if dl.replay_run.as_deref() == Some(run_id.as_str()) || !filter.matches(&dl) {
            held += 1;
            continue;
        }
        let Some(rk) = dl.routing_key.clone() else {
            no_route += 1;
            held += 1;
            bar.suspend(|| {
                eprintln!("message {examined}: no routing key or episodeId; left in the DLQ")
            });
            continue;
        };
        if a.dry_run {
            held += 1;
            replayed += 1;
            bar.suspend(|| {
                println!(
                    "would replay #{examined}: episode {rk}, {} bytes, message_id {}, reason: {}",
                    dl.size,
                    dl.message_id.as_deref().unwrap_or("-"),
                    dl.reason
                )
            });
            continue;
        }
        if let Some(tk) = ticker.as_mut() {
            tk.tick().await;
        }
        let props = amqp::replay_properties(&d.properties, &run_id);
        publisher
            .publish(&t.logs_exchange, &rk, &d.data, props)
            .await
            .with_context(|| format!("republishing message {examined} to {}", t.logs_exchange))?;
        // Acked only after the confirm: a crash before this line leaves it in the DLQ.
        d.acker
            .ack(BasicAckOptions::default())
            .await
            .context("acking a replayed message in the DLQ")?;
        replayed += 1;
        bar.inc(1);
        tracing::debug!(episode = %rk, message_id = ?dl.message_id, replays = dl.replays + 1, "replayed");
    }
    ch.close(200, "replay done".into()).await?;
    let moved = if a.dry_run { 0 } else { replayed };
    wait_returned(
        conn,
        queue,
        depth.saturating_sub(moved.min(u64::from(depth)) as u32),
    )
    .await;
    bar.finish_and_clear();
    let verb = if a.dry_run {
        "would replay"
    } else {
        "replayed"
    };
    println!(
        "{verb} {replayed} of {examined} messages examined in {queue} to {}; {held} left in the DLQ{}",
        t.logs_exchange,
        if no_route > 0 {
            format!(" ({no_route} without a routing key)")
        } else {
            String::new()
        }
    );
    Ok(())
}

async fn purge(conn: &Connection, t: &Topology, a: &PurgeArgs) -> anyhow::Result<()> {
    let queue = &t.dead_letter_queue;
    let depth = amqp::queue_depth(conn, queue)
        .await
        .with_context(|| format!("{queue} does not exist"))?;
    if !a.yes {
        eprint!(
            "Purge {depth} messages from {queue}? They cannot be recovered. Type `yes` to confirm: "
        );
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            bail!("not confirmed; nothing purged");
        }
    }
    let ch = conn.create_channel().await?;
    let n = ch
        .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
        .await?;
    let _ = ch.close(200, "purged".into()).await;
    println!("purged {n} messages from {queue}");
    Ok(())
}
