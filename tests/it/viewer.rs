//! The episode viewer (query-api's `/`) in a real headless browser (Debian's chromium over
//! WebDriver), against a running query-api over logs the real workers placed in MongoDB and S3:
//! an episode of 2,500 logs (two chunks archived in S3, 500 hot), a few more episodes and an
//! empty one.
//!
//! - the list loads (order and figures as the API gives them), the first view's transfer size;
//! - search by prefix and keyboard navigation through the list;
//! - a page of 1,000 lines renders, its time measured in the browser and printed (the 300 ms
//!   goal is checked by `logfleet-bench --only viewer`, not here: no timed assertion);
//! - scrolling down from the first archived chunk into the hot logs and back up: every log
//!   exactly once, in order, each shown in its tier and chunk;
//! - a filter narrows the list to exactly what the API returns for it;
//! - keyboard selection, metadata, and a permalink that reopens at the same line;
//! - unknown, empty and invalid episodes, and an expired range (410), get clear messages;
//! - follow shows a newly published log (how soon is printed; the 2 s goal is the bench's);
//!   pause stops it, resume catches up with no gap;
//! - auth on (token asked once, kept for the session, used by follow and downloads) and off;
//! - screenshots of the list and of an episode for the README (`docs/images/`).
//!
//! And, without a browser, the episode list API the viewer needs: prefix and latest-log order,
//! with cursors that neither lose nor repeat an episode (same-second and exact ties included).

use std::collections::BTreeSet;
use std::time::Instant;

use logfleet::archive::ArchiveOptions;
use logfleet::domain::{EpisodeId, LogLevel};
use logfleet::ingest::IngestOptions;
use logfleet_testkit::api::Api;
use logfleet_testkit::browser::{Browser, Locator, save_png, stuck_after};
use logfleet_testkit::{
    SentLog, TestEnv, batch_body, make_logs, sequence_numbers, single_body, thousands,
};
use serde_json::{Value, json};

const MAIN: &str = "run-main";
/// 2025-12-03T22:13:20Z, a whole second.
const BASE_MS: i64 = 1_764_800_000_000;
const TOKEN: &str = "viewer-test-token-5d1c";

/// GET a JSON document from the API (with a bearer token when given): (status, body).
async fn api_get(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON body"))
}

/// Sequence numbers of every log matching `params`, through the API.
async fn api_seqs(base: &str, params: &str) -> Vec<i64> {
    let (s, page) = api_get(
        &format!("{base}/v1/episodes/{MAIN}/logs?limit=10000&{params}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{page}");
    assert!(page["nextCursor"].is_null(), "one page holds them all");
    sequence_numbers(page["logs"].as_array().unwrap())
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn fmt_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string()
}

/// The tier tag the viewer must show for log `seq` of MAIN (chunks of 1,000, then hot).
fn tier_of(seq: i64) -> &'static str {
    match seq {
        0..1000 => "c0",
        1000..2000 => "c1",
        _ => "hot",
    }
}

/// Scrolls the log list from where it is to its end (`down`) or its start, a screenful at a
/// time, waiting for every read; returns the rows in the DOM after each step and the
/// separators seen.
const SCROLL_THROUGH: &str = r#"
await waitFor(() => $$('#logs .row').length, 'log rows');
await idle();
const v = $('#logs');
const snaps = [];
const seps = new Set();
for (let step = 0; ; step += 1) {
  snaps.push(rows());
  for (const s of $$('#logs .sep')) seps.add(`${s.dataset.seq}:${s.dataset.tier}`);
  if (args.down) {
    if (v.scrollTop + v.clientHeight >= v.scrollHeight - 2 && $('#logs .edge-end')) break;
    v.scrollTop += Math.floor(v.clientHeight * 0.8);
  } else {
    if (v.scrollTop === 0 && $('#logs .edge-start')) break;
    v.scrollTop -= Math.floor(v.clientHeight * 0.8);
  }
  await idle();
  if (step > 20000) throw new Error('the list never ended');
}
return { snaps, seps: [...seps] };
"#;

/// Checks snapshots of the rows in the DOM: each a run of rows in order (consecutive sequence
/// numbers when `consecutive`: nothing filtered), each in its tier; returns every sequence
/// number seen.
fn check_snapshots(v: &Value, consecutive: bool, what: &str) -> BTreeSet<i64> {
    let mut seen = BTreeSet::new();
    let snaps = v["snaps"].as_array().unwrap();
    for (i, snap) in snaps.iter().enumerate() {
        let rows: Vec<(i64, String)> = snap
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[0].as_i64().unwrap(), r[1].as_str().unwrap().to_owned()))
            .collect();
        assert!(!rows.is_empty(), "{what}: step {i} shows no rows");
        for w in rows.windows(2) {
            if consecutive {
                assert_eq!(
                    w[1].0,
                    w[0].0 + 1,
                    "{what}: step {i}: gap or repeat {rows:?}"
                );
            } else {
                assert!(w[1].0 > w[0].0, "{what}: step {i}: out of order {rows:?}");
            }
        }
        for (seq, tier) in &rows {
            assert_eq!(
                tier,
                tier_of(*seq),
                "{what}: log {seq} shown in the wrong tier"
            );
            seen.insert(*seq);
        }
    }
    for s in v["seps"].as_array().unwrap() {
        let (seq, tier) = s.as_str().unwrap().split_once(':').unwrap();
        assert_eq!(
            tier,
            tier_of(seq.parse().unwrap()),
            "{what}: separator {s} names the wrong tier"
        );
    }
    seen
}

/// Places the test data with the real workers; returns MAIN's logs. Leaves the ingest-worker
/// running (follow needs it); the archive-worker is stopped once MAIN has its two chunks.
async fn place(
    env: &TestEnv,
) -> (
    Vec<SentLog>,
    logfleet_testkit::WorkerHandle<logfleet::ingest::IngestError>,
) {
    let ingest = env.spawn_ingest(IngestOptions::default());
    let archive = env.spawn_archive(ArchiveOptions::default());
    let logs = make_logs(MAIN, 2_500, BASE_MS);
    env.publish_in_batches(MAIN, &logs, 250, "main").await;
    // Two more episodes, their last logs later than MAIN's, and an episode without logs.
    let b = make_logs("run-b", 40, BASE_MS + 3_600_000);
    env.publish("run-b", &batch_body("run-b", &b), Some("run-b-0"))
        .await;
    let ci = make_logs("ci-job-7", 25, BASE_MS + 7_200_000);
    env.publish("ci-job-7", &batch_body("ci-job-7", &ci), Some("ci-job-7-0"))
        .await;
    env.store
        .metadata_or_create(&EpisodeId::parse("empty-1").unwrap(), 1_000, 1_000)
        .await
        .unwrap();
    env.wait_for_episode(MAIN, 2_500, 2).await;
    env.wait_for_episode("run-b", 40, 0).await;
    env.wait_for_episode("ci-job-7", 25, 0).await;
    archive.stop().await.unwrap();
    let snap = env.snapshot(MAIN).await;
    snap.assert_exact(&logs);
    assert_eq!(
        (snap.chunks.len(), snap.hot.len()),
        (2, 500),
        "both tiers hold logs"
    );
    (logs, ingest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn viewer_in_a_real_browser() {
    let Some(b) = Browser::launch().await else {
        return;
    };
    let env = TestEnv::with_chunks_of("viewer", 1_000, |s| s.archive.member_bytes = 16 << 10).await;
    let (logs, ingest) = place(&env).await;
    let api = Api::start(&env.settings).await;
    let base = api.base.clone();
    let meta = env.metadata(MAIN).await.unwrap();

    // --- The list: first view, order and figures as the API gives them, auth off. ----------
    b.goto(&format!("{base}/")).await;
    let first = b
        .run(
            r#"
await waitFor(() => $$('#episodes tbody tr').length > 0, 'the episode list');
await idle();
const nav = performance.getEntriesByType('navigation')[0];
const res = performance.getEntriesByType('resource');
return {
  ids: $$('#episodes tbody tr').map((r) => r.dataset.episode),
  cells: Object.fromEntries($$('#episodes tbody tr').map((r) => [r.dataset.episode, [...r.cells].map((c) => c.textContent)])),
  transfer: nav.transferSize + res.reduce((s, r) => s + r.transferSize, 0),
  decoded: nav.decodedBodySize + res.reduce((s, r) => s + r.decodedBodySize, 0),
  requests: 1 + res.length,
  external: res.map((r) => r.name).filter((n) => !n.startsWith(location.origin)),
  dialogOpen: $('#auth').open,
  stored: sessionStorage.length + localStorage.length,
};
"#,
            json!({}),
        )
        .await;
    let (_, by_last) = api_get(&format!("{base}/v1/episodes?sort=lastLogAt"), None).await;
    let want_ids: Vec<&str> = by_last["episodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["episodeId"].as_str().unwrap())
        .collect();
    assert_eq!(want_ids, ["ci-job-7", "run-b", MAIN, "empty-1"]);
    assert_eq!(
        first["ids"],
        json!(want_ids),
        "the list is the API's, latest log first"
    );
    let main_cells = &first["cells"][MAIN];
    assert_eq!(main_cells[1], fmt_time(BASE_MS + 2_499), "last log");
    assert_eq!(main_cells[2], "2.5 s", "time span");
    assert_eq!(main_cells[3], "2,500", "total");
    assert_eq!(main_cells[4], thousands(meta.current_logs), "hot");
    assert_eq!(main_cells[5], "2,000 (2 chunks)", "archived");
    let levels = main_cells[6].as_str().unwrap();
    for l in LogLevel::ALL {
        let want = format!(
            "{} {}",
            l.as_str().to_uppercase(),
            thousands(meta.level_count(l))
        );
        assert!(levels.contains(&want), "levels {levels:?} lack {want:?}");
    }
    assert_eq!(first["cells"]["empty-1"][3], "0");
    assert_eq!(first["cells"]["empty-1"][1], "–");
    assert_eq!(first["dialogOpen"], false, "auth off: no token asked");
    assert_eq!(first["stored"], 0, "auth off: nothing stored");
    assert_eq!(
        first["external"],
        json!([]),
        "every request goes to query-api"
    );
    let transfer = first["transfer"].as_i64().unwrap();
    println!(
        "viewer: first view (list of {} episodes): {} bytes transferred in {} requests ({} bytes decoded)",
        want_ids.len(),
        transfer,
        first["requests"],
        first["decoded"]
    );
    assert!(
        transfer > 10_000 && transfer < 200_000,
        "first view transfers {transfer} bytes (must stay under 200 KB)"
    );
    let shot = b.screenshot().await;
    assert!(shot.len() > 10_000, "a screenshot of the list");
    println!(
        "viewer: screenshot of the list: {:?}",
        save_png("viewer-episodes.png", &shot)
    );

    // --- Search by prefix, then the keyboard: Tab to the rows, arrows between them. ---------
    b.type_into("prefix", "run-").await;
    let searched = b
        .run(
            r#"
await waitFor(() => $$('#episodes tbody tr').length === 2 && $('#list-status').textContent.includes('run-'), 'the search');
await idle();
return { ids: $$('#episodes tbody tr').map((r) => r.dataset.episode), hash: location.hash };
"#,
            json!({}),
        )
        .await;
    let (_, by_prefix) = api_get(
        &format!("{base}/v1/episodes?sort=lastLogAt&prefix=run-"),
        None,
    )
    .await;
    let want: Vec<&str> = by_prefix["episodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["episodeId"].as_str().unwrap())
        .collect();
    assert_eq!(want, ["run-b", MAIN]);
    assert_eq!(searched["ids"], json!(want));
    assert_eq!(searched["hash"], "#/?prefix=run-");
    // Tab from the search box: the sort control, then the first episode's link.
    let tab = "\u{e004}";
    let down = "\u{e015}";
    let enter = "\u{e007}";
    b.type_keys(tab).await;
    b.type_keys(tab).await;
    let focus = r#"
const a = document.activeElement;
const st = getComputedStyle(a);
return { id: a.id, text: a.textContent, cls: a.className, outline: `${st.outlineStyle} ${st.outlineWidth} ${st.outlineColor}` };
"#;
    let f = b.run(focus, json!({})).await;
    assert_eq!(f["text"], "run-b", "Tab reaches the first row's link: {f}");
    assert_eq!(
        f["outline"], "solid 2px rgb(29, 78, 216)",
        "focus is visible"
    );
    b.type_keys(down).await;
    let f = b.run(focus, json!({})).await;
    assert_eq!(f["text"], MAIN, "ArrowDown moves to the next row: {f}");
    // Enter opens it: the first page, 1,000 lines, rendered and timed.
    b.type_keys(enter).await;
    let opened = b
        .run(
            r#"
await waitFor(() => $('#logs') && $$('#logs .row').length > 0, 'log rows');
await idle();
const pick = (name) => performance.getEntriesByName(name).filter((e) => e.detail && e.detail.lines === 1000).map((e) => e.duration);
return {
  hash: location.hash,
  render: pick('logfleet:render'),
  toFrame: pick('logfleet:render-to-frame'),
  rows: rows(),
  seps: $$('#logs .sep').map((s) => [Number(s.dataset.seq), s.dataset.tier]),
  total: $('#st-total').textContent,
  hot: $('#st-hot').textContent,
  archived: $('#st-archived').textContent,
  status: $('#ep-status').textContent,
};
"#,
            json!({}),
        )
        .await;
    assert_eq!(opened["hash"], format!("#/e/{MAIN}"));
    let render = opened["render"][0]
        .as_f64()
        .unwrap_or_else(|| panic!("no render of a 1,000-line page measured: {opened}"));
    let to_frame = opened["toFrame"][0].as_f64().unwrap_or(f64::NAN);
    println!(
        "viewer: a page of 1,000 lines rendered in {render:.1} ms after its data arrived \
         ({to_frame:.1} ms to the next frame)"
    );
    assert_eq!(opened["total"], "2,500");
    assert_eq!(opened["hot"], thousands(meta.current_logs));
    assert!(
        opened["archived"]
            .as_str()
            .unwrap()
            .starts_with("2,000 in 2 chunks"),
        "{opened}"
    );
    assert_eq!(opened["rows"][0], json!([0, "c0"]));
    assert_eq!(
        opened["seps"][0],
        json!([0, "c0"]),
        "the first chunk is named"
    );
    assert!(
        opened["status"]
            .as_str()
            .unwrap()
            .contains("Showing 1,000 loaded logs, sequence 0 to 999"),
        "{opened}"
    );

    // --- Scrolling: archived chunk 0 → chunk 1 → hot, then back; small pages and a window
    // of 750 so that pages are read (and dropped) both ways. ---------------------------------
    let tuned = format!("{base}/#/e/{MAIN}?pageSize=250&window=750");
    b.open_afresh(&tuned).await;
    let down_run = b.run(SCROLL_THROUGH, json!({"down": true})).await;
    assert!(
        down_run["snaps"].as_array().unwrap().len() > 50,
        "scrolled a screen at a time"
    );
    let seen = check_snapshots(&down_run, true, "scrolling down");
    assert_eq!(seen, (0..2_500).collect(), "scrolling down shows every log");
    let seps: BTreeSet<&str> = down_run["seps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for boundary in ["1000:c1", "2000:hot"] {
        assert!(
            seps.contains(boundary),
            "no separator {boundary} in {seps:?}"
        );
    }
    let up_run = b.run(SCROLL_THROUGH, json!({"down": false})).await;
    let seen = check_snapshots(&up_run, true, "scrolling up");
    assert_eq!(
        seen,
        (0..2_500).collect(),
        "scrolling back up shows every log"
    );
    let loaded = b
        .run(
            "return performance.getEntriesByName('logfleet:render').length;",
            json!({}),
        )
        .await;
    assert!(
        loaded.as_i64().unwrap() >= 16,
        "pages were read both ways: {loaded} renders"
    );

    // --- A filter, set through the form, narrows to exactly the API's answer. ---------------
    b.open_afresh(&tuned).await;
    b.run(
        "await waitFor(() => $$('#logs .row').length, 'rows'); await idle();",
        json!({}),
    )
    .await;
    b.client
        .find(Locator::Css("input[name=level][value=error]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.type_into("f-contains", "1").await;
    b.click("f-apply").await;
    b.run(
        "await waitFor(() => location.hash.includes('level=error'), 'the filter in the URL'); await idle();",
        json!({}),
    )
    .await;
    // From the start of the selection to its end.
    b.run("$('#go-start').click(); await idle();", json!({}))
        .await;
    let filtered = b.run(SCROLL_THROUGH, json!({"down": true})).await;
    let shown = check_snapshots(&filtered, false, "filtered");
    let from_api: Vec<i64> = api_seqs(&base, "level=error&contains=1").await;
    let expected: Vec<i64> = logs
        .iter()
        .enumerate()
        .filter(|(_, l)| l.level == LogLevel::Error && l.message.contains('1'))
        .map(|(i, _)| i as i64)
        .collect();
    assert_eq!(from_api, expected, "the API's answer");
    assert!(from_api.len() > 250 && from_api.len() < 2_500);
    assert_eq!(
        shown.into_iter().collect::<Vec<_>>(),
        from_api,
        "the filtered list is exactly the API's answer"
    );
    let hash = b.run("return location.hash;", json!({})).await;
    assert!(
        hash.as_str().unwrap().contains("level=error&contains=1"),
        "{hash}"
    );

    // --- A time range, typed with the keyboard: Tab from the text box through the time
    // fields to the Apply button. It crosses from chunk 1 into the hot logs. ---------------
    b.run(
        "$('#f-clear').click(); await waitFor(() => !location.hash.includes('level='), 'cleared filters'); await idle();",
        json!({}),
    )
    .await;
    b.click("f-contains").await;
    let (from, to) = (iso(BASE_MS + 1_990), iso(BASE_MS + 2_020));
    for (typed, next) in [
        ("", "f-from"),
        (from.as_str(), "f-to"),
        (to.as_str(), "f-apply"),
    ] {
        b.type_keys(&format!("{typed}{tab}")).await;
        let f = b.run(focus, json!({})).await;
        assert_eq!(f["id"], next, "Tab order through the filters: {f}");
        assert_eq!(
            f["outline"], "solid 2px rgb(29, 78, 216)",
            "focus is visible on {next}"
        );
    }
    b.type_keys(enter).await;
    b.run(
        "await waitFor(() => location.hash.includes('from='), 'the time range in the URL'); await idle(); $('#go-start').click(); await idle();",
        json!({}),
    )
    .await;
    let ranged = b.run(SCROLL_THROUGH, json!({"down": true})).await;
    let shown = check_snapshots(&ranged, true, "time range");
    let from_api = api_seqs(&base, &format!("time={from}..{to}")).await;
    assert_eq!(from_api, (1_990..2_020).collect::<Vec<_>>());
    assert_eq!(
        shown.into_iter().collect::<Vec<_>>(),
        from_api,
        "the time range is the API's"
    );

    // --- Keyboard selection, metadata, permalink; a jump to a time. ----------------------------
    b.open_afresh(&format!("{base}/#/e/{MAIN}")).await;
    b.run(
        "await waitFor(() => $$('#logs .row').length, 'rows'); await idle();",
        json!({}),
    )
    .await;
    b.type_into("goto", &format!("{}{enter}", iso(BASE_MS + 1_234)))
        .await;
    let at_time = b
        .run(
            "await waitFor(() => $('#logs .row.sel'), 'a line selected'); await idle(); return [Number($('#logs .row.sel').dataset.seq), location.hash];",
            json!({}),
        )
        .await;
    assert_eq!(
        at_time,
        json!([1234, format!("#/e/{MAIN}?seq=1234")]),
        "a jump to a time"
    );
    b.run("$('#goto').value = '';", json!({})).await;
    b.type_into("goto", &format!("1500{enter}")).await;
    b.run(
        "await waitFor(() => $('#logs .row.sel') && $('#logs .row.sel').dataset.seq === '1500', 'line 1500 selected'); await idle();",
        json!({}),
    )
    .await;
    b.type_keys(&format!("{down}{down}{down}{enter}")).await;
    let selected = b
        .run(
            r#"
await waitFor(() => $('#logs .row.open'), 'an expanded line');
await idle();
const a = document.activeElement;
return {
  focus: a.id,
  outline: getComputedStyle(a).outlineStyle,
  active: a.getAttribute('aria-activedescendant'),
  sel: $('#logs .row.sel').dataset.seq,
  open: $('#logs .row.open').dataset.seq,
  detail: $('#logs .row.open .detail').textContent,
  hash: location.hash,
  href: location.href,
};
"#,
            json!({}),
        )
        .await;
    assert_eq!(
        selected["focus"], "logs",
        "the list has the focus: {selected}"
    );
    assert_eq!(selected["outline"], "solid", "and shows it");
    assert_eq!(selected["sel"], "1503", "three lines down: {selected}");
    assert_eq!(selected["active"], "log-1503");
    assert_eq!(selected["open"], "1503");
    let detail = selected["detail"].as_str().unwrap();
    assert!(
        detail.contains("metadata:")
            && detail.contains("\"i\": 1503")
            && detail.contains("\"ok\": true"),
        "{detail}"
    );
    assert!(detail.contains(&logs[1503].message), "{detail}");
    assert_eq!(selected["hash"], format!("#/e/{MAIN}?seq=1503"));
    let href = selected["href"].as_str().unwrap().to_owned();
    // The permalink, in a fresh page: the same line, selected and in view.
    let reopen = r#"
await waitFor(() => $('#logs .row.sel'), 'a selected line');
await idle();
const r = $('#logs .row.sel').getBoundingClientRect();
const v = $('#logs').getBoundingClientRect();
return { sel: Number($('#logs .row.sel').dataset.seq), tier: $('#logs .row.sel').dataset.tier,
         inView: r.top >= v.top && r.bottom <= v.bottom, msg: $('#logs .row.sel .msg').textContent };
"#;
    for (link, seq, tier) in [
        (href.clone(), 1503, "c1"),
        (format!("{base}/#/e/{MAIN}?seq=2222"), 2222, "hot"),
        (format!("{base}/#/e/{MAIN}?seq=17"), 17, "c0"),
    ] {
        b.open_afresh(&link).await;
        let r = b.run(reopen, json!({})).await;
        assert_eq!(r["sel"], seq, "{link}: {r}");
        assert_eq!(r["tier"], tier, "{link}");
        assert_eq!(r["inView"], true, "{link}: the line is in view");
        assert_eq!(r["msg"], logs[seq as usize].message);
    }
    // The episode screenshot: around the boundary between the archived chunk 1 and the hot
    // logs (nothing in it changes from run to run).
    b.open_afresh(&format!("{base}/#/e/{MAIN}?seq=1995")).await;
    b.run(reopen, json!({})).await;
    let fits = b
        .run(
            "document.activeElement.blur(); await idle(); return document.scrollingElement.scrollHeight <= innerHeight && $('main').scrollHeight <= $('main').clientHeight;",
            json!({}),
        )
        .await;
    assert_eq!(
        fits, true,
        "the episode page fits the window; only the list scrolls"
    );
    let shot = b.screenshot().await;
    assert!(shot.len() > 10_000, "a screenshot of the episode");
    println!(
        "viewer: screenshot of an episode: {:?}",
        save_png("viewer-episode.png", &shot)
    );

    // --- Messages: unknown, empty, invalid episode; an expired range (410). -----------------
    for (hash, class, text) in [
        (
            "#/e/no-such-episode",
            "note-error",
            "Episode “no-such-episode” was not found.",
        ),
        ("#/e/empty-1", "note-empty", "This episode has no logs yet."),
        ("#/e/-bad", "note-error", "The request was refused"),
    ] {
        b.open_afresh(&format!("{base}/{hash}")).await;
        let note = b
            .run(
                "return (await waitFor(() => $('#logs .' + args.class), 'a message')).textContent;",
                json!({"class": class}),
            )
            .await;
        assert!(note.as_str().unwrap().contains(text), "{hash}: {note}");
    }
    b.open_afresh(&format!("{base}/#/e/{MAIN}")).await;
    let expired = b
        .run(
            r#"
await waitFor(() => $$('#logs .row').length, 'rows');
await idle();
const real = window.fetch;
let calls = 0;
window.fetch = (u, o) => {
  if (!String(u).includes('/logs?')) return real(u, o);
  calls += 1;
  return Promise.resolve(new Response(JSON.stringify({ error: { code: 'expired', message: 'logs before 2026-01-01T00:00:00Z were removed' } }),
    { status: 410, headers: { 'content-type': 'application/json' } }));
};
// Scrolling to the end of the loaded window reads the next page: it fails, and says so there.
const v = $('#logs');
v.scrollTop = v.scrollHeight;
const edge = await waitFor(() => { const e = $('#logs .edge-after'); return e && e.textContent.includes('expired') && e; }, 'the failed read at the edge');
await sleep(1000);
const readsAfterFailure = calls;
// A jump into the range: the list is replaced by the message.
$('#goto').value = '700';
$('.goto button').click();
const note = await waitFor(() => $('#logs .note-error'), 'the expired message');
window.fetch = real;
const api = await import(new URL('assets/api.js', document.baseURI));
return { edge: edge.textContent, reads: readsAfterFailure, note: note.textContent, alert: $('#ep-alert').textContent,
         teapot: api.describeError(418, null).title };
"#,
            json!({}),
        )
        .await;
    assert!(
        expired["edge"]
            .as_str()
            .unwrap()
            .starts_with("Could not read later logs: This range has expired."),
        "{expired}"
    );
    assert_eq!(
        expired["reads"], 1,
        "a failed read is not retried at once: {expired}"
    );
    for part in [
        "This range has expired",
        "logs before 2026-01-01T00:00:00Z were removed",
    ] {
        assert!(
            expired["note"].as_str().unwrap().contains(part),
            "{expired}"
        );
        assert!(
            expired["alert"].as_str().unwrap().contains(part),
            "{expired}"
        );
    }
    assert_eq!(
        expired["teapot"], "HTTP 418",
        "other statuses are shown generically"
    );

    // --- Follow: a new log shows; pause; resume without a gap. ---------------------------------
    b.open_afresh(&format!("{base}/#/e/{MAIN}")).await;
    b.start_following().await;
    let state = b
        .run(
            "return { text: $('#follow-state').textContent, pressed: $('#follow').getAttribute('aria-pressed'), last: rows().at(-1), edge: $('#logs .edge-end').textContent };",
            json!({}),
        )
        .await;
    assert_eq!(state["text"], "Following");
    assert_eq!(state["pressed"], "true");
    assert_eq!(
        state["last"],
        json!([2499, "hot"]),
        "following starts at the end"
    );
    assert!(state["edge"].as_str().unwrap().contains("Following"));
    let probe = |n: i64, msg: &str| SentLog {
        timestamp_ms: BASE_MS + 10_000 + n,
        level: LogLevel::Warn,
        message: msg.to_owned(),
        metadata: Some(json!({"probe": n})),
    };
    let seen_probe = r#"
const row = await waitFor(() => $$('#logs .row').find((r) => r.querySelector('.msg').textContent === args.msg), args.msg, args.ms);
return { seq: Number(row.dataset.seq), tier: row.dataset.tier, rows: rows() };
"#;
    let t0 = Instant::now();
    env.publish(
        MAIN,
        &single_body(MAIN, &probe(1, "follow probe 1")),
        Some("probe-1"),
    )
    .await;
    let got = b
        .run(
            seen_probe,
            json!({"msg": "follow probe 1", "ms": stuck_after().as_millis() as i64}),
        )
        .await;
    let took = t0.elapsed();
    println!(
        "viewer: follow showed a newly published log {} ms after it was published",
        took.as_millis()
    );
    assert_eq!(got["seq"], 2500);
    assert_eq!(got["tier"], "hot");
    check_snapshots(
        &json!({"snaps": [got["rows"]], "seps": []}),
        true,
        "followed",
    );
    // Pause: the stream closes; a log written meanwhile appears only on resume, right after.
    b.run(
        "$('#follow').click(); await waitFor(() => $('#follow-state').dataset.state === 'paused', 'paused');",
        json!({}),
    )
    .await;
    let paused = b
        .run(
            "return { text: $('#follow-state').textContent, pressed: $('#follow').getAttribute('aria-pressed'), button: $('#follow').textContent };",
            json!({}),
        )
        .await;
    assert_eq!(
        paused,
        json!({"text": "Paused", "pressed": "false", "button": "Follow"})
    );
    env.publish(
        MAIN,
        &single_body(MAIN, &probe(2, "follow probe 2")),
        Some("probe-2"),
    )
    .await;
    env.wait_for("probe 2 readable", || async {
        api_seqs(&base, "seq=2501..").await == [2501]
    })
    .await;
    let absent = b
        .run(
            "await sleep(1000); return $$('#logs .msg').some((m) => m.textContent === 'follow probe 2');",
            json!({}),
        )
        .await;
    assert_eq!(absent, false, "a paused list takes no new logs");
    b.run("$('#follow').click();", json!({})).await;
    let got = b
        .run(
            seen_probe,
            json!({"msg": "follow probe 2", "ms": stuck_after().as_millis() as i64}),
        )
        .await;
    assert_eq!(got["seq"], 2501, "resumed from where it paused");
    check_snapshots(
        &json!({"snaps": [got["rows"]], "seps": []}),
        true,
        "resumed",
    );
    b.run(
        "$('#follow').click(); await waitFor(() => $('#follow-state').dataset.state === 'paused', 'paused');",
        json!({}),
    )
    .await;

    // --- Auth on: the token is asked once, kept for the session, sent by every call. --------
    let mut secured = env.settings.clone();
    secured.query.bearer_token = TOKEN.into();
    let api2 = Api::start(&secured).await;
    let base2 = api2.base.clone();
    let http = reqwest::Client::new();
    for path in ["/", "/assets/app.js", "/assets/style.css"] {
        let r = http.get(format!("{base2}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} is served without a token");
    }
    assert_eq!(api_get(&format!("{base2}/v1/episodes"), None).await.0, 401);
    b.open_afresh(&format!("{base2}/")).await;
    b.run(
        "await waitFor(() => $('#auth').open, 'the token dialog');",
        json!({}),
    )
    .await;
    let token_input = b.client.find(Locator::Id("auth-token")).await.unwrap();
    token_input
        .send_keys(&format!("wrong{enter}"))
        .await
        .unwrap();
    let refused = b
        .run(
            "return (await waitFor(() => $('#auth').open && $('#auth-msg').textContent.includes('refused') && $('#auth-msg').textContent, 'refused')) ;",
            json!({}),
        )
        .await;
    assert!(refused.as_str().unwrap().contains("That token was refused"));
    b.type_into("auth-token", &format!("{TOKEN}{enter}")).await;
    let signed = b
        .run(
            r#"
await waitFor(() => $$('#episodes tbody tr').length > 0, 'the list with a token');
await idle();
return { open: $('#auth').open, ids: $$('#episodes tbody tr').map((r) => r.dataset.episode),
         token: sessionStorage.getItem('logfleet.viewer.token'), local: localStorage.length, cookies: document.cookie };
"#,
            json!({}),
        )
        .await;
    assert_eq!(
        signed,
        json!({"open": false, "ids": want_ids, "token": TOKEN, "local": 0, "cookies": ""})
    );
    // Asked once: a reload and another page of the app use the session's token.
    b.client.refresh().await.unwrap();
    b.goto(&format!("{base2}/#/e/{MAIN}?level=error")).await;
    b.run(
        r#"
await waitFor(() => $$('#logs .row').length, 'rows with a token');
await idle();
if ($('#auth').open) throw new Error('asked for the token again');
$('#dl-filtered').click();
await waitFor(() => $('#dl-status') && $('#dl-status').dataset.lines, 'the download');
"#,
        json!({}),
    )
    .await;
    let dl = b
        .run(
            "return { lines: Number($('#dl-status').dataset.lines), text: $('#dl-status').textContent, open: $('#auth').open };",
            json!({}),
        )
        .await;
    let errors = logs.iter().filter(|l| l.level == LogLevel::Error).count();
    assert_eq!(
        dl["lines"], errors,
        "the filtered download holds every error log: {dl}"
    );
    assert!(
        dl["text"].as_str().unwrap().starts_with(&format!(
            "Saved {MAIN}-filtered.ndjson: {} logs",
            thousands(errors as i64)
        )),
        "{dl}"
    );
    assert_eq!(dl["open"], false);
    b.start_following().await;
    let mut p3 = probe(3, "follow probe 3 with a token");
    p3.level = LogLevel::Error;
    env.publish(MAIN, &single_body(MAIN, &p3), Some("probe-3"))
        .await;
    let got = b
        .run(
            seen_probe,
            json!({"msg": "follow probe 3 with a token", "ms": stuck_after().as_millis() as i64}),
        )
        .await;
    assert_eq!(got["seq"], 2502, "followed with the token");

    b.close().await;
    api2.stop().await;
    api.stop().await;
    ingest.stop().await.unwrap();
    env.cleanup().await;
}

/// The episode list API the viewer's list uses: id prefix, latest log first (ties by id,
/// episodes without logs last), cursors over pages of every size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn episode_list_by_prefix_and_latest_log() {
    let env = TestEnv::new("viewer-list", |_| {}).await;
    let ingest = env.spawn_ingest(IngestOptions::default());
    // Last logs: a-1, a-2 and a-3 in one second (a-2 and a-3 at the same millisecond).
    let last = [
        ("a-0", BASE_MS - 10_000),
        ("a-1", BASE_MS + 100),
        ("a-2", BASE_MS + 300),
        ("a-3", BASE_MS + 300),
        ("b-1", BASE_MS + 5_000),
    ];
    for (ep, at) in last {
        let mut logs = make_logs(ep, 3, at - 2);
        logs[2].level = LogLevel::Error;
        env.publish(ep, &batch_body(ep, &logs), Some(&format!("{ep}-last")))
            .await;
    }
    for ep in ["b-empty", "a-empty"] {
        env.store
            .metadata_or_create(&EpisodeId::parse(ep).unwrap(), 1_000, 1_000)
            .await
            .unwrap();
    }
    for (ep, _) in last {
        env.wait_for_episode(ep, 3, 0).await;
    }
    ingest.stop().await.unwrap();
    let api = Api::start(&env.settings).await;
    let base = api.base.clone();
    let walk = |params: &'static str, limit: usize| {
        let base = base.clone();
        async move {
            let mut ids = Vec::new();
            let mut cursor: Option<String> = None;
            for _ in 0..100 {
                let mut url = format!("{base}/v1/episodes?limit={limit}&{params}");
                if let Some(c) = &cursor {
                    url.push_str(&format!("&cursor={c}"));
                }
                let (s, page) = api_get(&url, None).await;
                assert_eq!(s, 200, "{url}: {page}");
                let got = page["episodes"].as_array().unwrap();
                assert!(got.len() <= limit);
                for e in got {
                    ids.push(e["episodeId"].as_str().unwrap().to_owned());
                    if e["totalLogs"] == 3 {
                        assert_eq!(e["levelCounts"]["error"], 1, "{e}");
                        assert_eq!(e["levelCounts"]["debug"], 1, "{e}");
                    } else {
                        assert_eq!(e["levelCounts"], json!({}), "{e}");
                        assert!(e["lastLogAt"].is_null());
                    }
                }
                match page["nextCursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => return ids,
                }
            }
            panic!("{params}: endless cursor");
        }
    };
    let cases: [(&str, &[&str]); 5] = [
        (
            "sort=lastLogAt",
            &["b-1", "a-2", "a-3", "a-1", "a-0", "a-empty", "b-empty"],
        ),
        (
            "sort=lastLogAt&prefix=a-",
            &["a-2", "a-3", "a-1", "a-0", "a-empty"],
        ),
        (
            "sort=id&prefix=a-",
            &["a-0", "a-1", "a-2", "a-3", "a-empty"],
        ),
        ("prefix=b", &["b-1", "b-empty"]),
        ("sort=lastlogat&prefix=zz", &[]),
    ];
    for (params, want) in cases {
        for limit in [1, 2, 3, 100] {
            assert_eq!(
                walk(params, limit).await,
                want,
                "{params}, pages of {limit}"
            );
        }
    }
    let (_, page) = api_get(&format!("{base}/v1/episodes?sort=lastLogAt&limit=1"), None).await;
    assert_eq!(
        page["episodes"][0]["lastLogAt"],
        chrono::DateTime::from_timestamp_millis(BASE_MS + 5_000)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    for (params, needle) in [
        ("prefix=-a", "prefix"),
        ("prefix=a..b", "prefix"),
        ("sort=size", "sort must be id or lastLogAt"),
        (
            "sort=lastLogAt&cursor=t12",
            "is not a cursor of sort=lastLogAt",
        ),
        (
            "sort=lastLogAt&cursor=a-1",
            "is not a cursor of sort=lastLogAt",
        ),
        ("cursor=-x", "cursor"),
        ("prefix=a&prefix=b", "more than once"),
    ] {
        let (s, body) = api_get(&format!("{base}/v1/episodes?{params}"), None).await;
        assert_eq!(s, 400, "{params}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "{params}: {body}"
        );
    }
    let (_, doc) = api_get(&format!("{base}/openapi.json"), None).await;
    let names: Vec<&str> = doc["paths"]["/v1/episodes"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["prefix", "sort", "cursor", "limit"]);
    assert!(
        doc["paths"].get("/").is_some(),
        "the viewer is in the OpenAPI document"
    );
    api.stop().await;
    env.cleanup().await;
}
