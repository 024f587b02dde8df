//! Tracing set-up: human-readable output by default, JSON lines with `telemetry.format = "json"`.

use tracing_subscriber::EnvFilter;

use crate::config::TelemetrySettings;

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `telemetry.filter`.
/// Calling it twice is harmless (the second call does nothing), which tests rely on.
pub fn init(s: &TelemetrySettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&s.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if s.format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
