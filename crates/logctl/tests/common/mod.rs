//! Running the `logctl` binary against a test's private slice of the services.
#![allow(dead_code)] // each test binary uses part of it

use std::io::Write;
use std::process::{Command, Output, Stdio};

use logfleet_tests::TestEnv;

/// `logctl ARGS` with the test's settings (`LOGFLEET__*`).
pub fn logctl(env: &TestEnv, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_logctl"));
    c.args(args)
        .envs(env.worker_env())
        .env_remove("LOGFLEET_CONFIG")
        .env("LOGFLEET__TELEMETRY__FORMAT", "human")
        .env("LOGFLEET__TELEMETRY__FILTER", "warn")
        .stdin(Stdio::null());
    c
}

/// Runs `logctl ARGS`, feeding `stdin`; returns its output (stdout and stderr as text).
pub async fn run(env: &TestEnv, args: &[&str], stdin: Option<&str>) -> (Output, String, String) {
    let mut cmd = logctl(env, args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let input = stdin.map(str::to_owned);
    let label = args.join(" ");
    let out = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("logctl starts");
        if let Some(text) = input {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(text.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    eprintln!("$ logctl {label}\n{so}{se}");
    (out, so, se)
}

/// Messages of `queue` delivered and not yet acked or returned (from `rabbitmqctl`).
fn unacked(queue: &str) -> u64 {
    let out = Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages_unacknowledged",
        ])
        .output()
        .expect("rabbitmqctl runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(queue)).then(|| f.next()?.parse().ok())?
        })
        .expect("the queue is listed")
}

/// Waits until nothing of `queue` is held unacked (messages a closed or killed client held are
/// back), then returns its ready count.
pub async fn settled_depth(env: &TestEnv, queue: &str) -> u32 {
    let q = queue.to_owned();
    env.wait_for(&format!("{queue}: no unacked messages"), || {
        let q = q.clone();
        async move {
            tokio::task::spawn_blocking(move || unacked(&q))
                .await
                .unwrap()
                == 0
        }
    })
    .await;
    env.queue_depth(queue).await
}
