#!/usr/bin/env bash
# The test suite on this machine: installs and starts the services the tests need
# (scripts/services.sh), then runs every unit and integration test of the workspace.
# .ci/run calls exactly this. Against other servers, export AMQP_URL, MONGODB_URI,
# S3_ENDPOINT, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY and run `cargo test --workspace`.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(./scripts/services.sh)"
# The reconnect test stops and starts the MongoDB server with these (see tests/reconnect.rs).
export MONGO_STOP_CMD="${MONGO_STOP_CMD:-$PWD/scripts/services.sh stop-mongo}"
export MONGO_START_CMD="${MONGO_START_CMD:-$PWD/scripts/services.sh}"
cargo test --workspace --locked --no-fail-fast "$@"
