//! query-api: the HTTP read API of logfleet (see the `query_api` library for the routes).
//! Configuration: `config/default.toml` (compiled in), `LOGFLEET_CONFIG`, `LOGFLEET__*` variables;
//! `query.listen` is the address, `LOGFLEET__QUERY__BEARER_TOKEN` turns auth on.

use logfleet::config::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load()?;
    logfleet::telemetry::init(&settings.telemetry);
    let listener = tokio::net::TcpListener::bind(&settings.query.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, auth = !settings.query.bearer_token.is_empty(), "query-api starting");
    query_api::run(settings, listener, logfleet::shutdown_signal()).await?;
    tracing::info!("query-api stopped");
    Ok(())
}
