//! archive-worker: moves full chunks of logs from MongoDB to S3 as JSONL.gz.
//! Configuration: `config/default.toml` (compiled in), `LOGFLEET_CONFIG`, `LOGFLEET__*` variables.

use logfleet::config::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load()?;
    logfleet::telemetry::init(&settings.telemetry);
    tracing::info!(bucket = %settings.s3.bucket, "archive-worker starting");
    logfleet::archive::run(settings, logfleet::shutdown_signal()).await?;
    tracing::info!("archive-worker stopped");
    Ok(())
}
