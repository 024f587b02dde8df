//! A real headless browser for the viewer tests: Debian's `chromium`, driven over WebDriver
//! (`chromedriver`, through `fantoccini`).
//!
//! The test starts chromium itself (headless, a fresh profile, every network feature that would
//! reach outside turned off: this machine has no internet, and a browser that tries hangs), then
//! a chromedriver that attaches to it (`debuggerAddress`). Both run in process groups of their
//! own, which [`Browser`] ends by their ids when it is closed or dropped (a failing test too).
//!
//! Where they are: `CHROMIUM` and `CHROMEDRIVER`, else `/usr/bin/chromium` and
//! `/usr/bin/chromedriver` (`scripts/services.sh` installs them). When they are missing, a test
//! fails under CI (`CI` set) and otherwise says loudly that it did not run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::wd::TimeoutConfiguration;
use fantoccini::{Client, ClientBuilder};

/// How tests find elements (`Locator::Id`, `Locator::Css`).
pub use fantoccini::Locator;
use serde_json::{Value, json};

/// Flags without which headless chromium tries the network (and hangs on this machine).
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-default-browser-check",
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
    "--hide-scrollbars",
    "--force-color-profile=srgb",
    "--font-render-hinting=none",
];

/// Width and height of the window (and of the screenshots).
pub const WINDOW: (u32, u32) = (1280, 900);

/// A headless chromium under WebDriver. Call [`Browser::close`] at the end of a test; dropping
/// it (a panic) ends the processes too.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    procs: Procs,
}

/// Chromium and chromedriver, each the leader of its own process group, ended on drop.
struct Procs {
    children: Vec<Child>,
    /// The temporary profile and logs.
    profile: PathBuf,
}

fn locate(var: &str, default: &str) -> Option<PathBuf> {
    let p = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    p.is_file().then_some(p)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_group(cmd: &mut Command, log: &Path) -> Child {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log).expect("log file");
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

impl Browser {
    /// Starts chromium and chromedriver. `None` (after saying so on stderr) when they are not
    /// installed and `CI` is unset; under CI a missing browser fails the test.
    pub async fn launch() -> Option<Self> {
        let (Some(chromium), Some(driver)) = (
            locate("CHROMIUM", "/usr/bin/chromium"),
            locate("CHROMEDRIVER", "/usr/bin/chromedriver"),
        ) else {
            let msg = "chromium and chromedriver are needed for the viewer tests: run \
                       scripts/services.sh (apt-get install chromium chromium-driver), or set \
                       CHROMIUM and CHROMEDRIVER";
            if std::env::var_os("CI").is_some() {
                panic!("{msg}");
            }
            eprintln!("\n!!! VIEWER BROWSER TEST DID NOT RUN: {msg} !!!\n");
            return None;
        };
        let profile =
            std::env::temp_dir().join(format!("logfleet-viewer-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&profile).unwrap();
        let mut procs = Procs {
            children: Vec::new(),
            profile: profile.clone(),
        };
        let mut c = Command::new(&chromium);
        c.args(CHROMIUM_FLAGS)
            .arg(format!(
                "--user-data-dir={}",
                profile.join("data").display()
            ))
            .arg("--remote-debugging-address=127.0.0.1")
            .arg("--remote-debugging-port=0")
            .arg(format!("--window-size={},{}", WINDOW.0, WINDOW.1))
            .arg("about:blank");
        procs
            .children
            .push(spawn_group(&mut c, &profile.join("chromium.log")));
        // Chromium writes its DevTools port to the profile once it listens.
        let port_file = profile.join("data").join("DevToolsActivePort");
        let mut devtools = None;
        for _ in 0..600 {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Some(p) = text
                    .lines()
                    .next()
                    .and_then(|l| l.trim().parse::<u16>().ok())
            {
                devtools = Some(p);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let devtools = devtools.unwrap_or_else(|| {
            panic!(
                "chromium did not open its DevTools port in 60 s; its log: {}",
                std::fs::read_to_string(profile.join("chromium.log")).unwrap_or_default()
            )
        });
        let port = free_port();
        procs.children.push(spawn_group(
            Command::new(&driver).arg(format!("--port={port}")),
            &profile.join("chromedriver.log"),
        ));
        let http = reqwest::Client::new();
        let status = format!("http://127.0.0.1:{port}/status");
        let mut ready = false;
        for _ in 0..600 {
            if let Ok(r) = http.get(&status).send().await
                && r.status().is_success()
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "chromedriver did not answer on {status} in 60 s");
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"debuggerAddress": format!("127.0.0.1:{devtools}")}),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("WebDriver session");
        client
            .update_timeouts(TimeoutConfiguration::new(
                Some(stuck_after() + Duration::from_secs(30)),
                Some(Duration::from_secs(120)),
                Some(Duration::ZERO),
            ))
            .await
            .unwrap();
        Some(Self { client, procs })
    }

    /// Navigates to `url`.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// Loads `url` as a new page, by way of `about:blank`: the app starts anew even where `url`
    /// differs from the page open now only in its hash (a hash change alone keeps the page).
    pub async fn open_afresh(&self, url: &str) {
        self.goto("about:blank").await;
        self.goto(url).await;
    }

    /// Runs `body`, the body of an async JavaScript function, in the page; `args` are its
    /// `args`. Helpers in scope: `waitFor(fn, what)` (polls until `fn()` is truthy; fails as
    /// stuck after `STUCK_AFTER`), `idle()` (the log list or episode list has no read in
    /// flight), `frame()` (the next animation frame), `$(css)`, `$$(css)`, `rows()` (the log
    /// rows in the DOM as `[seq, tier]`, top to bottom). Returns what the function returns;
    /// a thrown error fails the test with its message.
    pub async fn run(&self, body: &str, args: Value) -> Value {
        let script = format!(
            r#"
const done = arguments[arguments.length - 1];
const args = arguments[0];
const $ = (s) => document.querySelector(s);
const $$ = (s) => [...document.querySelectorAll(s)];
const frame = () => new Promise((r) => requestAnimationFrame(() => r()));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const waitFor = async (f, what, ms = {stuck}) => {{
  const t0 = performance.now();
  for (;;) {{
    const v = await f();
    if (v) return v;
    if (performance.now() - t0 > ms) throw new Error('stuck waiting for ' + what);
    await sleep(15);
  }}
}};
const idle = async () => {{
  await frame();
  await waitFor(() => {{
    const v = $('#logs') || $('main');
    return v && v.getAttribute('aria-busy') === 'false';
  }}, 'the page to finish loading');
  await frame();
}};
const rows = () => $$('#logs .row').sort((a, b) => a.offsetTop - b.offsetTop)
  .map((r) => [Number(r.dataset.seq), r.dataset.tier]);
(async () => {{ {body} }})().then((v) => done({{ ok: v === undefined ? null : v }}),
  (e) => done({{ err: String((e && e.stack) || e) }}));
"#,
            stuck = stuck_after().as_millis(),
        );
        let out = self
            .client
            .execute_async(&script, vec![args])
            .await
            .unwrap_or_else(|e| panic!("script failed to run: {e}\n{body}"));
        if let Some(err) = out.get("err") {
            panic!(
                "in the page: {}\n--- script:\n{body}",
                err.as_str().unwrap_or_default()
            );
        }
        out["ok"].clone()
    }

    /// Waits for the episode page's rows, clicks Follow and waits until the page follows at
    /// the end of the list.
    pub async fn start_following(&self) {
        self.run(
            r#"
await waitFor(() => $$('#logs .row').length, 'rows');
await idle();
$('#follow').click();
await waitFor(() => $('#follow-state').dataset.state === 'following' && $('#logs .edge-end'), 'following');
await idle();
"#,
            json!({}),
        )
        .await;
    }

    /// Clicks the element with id `id`, as a user would (WebDriver, not a script).
    pub async fn click(&self, id: &str) {
        self.element(id)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click #{id}: {e}"));
    }

    /// Types `keys` into the element with id `id` (WebDriver key events).
    pub async fn type_into(&self, id: &str, keys: &str) {
        self.element(id)
            .await
            .send_keys(keys)
            .await
            .unwrap_or_else(|e| panic!("type into #{id}: {e}"));
    }

    /// Types `keys` into whatever has the focus (WebDriver key events).
    pub async fn type_keys(&self, keys: &str) {
        self.client
            .active_element()
            .await
            .expect("a focused element")
            .send_keys(keys)
            .await
            .unwrap_or_else(|e| panic!("type {keys:?}: {e}"));
    }

    async fn element(&self, id: &str) -> fantoccini::elements::Element {
        self.client
            .find(fantoccini::Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("no #{id}: {e}"))
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        self.client.screenshot().await.expect("screenshot")
    }

    /// Ends the WebDriver session and both processes.
    pub async fn close(self) {
        let Self { client, procs } = self;
        let _ = client.close().await;
        drop(procs);
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        // SIGTERM to each process group (chromium's renderers are in its group), then SIGKILL
        // to whatever has not exited after 5 s.
        for c in &self.children {
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{}", c.id())])
                .stderr(Stdio::null())
                .status();
        }
        for c in &mut self.children {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Ok(None) = c.try_wait() {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", c.id())])
                    .stderr(Stdio::null())
                    .status();
                let _ = c.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// How long an in-page wait may take before it fails as stuck: `STUCK_AFTER`, or
/// `VIEWER_STUCK_SECS` when set (a shorter wait while debugging the tests).
pub fn stuck_after() -> Duration {
    std::env::var("VIEWER_STUCK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(crate::STUCK_AFTER)
}

/// Keeps a screenshot taken by a test: always in `target/viewer-screenshots/NAME`; in
/// `docs/images/NAME` (the README's) when `VIEWER_SCREENSHOTS=update` or when it is missing there.
/// (Chromium's anti-aliasing differs by a few pixels from run to run, so rewriting the committed
/// file at every run would leave every checkout modified.) Returns where it was written.
pub fn save_png(name: &str, png: &[u8]) -> Vec<PathBuf> {
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    // The workspace root: the nearest directory above this crate with the lock file.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .expect("the workspace root")
        .to_path_buf();
    let mut out = vec![root.join("target").join("viewer-screenshots").join(name)];
    let docs = root.join("docs").join("images").join(name);
    if std::env::var("VIEWER_SCREENSHOTS").as_deref() == Ok("update") || !docs.exists() {
        out.push(docs);
    }
    for path in &out {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
    out
}
