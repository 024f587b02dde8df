"""The checks of scripts/validate-deploy.sh: logfleet's deployment files against the schemas and
linters from PyPI, and against what the code and the issue tracker have taught us.

Run through scripts/validate-deploy.sh, which makes the virtualenv with the pinned validators:
    python checks.py --root CHECKOUT --bin VENV/bin
Every check prints `ok` or `FAIL` with the reasons; the exit status is 1 when any failed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

# Images that can no longer be pulled, or whose project is archived: never referenced.
REMOVED_IMAGES = {
    "minio/minio": "removed from Docker Hub (pull access denied) and MinIO's community edition is archived",
    "minio/mc": "removed from Docker Hub (pull access denied) and MinIO's community edition is archived",
    "quay.io/minio/minio": "MinIO's community edition is archived",
    "quay.io/minio/mc": "MinIO's community edition is archived",
    "bitnami/minio": "MinIO's community edition is archived",
}

# Kubernetes versions the rendered manifests must be valid for (kubernetes-validate's bundled
# schemas, --strict): the oldest we support and the newest bundled.
K8S_VERSIONS = ["1.30.0", "1.37.0"]

# hadolint rules left out, and why.
HADOLINT_IGNORE = {
    # Debian's point releases replace package versions, so a pinned version stops installing;
    # the base images are pinned instead.
    "DL3008": "apt package versions are not pinned (the base image tag is)",
}

# Metrics from other exporters that the alerts and the dashboard may use (kube-prometheus-stack:
# Prometheus itself, cAdvisor, kube-state-metrics; RabbitMQ's rabbitmq_prometheus plugin with its
# /metrics/detailed families queue_coarse_metrics and queue_consumer_count).
EXTERNAL_METRICS = {
    "up",
    "container_memory_working_set_bytes",
    "kube_pod_container_resource_limits",
    "rabbitmq_detailed_queue_messages_ready",
    "rabbitmq_detailed_queue_messages_unacked",
    "rabbitmq_detailed_queue_messages",
    "rabbitmq_detailed_queue_consumers",
}

# Ingest-worker memory model (docs/deployment.md#sizing), from the memory bench
# (docs/benchmarks.md, figure 4): an idle worker, plus per owned partition the bodies held
# unacked (prefetch x message size) and the working memory of the batch being written, about
# 20 times its bodies (decoded logs, LogEntry documents, BSON of the slice being inserted).
INGEST_IDLE_MIB = 32
INGEST_BATCH_FACTOR = 20
INGEST_HEADROOM = 1.10

PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "offset", "bool", "inf", "nan", "atan2",
}


class Report:
    def __init__(self) -> None:
        self.results: list[tuple[str, list[str]]] = []

    def add(self, name: str, problems: list[str]) -> None:
        self.results.append((name, problems))
        if problems:
            print(f"FAIL {name}")
            for p in problems:
                for i, line in enumerate(str(p).rstrip().splitlines()):
                    print(("     - " if i == 0 else "       ") + line)
        else:
            print(f"ok   {name}")
        sys.stdout.flush()

    def failed(self) -> int:
        return sum(1 for _, p in self.results if p)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def tool_output(cp: subprocess.CompletedProcess) -> str:
    out = (cp.stdout + cp.stderr).strip()
    return re.sub(r"\x1b\[[0-9;]*m", "", out)


# --- helpers ------------------------------------------------------------------------------


def setting_keys(root: Path) -> set[str]:
    t = tomllib.loads((root / "config/default.toml").read_text())
    return {f"{s}.{k}" for s, v in t.items() if isinstance(v, dict) for k in v}


def default_settings(root: Path) -> dict:
    return tomllib.loads((root / "config/default.toml").read_text())


def env_to_setting(var: str) -> str | None:
    if not var.startswith("LOGFLEET__"):
        return None
    rest = var[len("LOGFLEET__"):]
    if "__" not in rest:
        return f"?{var}"
    s, k = rest.split("__", 1)
    return f"{s.lower()}.{k.lower()}"


def image_name(ref: str) -> tuple[str, str | None]:
    """(repository without docker.io/library, tag or digest or None)."""
    ref = ref.strip()
    digest = None
    if "@" in ref:
        ref, digest = ref.split("@", 1)
    tag = None
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        ref, tag = ref.rsplit(":", 1)
    for p in ("docker.io/library/", "docker.io/", "index.docker.io/"):
        if ref.startswith(p):
            ref = ref[len(p):]
    return ref, digest or tag


def check_image(ref: str, where: str, need_pin: bool = True) -> list[str]:
    problems = []
    repo, pin = image_name(ref)
    if repo in REMOVED_IMAGES:
        problems.append(f"{where}: image {ref}: {REMOVED_IMAGES[repo]}")
    if need_pin and (pin is None or pin == "latest"):
        problems.append(f"{where}: image {ref} is not pinned to a tag or digest")
    return problems


def mib(q: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(q))
    if not m:
        raise ValueError(f"bad quantity {q}")
    n = float(m.group(1))
    unit = m.group(2) or ""
    factor = {"": 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4,
              "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[unit]
    return n * factor / 1024**2


def code_metrics(root: Path) -> set[str]:
    """Every metric name the binaries export, from crates/logfleet/src/metrics.rs."""
    src = (root / "crates/logfleet/src/metrics.rs").read_text()
    names: set[str] = set()
    parts = re.split(r'Registry::new_custom\(Some\("([a-z_]+)"', src)
    # parts: [before, prefix1, segment1, prefix2, segment2, ...]
    for prefix, seg in zip(parts[1::2], parts[2::2]):
        found = set()
        found |= set(re.findall(r'\(\s*&?r,\s*"([a-z_]+)"', seg))
        found |= set(re.findall(r'Opts::new\(\s*"([a-z_]+)"', seg))
        found |= set(re.findall(r'HistogramOpts::new\(\s*"([a-z_]+)"', seg))
        found |= set(re.findall(r'gauge_f\(\s*"([a-z_]+)"', seg))
        hist = set(re.findall(r'histogram\(\s*&?r,\s*"([a-z_]+)"', seg))
        hist |= set(re.findall(r'HistogramOpts::new\(\s*"([a-z_]+)"', seg))
        for n in found:
            names.add(f"{prefix}_{n}")
        for n in hist:
            for suffix in ("_bucket", "_sum", "_count"):
                names.add(f"{prefix}_{n}{suffix}")
    return names


def promql_metrics(expr: str) -> set[str]:
    """Metric names an expression selects (a small tokenizer, enough for our rules)."""
    e = re.sub(r"\$\{?[A-Za-z_]+\}?", "1m", expr)  # Grafana variables
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', e)
    e = re.sub(r"'(?:[^'\\]|\\.)*'", "''", e)
    e = re.sub(r"`[^`]*`", "``", e)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)\b(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in PROMQL_KEYWORDS:
            continue
        if re.fullmatch(r"\d.*", word):
            continue
        names.add(word)
    return names


def closed_schema(s):
    """additionalProperties: false on every object schema that lists its properties (strict)."""
    if isinstance(s, dict):
        if s.get("type") == "object" and "properties" in s and "additionalProperties" not in s:
            s["additionalProperties"] = False
        for v in s.values():
            closed_schema(v)
    elif isinstance(s, list):
        for v in s:
            closed_schema(v)
    return s


_CRD_SCHEMAS: dict = {}


def crd_validate(doc: dict) -> list[str] | None:
    """Errors of a KEDA / Prometheus Operator object against its CRD's schema (strict); None for
    other kinds."""
    import jsonschema

    api, kind = doc.get("apiVersion"), doc.get("kind")
    key = (api, kind)
    if key not in _CRD_SCHEMAS:
        module = None
        if api == "keda.sh/v1alpha1":
            from cloudcoil.models.keda import v1alpha1 as module
        elif api == "monitoring.coreos.com/v1":
            from cloudcoil.models.prometheus_operator import v1 as module
        if module is None or not hasattr(module, kind):
            _CRD_SCHEMAS[key] = None
        else:
            model = getattr(module, kind)
            _CRD_SCHEMAS[key] = jsonschema.Draft202012Validator(
                closed_schema(model.model_json_schema(by_alias=True))
            )
    v = _CRD_SCHEMAS[key]
    if v is None:
        return None
    errors = []
    for err in v.iter_errors(doc):
        path = "/".join(str(p) for p in err.absolute_path)
        detail = err.message
        if err.context:
            best = min(err.context, key=lambda c: len(c.message))
            detail = f"{best.message} (at {'/'.join(str(p) for p in best.absolute_path)})"
        errors.append(f"{path}: {detail[:300]}")
    return errors


# --- compose ------------------------------------------------------------------------------


def compose_checks(root: Path, bindir: Path, rep: Report, tmp: Path) -> None:
    path = root / "docker-compose.yml"
    if not path.exists():
        rep.add("compose: docker-compose.yml exists", ["missing"])
        return
    # PyYAML applies the `<<` merge keys, so the services built from the shared x-worker block
    # are checked with everything they inherit.
    doc = yaml.safe_load(path.read_text())

    def leftover_merge(v, where):
        if isinstance(v, dict):
            for k, x in v.items():
                if k == "<<":
                    yield where
                yield from leftover_merge(x, f"{where}.{k}")
        elif isinstance(v, list):
            for i, x in enumerate(v):
                yield from leftover_merge(x, f"{where}[{i}]")

    expanded = tmp / "docker-compose.expanded.json"
    expanded.write_text(json.dumps(doc, indent=1))
    cp = run([str(bindir / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(expanded)])
    problems = [] if cp.returncode == 0 else [tool_output(cp)]
    problems += [f"merge key left at {w}" for w in leftover_merge(doc, "$")]
    rep.add("compose: compose-spec schema (check-jsonschema), `<<` merge keys expanded", problems)

    services = doc.get("services") or {}
    keys = setting_keys(root)

    def env_of(svc):
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
        return env

    problems = []
    for name, svc in services.items():
        for var in env_of(svc):
            s = env_to_setting(str(var))
            if s and s not in keys:
                problems.append(f"{name}: {var} is not a setting of config/default.toml")
    rep.add("compose: every LOGFLEET__* variable (merged worker environment included) is a setting", problems)

    problems = []
    for name, svc in services.items():
        if "image" in svc and "build" not in svc:
            problems += check_image(svc["image"], f"service {name}")
        elif "image" in svc:
            problems += check_image(svc["image"], f"service {name}", need_pin=False)
    rep.add("compose: images pinned, none removed or archived", problems)

    # What the root image has, for the health checks of the services built from it.
    root_tools = image_tools(root / "Dockerfile")
    problems = []
    for name, svc in services.items():
        one_shot = str(svc.get("restart", "")) == "no"
        hc = svc.get("healthcheck") or {}
        test = hc.get("test")
        if not one_shot and not test and not hc.get("disable"):
            problems.append(f"{name}: no health check")
        build = svc.get("build")
        ctx = build if isinstance(build, str) else (build or {}).get("context")
        if ctx and (root / ctx).resolve() == root.resolve() and isinstance(test, list) and len(test) > 1:
            exe = test[1] if test[0] in ("CMD",) else None
            if test[0] == "CMD-SHELL":
                exe = str(test[1]).split()[0]
            if exe and os.path.basename(exe) not in root_tools:
                problems.append(
                    f"{name}: health check runs {exe!r}, which the image built from Dockerfile does not have "
                    f"(it has: {', '.join(sorted(root_tools))})"
                )
    rep.add("compose: health checks on every service, runnable in their images", problems)

    problems = []
    for name, svc in services.items():
        build = svc.get("build")
        if build is not None:
            ctx = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            if not (root / ctx / dockerfile).is_file():
                problems.append(f"{name}: build context {ctx} has no {dockerfile}")
        for vol in svc.get("volumes") or []:
            src = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source", "")
            if src.startswith((".", "/")) and not (root / src).exists():
                problems.append(f"{name}: bind mount {src} does not exist")
        for port in svc.get("ports") or []:
            p = port if isinstance(port, str) else str(port.get("host_ip", "")) + ":" + str(port.get("published"))
            if not str(p).startswith("127.0.0.1:"):
                problems.append(f"{name}: port {p} is not bound to 127.0.0.1")
        for dep, cond in (svc.get("depends_on") or {}).items() if isinstance(svc.get("depends_on"), dict) else []:
            if dep not in services:
                problems.append(f"{name}: depends on unknown service {dep}")
    rep.add("compose: build contexts, bind mounts, loopback ports, dependencies", problems)

    problems = []
    rabbit = services.get("rabbitmq") or {}
    for vol in rabbit.get("volumes") or []:
        src = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source", "")
        if src.endswith("enabled_plugins"):
            text = (root / src).read_text()
            plugins = set(re.findall(r"[a-z_]+", text))
            want = {exchange_plugin(root), "rabbitmq_prometheus"}
            if "management" in str(rabbit.get("image", "")):
                want.add("rabbitmq_management")
            for w in sorted(want - plugins):
                problems.append(
                    f"{src} replaces the image's plugin list and lacks {w}"
                    + (" (the broker would have no metrics)" if w == "rabbitmq_prometheus" else "")
                )
    rep.add(f"compose: RabbitMQ's enabled_plugins keeps prometheus (and management) beside {exchange_plugin(root)} (the logs exchange's type)", problems)


EXCHANGE_PLUGINS = {
    "x-modulus-hash": "rabbitmq_sharding",
    "x-consistent-hash": "rabbitmq_consistent_hash_exchange",
}


def exchange_plugin(root: Path) -> str:
    """The RabbitMQ plugin that provides the logs exchange's type, as the code declares it."""
    text = "\n".join(p.read_text() for p in sorted((root / "crates/logfleet/src/amqp").glob("*.rs")))
    m = re.search(r'LOGS_EXCHANGE_TYPE:\s*&str\s*=\s*"([^"]+)"', text)
    if m and m.group(1) in EXCHANGE_PLUGINS:
        return EXCHANGE_PLUGINS[m.group(1)]
    for kind, plugin in EXCHANGE_PLUGINS.items():
        if f'"{kind}' in text:
            return plugin
    return "rabbitmq_sharding"


def image_tools(dockerfile: Path) -> set[str]:
    """Executables the final stage of a Dockerfile provides for health checks."""
    tools = {"bash", "sh"}
    if not dockerfile.exists():
        return tools
    text = dockerfile.read_text()
    stages = re.split(r"(?im)^FROM\s", text)
    last = stages[-1]
    tools |= set(re.findall(r"target/release/([A-Za-z0-9_-]+)", text))
    for m in re.finditer(r"(?im)^COPY\s+(?:--\S+\s+)*(.+)$", last):
        parts = m.group(1).split()
        dest = parts[-1]
        if not dest.endswith("/"):
            tools.add(os.path.basename(dest))
    for m in re.finditer(r"apt-get install(?:[^\n&;|]*\\\n)*[^\n&;|]*", last):
        for pkg in ("curl", "wget"):
            if re.search(rf"\b{pkg}\b", m.group(0)):
                tools.add(pkg)
    return tools


# --- Dockerfiles --------------------------------------------------------------------------


def dockerfile_checks(root: Path, bindir: Path, rep: Report) -> None:
    files = [root / "Dockerfile"] + sorted(Path(p) for p in glob.glob(str(root / "tools/*/Dockerfile")))
    files = [f for f in files if f.exists()]
    args = [str(bindir / "hadolint")]
    for rule in HADOLINT_IGNORE:
        args += ["--ignore", rule]
    cp = run(args + ["--no-color"] + [str(f) for f in files])
    rep.add(
        f"Dockerfiles: hadolint ({', '.join(str(f.relative_to(root)) for f in files)}; ignored: "
        + "; ".join(f"{k} {v}" for k, v in HADOLINT_IGNORE.items()) + ")",
        [] if cp.returncode == 0 else [tool_output(cp)],
    )

    problems = []
    for f in files:
        stages = set()
        for m in re.finditer(r"(?im)^FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", f.read_text()):
            ref, alias = m.group(1), m.group(2)
            if ref not in stages:
                problems += check_image(ref, str(f.relative_to(root)))
            if alias:
                stages.add(alias)
    rep.add("Dockerfiles: base images pinned, none removed or archived", problems)

    df = root / "Dockerfile"
    problems = []
    if df.exists():
        text = df.read_text()
        final = re.split(r"(?im)^FROM\s", text)[-1]
        for m in re.finditer(r"apt-get install(?:[^\n]*\\\n)*[^\n]*", final):
            for pkg in ("curl", "wget"):
                if re.search(rf"\b{pkg}\b", m.group(0)):
                    problems.append(f"Dockerfile: the runtime image installs {pkg} (health checks need no HTTP client)")
        for m in re.finditer(r"cargo build(?:[^\n]*\\\n)*[^\n]*", text):
            if "--bin " not in m.group(0):
                problems.append("Dockerfile: `cargo build` without --bin also builds every other bin and bench target of the packages")
        cargo = (root / "Cargo.toml").read_text()
        release = re.search(r"(?ms)^\[profile\.release\](.*?)(^\[|\Z)", cargo)
        rel = release.group(1) if release else ""
        if "strip" not in rel and "CARGO_PROFILE_RELEASE_STRIP" not in text:
            problems.append("release profile: no strip (Cargo.toml [profile.release] or CARGO_PROFILE_RELEASE_STRIP in the Dockerfile)")
        if "lto" not in rel and "CARGO_PROFILE_RELEASE_LTO" not in text:
            problems.append("release profile: no lto (Cargo.toml [profile.release] or CARGO_PROFILE_RELEASE_LTO in the Dockerfile)")
    ignore = root / ".dockerignore"
    lines = {l.strip() for l in ignore.read_text().splitlines()} if ignore.exists() else set()
    for want in ("**/target", ".env"):
        if want not in lines:
            problems.append(f".dockerignore lacks {want}")
    rep.add("Dockerfile: only the four binaries, stripped with LTO, no curl at run time; .dockerignore", problems)


# --- GitHub workflows -----------------------------------------------------------------------

JOB_ENV_CONTEXTS = {"github", "needs", "strategy", "matrix", "vars", "secrets", "inputs"}


def workflow_checks(root: Path, bindir: Path, rep: Report, tmp: Path) -> None:
    files = sorted(glob.glob(str(root / ".github/workflows/*.y*ml")))
    if not files:
        return
    cp = run([str(bindir / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *files])
    rep.add("workflows: github-workflows schema (check-jsonschema)", [] if cp.returncode == 0 else [tool_output(cp)])

    shell_problems, image_problems, ctx_problems, ci_problems = [], [], [], []
    for f in files:
        rel = str(Path(f).relative_to(root))
        wf = yaml.safe_load(Path(f).read_text())
        for job_id, job in (wf.get("jobs") or {}).items():
            for k, v in (job.get("env") or {}).items():
                for ctx in re.findall(r"\$\{\{\s*([a-z_]+)\.", str(v)):
                    if ctx not in JOB_ENV_CONTEXTS:
                        ctx_problems.append(f"{rel} job {job_id}: env {k} uses the `{ctx}` context, not available in a job's env")
            for name, svc in (job.get("services") or {}).items():
                image_problems += check_image(svc.get("image", ""), f"{rel} job {job_id} service {name}")
            if isinstance(job.get("container"), dict):
                image_problems += check_image(job["container"].get("image", ""), f"{rel} job {job_id} container")
            runs = []
            for i, step in enumerate(job.get("steps") or []):
                if "run" not in step:
                    continue
                script = step["run"]
                runs.append(script)
                label = f"{rel} job {job_id} step {step.get('name') or i + 1}"
                code = "\n".join(l for l in script.splitlines() if not l.lstrip().startswith("#"))
                for m in re.finditer(r"docker\s+(?:run|pull|create)\b(?:[^\n]*\\\n)*[^\n]*", code):
                    for tok in m.group(0).replace("\\\n", " ").split():
                        if "/" in tok or ":" in tok:
                            repo, _ = image_name(tok)
                            if repo in REMOVED_IMAGES:
                                image_problems.append(f"{label}: image {tok}: {REMOVED_IMAGES[repo]}")
                shell = step.get("shell") or (job.get("defaults") or {}).get("run", {}).get("shell") or "bash"
                if shell.split()[0] in ("bash", "sh"):
                    body = re.sub(r"\$\{\{.*?\}\}", "GITHUB_EXPRESSION", script, flags=re.S)
                    sf = tmp / f"wf-{job_id}-{i}.sh"
                    sf.write_text(f"#!/usr/bin/env bash\nset -e\n{body}\n")
                    cp = run([str(bindir / "shellcheck"), "-s", "bash", "-S", "warning", str(sf)])
                    if cp.returncode != 0:
                        shell_problems.append(f"{label}:\n{tool_output(cp).replace(str(sf), 'run')}")
            text = "\n".join(runs)
            has_tests = "cargo test" in text
            services = job.get("services") or {}
            plugin = exchange_plugin(root)
            if has_tests and any("rabbitmq" in str(s.get("image", "")) for s in services.values()):
                if not re.search(rf"rabbitmq-plugins\s+enable\b[^\n]*\b{plugin}\b", text):
                    ci_problems.append(f"{rel} job {job_id}: the broker service does not get {plugin}, which the logs exchange's type needs")
            if has_tests and any("rabbitmq" in str(s.get("image", "")) for s in services.values()):
                if not re.search(r"rabbitmqctl", text) or "GITHUB_PATH" not in text:
                    ci_problems.append(f"{rel} job {job_id}: the tests call rabbitmqctl on the host, and the broker is a service container: put a rabbitmqctl shim (docker exec) on PATH")
            if has_tests and any("mongo" in str(s.get("image", "")) for s in services.values()):
                env_text = json.dumps(job.get("env") or {}) + json.dumps(wf.get("env") or {}) + text
                for var in ("MONGO_STOP_CMD", "MONGO_START_CMD"):
                    if var not in env_text:
                        ci_problems.append(f"{rel} job {job_id}: {var} is not set, so the tests skip their MongoDB outage halves")
    rep.add("workflows: contexts in job-level env", ctx_problems)
    rep.add("workflows: shellcheck of every run step", shell_problems)
    rep.add("workflows: images pinned, none removed or archived (services, containers, docker run)", image_problems)
    rep.add("workflows: the test job enables the exchange plugin and gives the tests rabbitmqctl and MONGO_STOP_CMD / MONGO_START_CMD", ci_problems)


# --- shell scripts --------------------------------------------------------------------------


def shell_checks(root: Path, bindir: Path, rep: Report) -> None:
    files = []
    for pattern in ("scripts/*.sh", ".ci/run", "deploy/**/*", "tools/**/*.sh"):
        for p in glob.glob(str(root / pattern), recursive=True):
            path = Path(p)
            if path.is_file():
                head = path.read_bytes()[:64]
                if path.suffix == ".sh" or head.startswith(b"#!/bin/sh") or head.startswith(b"#!/bin/bash") or head.startswith(b"#!/usr/bin/env bash"):
                    files.append(path)
    files = sorted(set(files))
    cp = run([str(bindir / "shellcheck"), *map(str, files)])
    rep.add(
        f"shell scripts: shellcheck ({len(files)} files)",
        [] if cp.returncode == 0 else [tool_output(cp)],
    )


# --- Kubernetes ---------------------------------------------------------------------------


def kustomize_cmd() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        cp = run(["kubectl", "kustomize", "--help"])
        if cp.returncode == 0:
            return ["kubectl", "kustomize"]
    return None


def k8s_checks(root: Path, bindir: Path, rep: Report, tmp: Path) -> None:
    k8s = root / "k8s"
    if not k8s.is_dir():
        return
    kustomizations = sorted(Path(p).parent for p in glob.glob(str(k8s / "**/kustomization.yaml"), recursive=True))
    if not kustomizations:
        rep.add("k8s: a kustomization to apply", [
            "k8s/ has no kustomization.yaml: `kubectl apply -f k8s/` applies every file in name order, "
            "so the namespace comes after the workloads, and every autoscaler is applied at once"
        ])
        renders = {f"k8s/{p.name}": [d for d in yaml.safe_load_all(p.read_text()) if d]
                   for p in sorted(k8s.glob("*.yaml"))}
        # What `kubectl apply -f k8s/` would apply, in its order.
        everything = [d for docs in renders.values() for d in docs]
        k8s_render_checks(root, bindir, rep, tmp, {"kubectl apply -f k8s/": everything}, per_file=True)
        return
    kz = kustomize_cmd()
    if kz is None:
        # Without kustomize: every manifest file alone.
        print("note: no kustomize or kubectl on PATH: the k8s files are validated one by one, not rendered")
        docs = []
        for p in sorted(k8s.rglob("*.yaml")):
            if p.name != "kustomization.yaml":
                docs += [d for d in yaml.safe_load_all(p.read_text()) if d]
        k8s_schema_checks(bindir, rep, tmp, {"k8s/**/*.yaml (each file)": docs})
        return
    overlays = sorted(p for p in kustomizations if p.parent.name == "overlays")
    if not overlays:
        rep.add("k8s: overlays", ["k8s/overlays/ has no overlay to apply"])
        return
    # Each overlay as it is, and each with the monitoring component (rendered from a copy, as
    # kustomize refuses absolute paths).
    copy = tmp / "k8s-copy"
    shutil.copytree(k8s, copy / "k8s")
    renders: dict[str, list[dict]] = {}
    problems = []
    monitoring = k8s / "components/monitoring"
    for o in overlays:
        targets = [(f"k8s/overlays/{o.name}", o)]
        if monitoring.is_dir():
            extra = copy / "k8s/overlays" / f"{o.name}+monitoring"
            extra.mkdir()
            (extra / "kustomization.yaml").write_text(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                f"resources: [../{o.name}]\ncomponents: [../../components/monitoring]\n"
            )
            targets.append((f"k8s/overlays/{o.name} + components/monitoring", extra))
        for label, d in targets:
            cp = run(kz + [str(d)])
            if cp.returncode != 0:
                problems.append(f"{label}: {tool_output(cp)}")
                continue
            renders[label] = [x for x in yaml.safe_load_all(cp.stdout) if x]
    rep.add(f"k8s: every overlay renders ({' '.join(kz)})", problems)
    k8s_render_checks(root, bindir, rep, tmp, renders, per_file=False)


def k8s_schema_checks(bindir: Path, rep: Report, tmp: Path, renders: dict[str, list[dict]]) -> None:
    for version in K8S_VERSIONS:
        problems = []
        for label, docs in renders.items():
            f = tmp / ("render-" + re.sub(r"[^A-Za-z0-9]+", "-", label) + ".yaml")
            f.write_text(yaml.safe_dump_all(docs, sort_keys=False))
            cp = run([str(bindir / "kubernetes-validate"), "--strict", "--quiet", "--no-warn", "-k", version, str(f)])
            if cp.returncode != 0:
                problems.append(f"{label}:\n{tool_output(cp)}")
        rep.add(f"k8s: Kubernetes {version} schemas, strict (kubernetes-validate)", problems)
    problems = []
    checked = set()
    for label, docs in renders.items():
        for d in docs:
            errs = crd_validate(d)
            if errs is None:
                continue
            checked.add(d["kind"])
            problems += [f"{label}: {d['kind']} {d['metadata'].get('name')}: {e}" for e in errs]
    rep.add(f"k8s: KEDA and Prometheus Operator CRD schemas, strict ({', '.join(sorted(checked)) or 'none present'})", problems)


def k8s_render_checks(root: Path, bindir: Path, rep: Report, tmp: Path, renders: dict[str, list[dict]], per_file: bool) -> None:
    k8s_schema_checks(bindir, rep, tmp, renders)
    keys = setting_keys(root)
    defaults = default_settings(root)

    # Order, namespace, and one autoscaler per workload.
    problems = []
    for label, docs in renders.items():
        ns_docs = [i for i, d in enumerate(docs) if d.get("kind") == "Namespace"]
        if not ns_docs:
            problems.append(f"{label}: no Namespace")
        elif ns_docs[0] != 0:
            first = docs[0]
            problems.append(f"{label}: the Namespace comes after {first.get('kind')} {first['metadata'].get('name')}")
        scalers: dict[str, list[str]] = {}
        for d in docs:
            if d.get("kind") in ("HorizontalPodAutoscaler", "ScaledObject"):
                target = d["spec"]["scaleTargetRef"]["name"]
                scalers.setdefault(target, []).append(d["kind"])
        for target, kinds in scalers.items():
            if len(kinds) > 1:
                problems.append(f"{label}: {' and '.join(kinds)} both scale {target}: two autoscalers fight over its replicas")
            for d in docs:
                if d.get("kind") == "Deployment" and d["metadata"]["name"] == target and "replicas" in d["spec"]:
                    problems.append(f"{label}: {target} sets replicas although an autoscaler owns it (every apply resets it)")
    rep.add("k8s: Namespace first, at most one autoscaler per Deployment, no replicas under an autoscaler", problems)

    problems = []
    sizing = []
    for label, docs in renders.items():
        configmaps = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ConfigMap"}
        deployments = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Deployment"}
        if any(d.get("kind") == "Secret" and (d.get("data") or d.get("stringData")) for d in docs):
            problems.append(f"{label}: a Secret with values is kept in the repository")
        for d in docs:
            c = d["metadata"].get("namespace")
            if d.get("kind") not in ("Namespace",) and c not in (None, "logfleet"):
                problems.append(f"{label}: {d['kind']} {d['metadata']['name']} in namespace {c}")
        for name, cm in configmaps.items():
            if "grafana_dashboard" in (cm["metadata"].get("labels") or {}):
                continue
            for k in (cm.get("data") or {}):
                s = env_to_setting(k)
                if s is None or s not in keys:
                    problems.append(f"{label}: ConfigMap {name}: {k} is not a setting of config/default.toml")
        for name, d in deployments.items():
            spec = d["spec"]["template"]["spec"]
            c = spec["containers"][0]
            config = {}
            for ef in c.get("envFrom") or []:
                ref = (ef.get("configMapRef") or {}).get("name")
                if ref:
                    if ref not in configmaps:
                        problems.append(f"{label}: {name} reads ConfigMap {ref}, which is not in the output")
                    elif not per_file and not re.search(r"-[a-z0-9]{10}$", ref):
                        problems.append(f"{label}: {name} reads ConfigMap {ref} by a fixed name: a change of the settings would not roll the pods out (use configMapGenerator)")
                    for k, v in ((configmaps.get(ref) or {}).get("data") or {}).items():
                        s = env_to_setting(k)
                        if s:
                            config[s] = v
            for e in c.get("env") or []:
                s = env_to_setting(e["name"])
                if s and s not in keys:
                    problems.append(f"{label}: {name}: {e['name']} is not a setting")
                if any(w in e["name"] for w in ("URL", "URI", "KEY", "TOKEN", "PASSWORD")) and "value" in e:
                    problems.append(f"{label}: {name}: {e['name']} is a value, not a secretKeyRef")
            for img in [x.get("image", "") for x in spec["containers"]]:
                problems += check_image(img, f"{label}: {name}")

            def setting(key: str):
                sec, k = key.split(".")
                return config.get(key, defaults[sec][k])

            port = c["ports"][0]["containerPort"]
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                got = (c.get(probe) or {}).get("httpGet", {}).get("path")
                if got != path:
                    problems.append(f"{label}: {name}: {probe} is {got}, not {path}")
            grace = spec.get("terminationGracePeriodSeconds", 30)
            drain = int(setting("ingest.drain_deadline_secs"))
            lease = int(setting("archive.lease_secs"))
            floor = {"ingest-worker": drain, "archive-worker": max(drain, lease)}.get(name, 0)
            if name == "query-api":
                pre = ((c.get("lifecycle") or {}).get("preStop") or {})
                sleep = 0
                if "sleep" in pre:
                    sleep = int(pre["sleep"].get("seconds", 0))
                elif "exec" in pre:
                    cmd = pre["exec"].get("command") or []
                    if cmd and os.path.basename(cmd[0]) == "sleep" and len(cmd) > 1:
                        sleep = int(float(cmd[1]))
                if sleep <= 0:
                    problems.append(f"{label}: query-api has no preStop sleep: it stops accepting before the Service's endpoints drop it")
                floor = sleep + 10
            if grace <= floor:
                problems.append(f"{label}: {name}: terminationGracePeriodSeconds {grace} must exceed {floor}")
            if name == "ingest-worker":
                limit = ((c.get("resources") or {}).get("limits") or {}).get("memory")
                partitions = int(setting("amqp.partitions"))
                prefetch = int(setting("ingest.prefetch"))
                msg = int(setting("limits.max_message_bytes")) / 2**20
                batch = int(setting("ingest.max_batch_bytes")) / 2**20
                need = INGEST_IDLE_MIB + partitions * (
                    prefetch * msg + INGEST_BATCH_FACTOR * min(prefetch * msg, batch + msg)
                )
                line = (f"{label}: ingest-worker: {partitions} partitions x (prefetch {prefetch} x {msg:g} MiB"
                        f" + {INGEST_BATCH_FACTOR} x min({prefetch} x {msg:g}, {batch:g} + {msg:g}) MiB) + {INGEST_IDLE_MIB} MiB"
                        f" = {need:,.0f} MiB, x {INGEST_HEADROOM} = {need * INGEST_HEADROOM:,.0f} MiB; limit {limit}")
                if limit is None or mib(limit) < need * INGEST_HEADROOM:
                    sizing.append(line + ": too small, one replica owning every partition is OOM-killed")
        for pdb in (d for d in docs if d.get("kind") == "PodDisruptionBudget"):
            sel = pdb["spec"]["selector"]["matchLabels"]
            if not any(all(dd["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())
                       for dd in deployments.values()):
                problems.append(f"{label}: PodDisruptionBudget {pdb['metadata']['name']} selects no Deployment")
    rep.add("k8s: settings exist, configs roll out, secrets by reference, probes, grace periods, preStop, PDBs", problems)
    rep.add("k8s: ingest-worker memory limit covers one replica owning every partition (docs/deployment.md#sizing)", sizing)
    monitoring_checks(root, rep, renders)


def monitoring_checks(root: Path, rep: Report, renders: dict[str, list[dict]]) -> None:
    known = code_metrics(root) | EXTERNAL_METRICS
    rules, monitors, dashboards = {}, [], {}
    for docs in renders.values():
        for d in docs:
            if d.get("kind") == "PrometheusRule":
                rules[d["metadata"]["name"]] = d
            elif d.get("kind") in ("PodMonitor", "ServiceMonitor"):
                monitors.append(d)
            elif d.get("kind") == "ConfigMap" and "grafana_dashboard" in (d["metadata"].get("labels") or {}):
                for k, v in (d.get("data") or {}).items():
                    dashboards[k] = v
    missing = []
    if not monitors:
        missing.append("no PodMonitor or ServiceMonitor for the logfleet pods")
    if not rules:
        missing.append("no PrometheusRule with alerts")
    if not dashboards:
        missing.append("no Grafana dashboard ConfigMap (label grafana_dashboard)")
    rep.add("monitoring: a PodMonitor, a PrometheusRule and a Grafana dashboard", missing)
    if not (rules or dashboards):
        return

    problems = []
    alerts = []
    for rule in rules.values():
        for group in rule["spec"]["groups"]:
            for r in group["rules"]:
                name = r.get("alert") or r.get("record")
                alerts.append(r.get("alert"))
                unknown = promql_metrics(r["expr"]) - known
                if unknown:
                    problems.append(f"rule {name}: unknown metrics {sorted(unknown)}")
                if r.get("alert") and not (r.get("labels") or {}).get("severity"):
                    problems.append(f"rule {name}: no severity label")
                if r["expr"].count("(") != r["expr"].count(")"):
                    problems.append(f"rule {name}: unbalanced parentheses")
    for key, text in dashboards.items():
        try:
            dash = json.loads(text)
        except json.JSONDecodeError as e:
            problems.append(f"dashboard {key}: not JSON: {e}")
            continue
        ids = []
        for p in dash.get("panels", []):
            ids.append(p.get("id"))
            for t in p.get("targets", []):
                unknown = promql_metrics(t.get("expr", "")) - known
                if unknown:
                    problems.append(f"dashboard {key} panel {p.get('title')!r}: unknown metrics {sorted(unknown)}")
        if len(ids) != len(set(ids)):
            problems.append(f"dashboard {key}: panel ids repeat")
        if not dash.get("uid"):
            problems.append(f"dashboard {key}: no uid")
    rep.add(f"monitoring: alerts and dashboard use only metrics the code exports ({len(code_metrics(root))} from crates/logfleet/src/metrics.rs) or RabbitMQ / Kubernetes ones", problems)

    docs_text = ""
    for p in ("docs/operations.md", "docs/deployment.md"):
        if (root / p).exists():
            docs_text += (root / p).read_text()
    undocumented = [a for a in alerts if a and a not in docs_text]
    rep.add("monitoring: every alert is explained in docs/operations.md (what it means, what to do)",
            [f"{a} is not in docs/operations.md" for a in undocumented])

    problems = []
    pods = [d for docs in renders.values() for d in docs if d.get("kind") == "Deployment"]
    for m in monitors:
        if m["metadata"]["name"] != "logfleet":
            continue
        sel = m["spec"]["selector"].get("matchLabels") or {}
        for ep in m["spec"].get("podMetricsEndpoints") or []:
            for d in pods:
                labels = d["spec"]["template"]["metadata"]["labels"]
                if all(labels.get(k) == v for k, v in sel.items()):
                    names = [p.get("name") for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])]
                    if ep.get("port") not in names:
                        problems.append(f"PodMonitor {m['metadata']['name']}: {d['metadata']['name']} has no port named {ep.get('port')}")
    rep.add("monitoring: the PodMonitor scrapes a named port of every logfleet pod", problems)


# --- main ---------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True, type=Path)
    ap.add_argument("--bin", required=True, type=Path)
    a = ap.parse_args()
    root = a.root.resolve()
    rep = Report()
    with tempfile.TemporaryDirectory(prefix="validate-deploy-") as t:
        tmp = Path(t)
        compose_checks(root, a.bin, rep, tmp)
        dockerfile_checks(root, a.bin, rep)
        workflow_checks(root, a.bin, rep, tmp)
        shell_checks(root, a.bin, rep)
        k8s_checks(root, a.bin, rep, tmp)
    failed = rep.failed()
    total = len(rep.results)
    if failed:
        print(f"validate-deploy: {failed} of {total} checks FAILED ({root})")
        return 1
    print(f"validate-deploy: all {total} checks ok ({root})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
