//! ingest-worker: consumes producer messages from RabbitMQ and writes them to MongoDB.
//! Configuration: `config/default.toml` (compiled in), `LOGFLEET_CONFIG`, `LOGFLEET__*` variables.

use logfleet::config::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load()?;
    logfleet::telemetry::init(&settings.telemetry);
    tracing::info!(prefix = %settings.amqp.prefix, partitions = settings.amqp.partitions, "ingest-worker starting");
    logfleet::ingest::run(settings, logfleet::shutdown_signal()).await?;
    tracing::info!("ingest-worker stopped");
    Ok(())
}
