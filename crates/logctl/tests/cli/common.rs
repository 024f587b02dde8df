//! Running the `logctl` binary against a test's private slice of the services.
#![allow(dead_code)] // each test binary uses part of it

use std::io::Write;
use std::process::{Command, Output, Stdio};

use logfleet_testkit::TestEnv;

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

/// Waits until nothing of `queue` is held unacked and at least `at_least` messages are ready
/// (the broker returns the messages of a closed or killed client asynchronously), then returns
/// its ready count. A count that never gets there fails the test as stuck.
pub async fn settled_depth(env: &TestEnv, queue: &str, at_least: u32) -> u32 {
    let q = queue.to_owned();
    env.wait_for(
        &format!("{queue}: no unacked, at least {at_least} ready"),
        || {
            let q = q.clone();
            async move {
                let q2 = q.clone();
                tokio::task::spawn_blocking(move || unacked(&q2))
                    .await
                    .unwrap()
                    == 0
                    && env.queue_depth(&q).await >= at_least
            }
        },
    )
    .await;
    env.queue_depth(queue).await
}

/// Waits until the broker has no connection named `name` left (a killed client's is gone).
pub async fn connection_gone(env: &TestEnv, name: &str) {
    let needle = format!("{{\"connection_name\",\"{name}\"}}");
    env.wait_for(&format!("connection {name} gone"), || {
        let needle = needle.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let out = Command::new("rabbitmqctl")
                    .args([
                        "list_connections",
                        "-q",
                        "--no-table-headers",
                        "client_properties",
                    ])
                    .output()
                    .expect("rabbitmqctl runs");
                !String::from_utf8_lossy(&out.stdout).contains(&needle)
            })
            .await
            .unwrap()
        }
    })
    .await;
}
