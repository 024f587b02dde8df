#!/usr/bin/env bash
# The test suite on this machine: installs and starts the services the tests need
# (scripts/services.sh), then runs every unit and integration test of the workspace once per
# MongoDB-protocol server, FerretDB first, then nx-27017, and prints a count for each.
# .ci/run calls exactly this.
#   ./scripts/test.sh                     both servers
#   ./scripts/test.sh --mongo ferretdb    one server (ferretdb or nx), for a quicker local run
#   ./scripts/test.sh --unit              unit and property tests only: no service, seconds
#   ./scripts/test.sh -- -p logfleet-tests --test query    extra arguments go to `cargo test`
# Against other servers (real MongoDB, say), export AMQP_URL, MONGODB_URI, S3_ENDPOINT,
# AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY and run `cargo test --workspace`.
set -euo pipefail
cd "$(dirname "$0")/.."
servers=(ferretdb nx)
while [ $# -gt 0 ]; do
  case "$1" in
    --unit)
      shift
      cargo test --workspace --locked --lib --bins "$@"
      exec cargo test --locked -p logfleet-contract -p logfleet --test properties "$@" ;;
    --mongo) servers=("$2"); shift 2 ;;
    --mongo=*) servers=("${1#--mongo=}"); shift ;;
    --) shift; break ;;
    *) break ;;
  esac
done
for s in "${servers[@]}"; do
  case "$s" in ferretdb|nx) ;; *) echo "--mongo must be ferretdb or nx, not '$s'" >&2; exit 2 ;; esac
done
# A failed start must stop the run here: `eval "$(...)"` alone would carry on without it.
services_env="$(./scripts/services.sh)" || { echo "scripts/services.sh failed" >&2; exit 1; }
eval "$services_env"
# Build every test binary once; each server's run then only runs them.
cargo test --workspace --locked --no-run "$@"
logs="$(mktemp -d)"
summary=()
status=0
for s in "${servers[@]}"; do
  echo "=== test suite on MongoDB-protocol server: $s ===" >&2
  services_env="$(LOGFLEET_MONGO="$s" ./scripts/services.sh)" \
    || { echo "scripts/services.sh failed for $s" >&2; exit 1; }
  eval "$services_env"
  # The reconnect test and the crash suite stop and start the server with these.
  export MONGO_STOP_CMD="$PWD/scripts/services.sh stop-mongo $s"
  export MONGO_START_CMD="$PWD/scripts/services.sh start-mongo $s"
  rc=0
  cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$logs/$s.log" || rc=$?
  passed=$(grep -o '[0-9]* passed' "$logs/$s.log" | awk '{n+=$1} END {print n+0}')
  failed=$(grep -o '[0-9]* failed' "$logs/$s.log" | awk '{n+=$1} END {print n+0}')
  summary+=("$s: $passed passed, $failed failed (exit $rc)")
  # Name each failed test and its panic message, so the end of the output says what broke.
  if [ "$rc" != 0 ]; then
    while IFS= read -r line; do summary+=("  $line"); done < <(
      grep -E -A2 '^test .* \.\.\. FAILED$|panicked at ' "$logs/$s.log" | cut -c1-300 | head -60 || true)
  fi
  [ "$rc" = 0 ] || status=1
done
echo "=== summary ===" >&2
printf '%s\n' "${summary[@]}" >&2
exit $status
