//! The machine a run happens on, printed above the figures.

use std::process::Command;

fn first_line_of(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".into())
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The broker's `consumer_timeout` (a batch held longer than this loses its channel), from
/// `rabbitmqctl eval`; "unknown" where rabbitmqctl cannot reach the broker.
pub fn consumer_timeout() -> String {
    let v = first_line_of(
        "rabbitmqctl",
        &[
            "-q",
            "eval",
            "application:get_env(rabbit, consumer_timeout).",
        ],
    );
    match v
        .strip_prefix("{ok,")
        .and_then(|r| r.strip_suffix('}'))
        .and_then(|ms| ms.parse::<u64>().ok())
    {
        Some(ms) => format!("{ms} ms"),
        None if v == "undefined" => "none".into(),
        None => v,
    }
}

/// Header lines: CPU, cores, memory, kernel, rustc, gzip, commit, date, load.
pub fn header() -> Vec<String> {
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|r| r.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let logical = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let usable = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kb: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let commit = first_line_of("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    vec![
        format!("machine  {model}"),
        format!("cores    {logical} logical ({usable} usable by this process)"),
        format!("memory   {:.1} GiB", mem_kb as f64 / (1024.0 * 1024.0)),
        format!("kernel   {}", read("/proc/sys/kernel/osrelease").trim()),
        format!("rustc    {}", first_line_of("rustc", &["--version"])),
        format!("gzip     {}", first_line_of("gzip", &["--version"])),
        format!(
            "commit   {commit}{}",
            if dirty {
                " (with uncommitted changes)"
            } else {
                ""
            }
        ),
        format!(
            "date     {}",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        format!("load     {} (1/5/15 min, at start)", load_average()),
        format!(
            "broker   consumer_timeout {} (at start)",
            consumer_timeout()
        ),
    ]
}
