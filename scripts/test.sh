#!/usr/bin/env bash
# The test suite on this machine: installs and starts the services the tests need
# (scripts/services.sh), then runs every unit and integration test of the workspace.
# .ci/run calls exactly this. Against other servers, export AMQP_URL, MONGODB_URI,
# S3_ENDPOINT, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY and run `cargo test --workspace`.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(./scripts/services.sh)"
export MONGO_RESTART_CMD="${MONGO_RESTART_CMD:-$PWD/scripts/services.sh restart-mongo}"
cargo test --workspace --locked "$@"
