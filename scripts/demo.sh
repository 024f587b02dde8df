#!/usr/bin/env bash
# The fleet's main job on local services: installs and starts RabbitMQ, the MongoDB stand-in and
# the S3 server when missing (scripts/services.sh), then runs `logctl demo`: an ingest-worker and
# an archive-worker, a sample load of 128,000 logs over three episodes, a flush of the finished
# one, and a summary of what landed in MongoDB and S3. Extra arguments go to `logctl demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
# nx-27017 by default: FerretDB, the more faithful server, ran this demo 2.2-3.3x slower here
# (143-178 s against 54-64 s). LOGFLEET_MONGO=ferretdb runs it there.
export LOGFLEET_MONGO="${LOGFLEET_MONGO:-nx}"
eval "$(./scripts/services.sh)"
export LOGFLEET__MONGO__URI="$MONGODB_URI" LOGFLEET__AMQP__URL="$AMQP_URL" LOGFLEET__S3__ENDPOINT="$S3_ENDPOINT"
cargo run --locked -p logctl -- demo "$@"
