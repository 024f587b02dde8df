#!/usr/bin/env bash
# Installs (when missing) and starts the three services logfleet talks to, on this machine:
#   RabbitMQ 127.0.0.1:5672 (guest/guest) with the consistent-hash exchange plugin,
#   MongoDB wire-protocol stand-in nx-27017 on 127.0.0.1:27017,
#   S3-protocol server s3s-fs on 127.0.0.1:8014 (access key / secret key from S3_ACCESS_KEY / S3_SECRET_KEY, defaults K/S).
# Idempotent: a service that already answers is left alone. Prints the environment to export.
#   scripts/services.sh                 install and start (the default)
#   scripts/services.sh stop-mongo      stop the MongoDB stand-in (the reconnect test uses it
#                                       through MONGO_STOP_CMD, then this script to start it again)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# Machine-level state (the services and their ports are machine-level too), shared by every
# checkout: the stand-in's virtualenv, MongoDB and S3 data, logs.
state="${LOGFLEET_SERVICES_DIR:-/var/tmp/logfleet-services}"
mkdir -p "$state"
export PATH="$HOME/.cargo/bin:$PATH"
S3_ACCESS_KEY="${S3_ACCESS_KEY:-K}"
S3_SECRET_KEY="${S3_SECRET_KEY:-S}"

log() { echo "[services] $*" >&2; }
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 120); do answers "$1" && return 0; sleep 1; done
  log "nothing answers on port $1 after 120 s ($2)"; return 1
}
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then apt-get update -qq >&2; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

# --- RabbitMQ -------------------------------------------------------------------------------
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  log "installing rabbitmq-server"; apt_install rabbitmq-server
fi
if ! answers 5672; then
  log "starting RabbitMQ"; rabbitmq-server -detached >&2 || true
  wait_port 5672 rabbitmq
fi
# The broker takes a moment after the port opens before plugins can be enabled.
for _ in $(seq 1 60); do
  if rabbitmq-plugins enable --quiet rabbitmq_consistent_hash_exchange >/dev/null 2>&1; then break; fi
  sleep 1
done
rabbitmq-plugins list -e 2>/dev/null | grep -q rabbitmq_consistent_hash_exchange \
  || { log "could not enable rabbitmq_consistent_hash_exchange"; exit 1; }

# --- MongoDB stand-in -----------------------------------------------------------------------
venv="$state/venv-mongo"
if [ "${1:-}" = stop-mongo ]; then
  log "stopping nx-27017"
  "$venv/bin/nx-27017" --stop --pid-file "$state/nx-27017.pid" >&2 || true
  for _ in $(seq 1 60); do answers 27017 || break; sleep 0.5; done
  if answers 27017; then log "could not stop the MongoDB stand-in (not started by this script?)"; exit 1; fi
  exit 0
fi
if ! answers 27017; then
  if [ ! -x "$venv/bin/nx-27017" ]; then
    log "installing nx-27017 into $venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q nx-27017==0.8.1 >&2
  fi
  log "starting nx-27017"
  mkdir -p "$state/mongo"
  "$venv/bin/nx-27017" --data-dir "$state/mongo" --port 27017 -d \
    --pid-file "$state/nx-27017.pid" --log-file "$state/nx-27017.log" >&2
  wait_port 27017 mongodb
fi

# --- S3 -------------------------------------------------------------------------------------
if ! answers 8014; then
  if ! command -v s3s-fs >/dev/null 2>&1; then
    log "building s3s-fs 0.14.1 (about 4 minutes, once per machine)"
    cargo install s3s-fs@0.14.1 --features binary --locked >&2
  fi
  log "starting s3s-fs"
  mkdir -p "$state/s3/logfleet"
  nohup s3s-fs --host 127.0.0.1 --port 8014 --access-key "$S3_ACCESS_KEY" --secret-key "$S3_SECRET_KEY" "$state/s3" \
    >"$state/s3s-fs.log" 2>&1 &
  wait_port 8014 s3
fi

cat <<ENV
export AMQP_URL='amqp://guest:guest@127.0.0.1:5672/%2f'
export MONGODB_URI='mongodb://127.0.0.1:27017/?directConnection=true'
export S3_ENDPOINT='http://127.0.0.1:8014'
export AWS_ACCESS_KEY_ID='$S3_ACCESS_KEY'
export AWS_SECRET_ACCESS_KEY='$S3_SECRET_KEY'
ENV
