#!/usr/bin/env bash
# The long crash suite: the release worker binaries under SIGKILLs, a broker restart and a
# MongoDB stop/start, 300,000 logs over 20 episodes by default. Arguments go to the suite:
#   --logs N --episodes N --producers N --ingest-workers N --archive-workers N --kills N
#   --chunk-size N --duplicate-percent N --restart-broker 0|1
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(./scripts/services.sh)"
export MONGO_STOP_CMD="${MONGO_STOP_CMD:-$PWD/scripts/services.sh stop-mongo}"
export MONGO_START_CMD="${MONGO_START_CMD:-$PWD/scripts/services.sh}"
cargo build --release --locked -p ingest-worker -p archive-worker -p logfleet-testkit --bin crash-suite
exec target/release/crash-suite "$@"
