//! `logctl retention plan|run|set|clear`: the retention pass by hand (`docs/retention.md`).
//!
//! `plan` and `run` use the archive-worker's own code (`ChunkArchiver::plan_retention` and
//! `retention_pass`): the same indexed queries, the same crash-safe order under the same
//! archive lock, so a run from here and a worker's periodic pass can overlap safely (the lock
//! decides, the loser reports the episode as busy). The policy is `[retention]` of the settings;
//! `--episode-max-age` and `--chunk-max-age` replace it for this command only, which makes `plan`
//! a what-if. `enabled` is not needed here: it only switches the workers' periodic pass.
//! `set` and `clear` write an episode's override (`LogMetadata.retentionOverride`).

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use logfleet::archive::{
    ChunkArchiver, ExpiryOutcome, KIND_EPISODE, PlannedExpiry, RetentionPlan, format_age, parse_age,
};
use logfleet::config::{RetentionSettings, Settings};
use logfleet::domain::EpisodeId;
use logfleet::model::RetentionOverride;
use logfleet::mongo::MongoStore;
use logfleet::object_store::S3ObjectStore;

#[derive(clap::Subcommand)]
pub enum RetentionCommand {
    /// Show what a retention pass would expire now: episodes, chunks, logs and bytes.
    Plan {
        #[command(flatten)]
        policy: PolicyArgs,
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Expire what is due now, episode by episode, with a progress bar.
    Run {
        #[command(flatten)]
        policy: PolicyArgs,
        /// Expire at most this many episodes (default: all that are due).
        #[arg(long)]
        limit: Option<usize>,
        /// No progress bar, only the summary.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Give one episode its own limits (they replace the global ones; `never` keeps forever).
    Set {
        /// The episode id.
        episode: String,
        /// Age after the episode's last log when the whole episode expires: N, Ns, Nm, Nh, Nd
        /// or never.
        #[arg(long)]
        max_age: Option<String>,
        /// Age after a chunk's last log when an archived chunk expires (same forms).
        #[arg(long)]
        chunk_max_age: Option<String>,
    },
    /// Remove an episode's own limits (the global ones apply again).
    Clear {
        /// The episode id.
        episode: String,
    },
}

/// Limits that replace `[retention]` for one command.
#[derive(clap::Args)]
pub struct PolicyArgs {
    /// Whole-episode maximum age instead of `retention.episode_max_age_secs` (N, Ns, Nm, Nh,
    /// Nd, or never).
    #[arg(long)]
    episode_max_age: Option<String>,
    /// Archived-chunk maximum age instead of `retention.chunk_max_age_secs` (same forms).
    #[arg(long)]
    chunk_max_age: Option<String>,
}

impl PolicyArgs {
    /// The settings' policy with this command's replacements.
    fn apply(&self, mut policy: RetentionSettings) -> anyhow::Result<RetentionSettings> {
        if let Some(a) = &self.episode_max_age {
            policy.episode_max_age_secs = age(a, "--episode-max-age")? as u64;
        }
        if let Some(a) = &self.chunk_max_age {
            policy.chunk_max_age_secs = age(a, "--chunk-max-age")? as u64;
        }
        Ok(policy)
    }
}

fn age(raw: &str, flag: &str) -> anyhow::Result<i64> {
    parse_age(raw).map_err(|e| anyhow::anyhow!("{flag}: {e}"))
}

pub async fn run(settings: Settings, command: RetentionCommand) -> anyhow::Result<()> {
    match command {
        RetentionCommand::Plan { policy, json } => {
            let archiver = archiver(&settings, policy.apply(settings.retention.clone())?).await?;
            let plan = archiver.plan_retention(bson::DateTime::now()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                print_plan(&plan, archiver.retention_settings());
            }
            Ok(())
        }
        RetentionCommand::Run {
            policy,
            limit,
            quiet,
        } => {
            let mut policy = policy.apply(settings.retention.clone())?;
            policy.max_episodes_per_pass = limit.unwrap_or(usize::MAX);
            let archiver = archiver(&settings, policy).await?;
            let now = bson::DateTime::now();
            let due = archiver.plan_retention(now).await?.expiries.len();
            let bar = if quiet {
                ProgressBar::hidden()
            } else {
                ProgressBar::new(due.min(limit.unwrap_or(usize::MAX)) as u64).with_style(
                    ProgressStyle::with_template(
                        "{bar:40} {pos}/{len} episodes {msg} [{elapsed_precise}]",
                    )
                    .expect("valid template"),
                )
            };
            let report = archiver
                .retention_pass(now, |p, r| {
                    bar.inc(1);
                    bar.set_message(p.episode_id.to_string());
                    match r {
                        Ok(ExpiryOutcome::Busy) => bar.println(format!(
                            "{}: busy (another worker holds its archive lock; a later pass decides)",
                            p.episode_id
                        )),
                        Err(e) => bar.println(format!("{}: failed: {e}", p.episode_id)),
                        _ => {}
                    }
                })
                .await?;
            bar.finish_and_clear();
            let (episodes, chunks, logs, s3, mongo) = RetentionPlan {
                candidates: 0,
                expiries: report.expired.clone(),
            }
            .totals();
            println!(
                "expired {} of {} planned: {episodes} whole episodes, {chunks} chunks, {logs} logs, \
                 {s3} S3 bytes, {mongo} MongoDB bytes; {} busy, {} failed",
                report.expired.len(),
                report.planned,
                report.busy,
                report.failed
            );
            if report.failed > 0 {
                bail!("{} expiries failed; rerun to finish them", report.failed);
            }
            Ok(())
        }
        RetentionCommand::Set {
            episode,
            max_age,
            chunk_max_age,
        } => {
            if max_age.is_none() && chunk_max_age.is_none() {
                bail!("give --max-age, --chunk-max-age or both (`retention clear` removes them)");
            }
            let ep = EpisodeId::parse(&episode)?;
            let value = RetentionOverride {
                max_age_secs: max_age
                    .as_deref()
                    .map(|a| age(a, "--max-age"))
                    .transpose()?,
                chunk_max_age_secs: chunk_max_age
                    .as_deref()
                    .map(|a| age(a, "--chunk-max-age"))
                    .transpose()?,
                set_at: bson::DateTime::now(),
            };
            let store = MongoStore::connect(&settings.mongo).await?;
            store
                .set_retention_override(&ep, Some(value.clone()))
                .await?
                .with_context(|| format!("no LogMetadata for {ep}"))?;
            let show = |v: Option<i64>| v.map_or("global".to_string(), describe_age);
            println!(
                "{ep}: episode max age {}, chunk max age {}",
                show(value.max_age_secs),
                show(value.chunk_max_age_secs)
            );
            Ok(())
        }
        RetentionCommand::Clear { episode } => {
            let ep = EpisodeId::parse(&episode)?;
            let store = MongoStore::connect(&settings.mongo).await?;
            store
                .set_retention_override(&ep, None)
                .await?
                .with_context(|| format!("no LogMetadata for {ep}"))?;
            println!("{ep}: the global retention limits apply");
            Ok(())
        }
    }
}

/// A ChunkArchiver on the configured services, under a lock owner name of its own.
async fn archiver(
    settings: &Settings,
    policy: RetentionSettings,
) -> anyhow::Result<ChunkArchiver<S3ObjectStore>> {
    let store = MongoStore::connect(&settings.mongo).await?;
    let objects = S3ObjectStore::connect(&settings.s3).await?;
    let owner = format!(
        "logctl-retention-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    Ok(ChunkArchiver::new(store, objects, settings, owner).with_retention(policy))
}

fn describe_age(secs: i64) -> String {
    if secs == 0 {
        "never".into()
    } else {
        format_age(secs)
    }
}

fn print_plan(plan: &RetentionPlan, policy: &RetentionSettings) {
    let limit = |s: u64| {
        if s == 0 {
            "none".to_string()
        } else {
            format_age(s as i64)
        }
    };
    println!(
        "policy: episode max age {}, chunk max age {} (per-episode overrides apply)",
        limit(policy.episode_max_age_secs),
        limit(policy.chunk_max_age_secs)
    );
    if !plan.expiries.is_empty() {
        println!(
            "{:<32} {:<8} {:>7} {:>10} {:>10} {:>12}  reason",
            "episode", "kind", "chunks", "logs", "hot logs", "s3 bytes"
        );
    }
    for p in &plan.expiries {
        print_row(p);
    }
    let (episodes, chunks, logs, s3, mongo) = plan.totals();
    println!(
        "would expire: {} episodes ({episodes} whole), {chunks} chunks, {logs} logs, {s3} S3 bytes, \
         {mongo} MongoDB bytes; {} candidates read",
        plan.expiries.len(),
        plan.candidates
    );
}

fn print_row(p: &PlannedExpiry) {
    let kind = if p.kind == KIND_EPISODE {
        "episode"
    } else {
        "chunks"
    };
    let mark = if p.unfinished { " (unfinished)" } else { "" };
    println!(
        "{:<32} {:<8} {:>7} {:>10} {:>10} {:>12}  {}{mark}",
        p.episode_id.as_str(),
        kind,
        p.chunks,
        p.logs,
        p.hot_logs,
        p.s3_bytes,
        p.reason
    );
}
