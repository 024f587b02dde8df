//! Figure 10: the episode viewer in a real headless browser (`--only viewer`), the two goals of
//! its issue that are times, so they are measured here rather than asserted in the tests:
//! - render: a page of 1,000 lines drawn after its data arrived (the page's own
//!   `logfleet:render` measure), goal under 300 ms;
//! - follow: a log published to RabbitMQ until its row shows in a following page (through the
//!   ingest-worker, MongoDB, query-api's follow stream and the page), goal within 2 s.
//!
//! One episode of 1,000 logs placed by the real ingest-worker, a query-api in-process, Debian's
//! chromium over WebDriver (as the viewer tests drive it). Medians and maxima of a few rounds.

use std::time::Instant;

use anyhow::{Context, anyhow};
use logfleet::domain::LogLevel;
use logfleet::ingest::IngestOptions;
use logfleet_testkit::api::Api;
use logfleet_testkit::browser::Browser;
use logfleet_testkit::{SentLog, make_logs, single_body};
use serde_json::json;

use crate::Sizes;
use crate::common::{self, median, progress};
use crate::report::{Figure, Goal};

const EPISODE: &str = "bench-viewer";
/// Logs of the episode: one page of the viewer.
const LOGS: usize = 1_000;
/// Page openings timed for the render figure.
const RENDER_ROUNDS: usize = 5;
/// Logs published, one at a time, while the page follows.
const FOLLOW_ROUNDS: usize = 10;
/// 2025-12-03T22:13:20Z.
const BASE_MS: i64 = 1_764_800_000_000;

pub async fn run(_sizes: &Sizes) -> anyhow::Result<Figure> {
    // The browser helpers panic on a failed step (they serve the tests); here a panic is this
    // figure's failure, not the whole bench's.
    tokio::spawn(measure())
        .await
        .map_err(|e| anyhow!("the viewer figure failed: {e}"))?
}

async fn measure() -> anyhow::Result<Figure> {
    let mut fig = Figure::new("10. Viewer in a browser (render of 1,000 lines; follow latency)");
    let browser = Browser::launch()
        .await
        .context("chromium and chromedriver are needed: run scripts/services.sh")?;
    let env = common::env("viewer", |_| {}).await;
    let ingest = env.spawn_ingest(IngestOptions::default());
    progress(format!("viewer: placing {LOGS} logs"));
    env.publish_in_batches(EPISODE, &make_logs(EPISODE, LOGS, BASE_MS), 250, "place")
        .await;
    env.wait_for_episode(EPISODE, LOGS as i64, 0).await;
    let api = Api::start(&env.settings).await;
    let page = format!("{}/#/e/{EPISODE}", api.base);

    let mut renders = Vec::new();
    for r in 0..RENDER_ROUNDS {
        progress(format!("viewer: render round {}", r + 1));
        browser.open_afresh(&page).await;
        let got = browser
            .run(
                r#"
await waitFor(() => $('#logs') && $$('#logs .row').length > 0, 'log rows');
await idle();
return performance.getEntriesByName('logfleet:render')
  .filter((e) => e.detail && e.detail.lines === 1000).map((e) => e.duration);
"#,
                json!({}),
            )
            .await;
        let ms = got[0]
            .as_f64()
            .with_context(|| format!("no render of a 1,000-line page measured: {got}"))?;
        renders.push(ms);
    }

    progress("viewer: follow");
    browser.start_following().await;
    let mut follows = Vec::new();
    for n in 0..FOLLOW_ROUNDS {
        let msg = format!("follow probe {n}");
        let log = SentLog {
            timestamp_ms: BASE_MS + 10_000_000 + n as i64,
            level: LogLevel::Warn,
            message: msg.clone(),
            metadata: None,
        };
        let t0 = Instant::now();
        env.publish(
            EPISODE,
            &single_body(EPISODE, &log),
            Some(&format!("probe-{n}")),
        )
        .await;
        browser
            .run(
                "await waitFor(() => $$('#logs .row .msg').some((m) => m.textContent === args.msg), args.msg);",
                json!({ "msg": msg }),
            )
            .await;
        follows.push(t0.elapsed().as_secs_f64() * 1e3);
    }

    let max = |v: &[f64]| v.iter().copied().fold(f64::MIN, f64::max);
    fig.line(format!(
        "render of 1,000 lines after the data arrived: median {:.1} ms, max {:.1} ms ({} openings)",
        median(&renders),
        max(&renders),
        renders.len()
    ));
    fig.line(format!(
        "follow, published until shown: median {:.0} ms, max {:.0} ms ({} logs; query.follow_poll_ms {}, ingest.batch_linger_ms {})",
        median(&follows),
        max(&follows),
        follows.len(),
        env.settings.query.follow_poll_ms,
        env.settings.ingest.batch_linger_ms
    ));
    fig.value_verdict(
        "render of 1,000 lines, median ms",
        median(&renders),
        Goal::AtMost(300.0),
    );
    fig.value_verdict(
        "follow: published until shown, max ms",
        max(&follows),
        Goal::AtMost(2_000.0),
    );
    browser.close().await;
    api.stop().await;
    ingest
        .stop()
        .await
        .context("the ingest-worker stops cleanly")?;
    env.cleanup().await;
    Ok(fig)
}
