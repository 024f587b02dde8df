#!/usr/bin/env bash
# Installs (when missing) and starts the services logfleet talks to, on this machine:
#   RabbitMQ 127.0.0.1:5672 (guest/guest) with the rabbitmq_sharding plugin (x-modulus-hash),
#   two MongoDB wire-protocol servers:
#     FerretDB v1.24.2 on SQLite, 127.0.0.1:27018 (built once from tools/ferretdb with Go),
#     nx-27017 0.8.1 on SQLite, 127.0.0.1:27017 (a Python package, in a virtualenv),
#   S3-protocol server s3s-fs on 127.0.0.1:8014 (access key / secret key from S3_ACCESS_KEY / S3_SECRET_KEY, defaults K/S).
# Also installs (when missing) Debian's chromium and chromium-driver for the viewer's browser tests.
# Idempotent: a service that already answers is left alone. Prints the environment to export;
# MONGODB_URI points at the server named by LOGFLEET_MONGO (ferretdb, the default, or nx).
#   scripts/services.sh                  install and start (the default)
#   scripts/services.sh stop-mongo [S]   stop MongoDB server S (default: LOGFLEET_MONGO); the
#                                        reconnect test uses it through MONGO_STOP_CMD, then
#                                        `scripts/services.sh start-mongo S` to start it again
#   scripts/services.sh start-mongo [S]  start only MongoDB server S
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

# --- MongoDB-protocol servers ----------------------------------------------------------------
mongo="${LOGFLEET_MONGO:-ferretdb}"
case "${1:-}" in stop-mongo|start-mongo) mongo="${2:-$mongo}" ;; esac
case "$mongo" in
  ferretdb) mongo_port=27018 ;;
  nx) mongo_port=27017 ;;
  *) log "LOGFLEET_MONGO must be ferretdb or nx, not '$mongo'"; exit 2 ;;
esac
venv="$state/venv-mongo"
ferretdb_bin="$state/bin/ferretdb"
# The build is keyed on the tools/ferretdb sources, so a change of version rebuilds it.
ferretdb_stamp="$state/bin/ferretdb.stamp"
ferretdb_sum="$(cat "$root/tools/ferretdb/go.mod" "$root/tools/ferretdb/go.sum" "$root/tools/ferretdb/main.go" | sha256sum | cut -d' ' -f1)"

stop_mongo() {
  case "$1" in
    nx) "$venv/bin/nx-27017" --stop --pid-file "$state/nx-27017.pid" >&2 || true ;;
    ferretdb)
      # SIGTERM closes the listener, but FerretDB goes on serving open connections until they
      # close: a stop must end the process, as a crash would.
      if [ -f "$state/ferretdb.pid" ]; then
        pid="$(cat "$state/ferretdb.pid")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -9 "$pid" 2>/dev/null || true
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      fi ;;
  esac
  local port; port=$([ "$1" = nx ] && echo 27017 || echo 27018)
  for _ in $(seq 1 60); do answers "$port" || break; sleep 0.5; done
  if answers "$port"; then log "could not stop MongoDB server $1 (not started by this script?)"; return 1; fi
}

start_ferretdb() {
  answers 27018 && return 0
  if [ ! -x "$ferretdb_bin" ] || [ "$(cat "$ferretdb_stamp" 2>/dev/null)" != "$ferretdb_sum" ]; then
    command -v go >/dev/null 2>&1 || { log "Go is needed to build FerretDB (tools/ferretdb)"; exit 1; }
    log "building FerretDB v1.24.2 from tools/ferretdb (about a minute, once per machine)"
    mkdir -p "$state/bin"
    (cd "$root/tools/ferretdb" && go build -mod=readonly -trimpath -o "$ferretdb_bin.new" .) >&2
    mv "$ferretdb_bin.new" "$ferretdb_bin"
    echo "$ferretdb_sum" >"$ferretdb_stamp"
  fi
  log "starting FerretDB (SQLite backend) on 127.0.0.1:27018"
  mkdir -p "$state/ferretdb"
  nohup "$ferretdb_bin" --listen-addr 127.0.0.1:27018 --handler sqlite \
    --sqlite-url "file:$state/ferretdb/" >>"$state/ferretdb.log" 2>&1 &
  echo $! >"$state/ferretdb.pid"
  wait_port 27018 ferretdb || { tail -n 30 "$state/ferretdb.log" >&2; return 1; }
}

start_nx() {
  answers 27017 && return 0
  if [ ! -x "$venv/bin/nx-27017" ]; then
    log "installing nx-27017 into $venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q nx-27017==0.8.1 >&2
  fi
  log "starting nx-27017 on 127.0.0.1:27017"
  mkdir -p "$state/mongo"
  "$venv/bin/nx-27017" --data-dir "$state/mongo" --port 27017 -d \
    --pid-file "$state/nx-27017.pid" --log-file "$state/nx-27017.log" >&2
  wait_port 27017 mongodb || { tail -n 30 "$state/nx-27017.log" >&2; return 1; }
}

case "${1:-}" in
  stop-mongo) log "stopping MongoDB server $mongo"; stop_mongo "$mongo"; exit $? ;;
  start-mongo) "start_$mongo"; exit 0 ;;
esac
# --- RabbitMQ -------------------------------------------------------------------------------
if ! command -v rabbitmq-server >/dev/null 2>&1; then
  log "installing rabbitmq-server"; apt_install rabbitmq-server
fi
if ! answers 5672; then
  log "starting RabbitMQ"; rabbitmq-server -detached >&2 || true
  wait_port 5672 rabbitmq
fi
# The broker takes a moment after the port opens before plugins can be enabled.
# The logs exchange is of type x-modulus-hash, from rabbitmq_sharding.
for _ in $(seq 1 60); do
  if rabbitmq-plugins enable --quiet rabbitmq_sharding >/dev/null 2>&1; then break; fi
  sleep 1
done
rabbitmq-plugins list -e 2>/dev/null | grep -q rabbitmq_sharding \
  || { log "could not enable rabbitmq_sharding"; exit 1; }

# --- MongoDB-protocol servers: both are started, so either can be chosen per run -----------
start_ferretdb
start_nx


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

# --- Chromium, for the viewer's browser tests (tests/viewer.rs): a tool, not a service ------
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  log "installing chromium and chromium-driver (the viewer's browser tests)"
  apt_install chromium chromium-driver
fi

cat <<ENV
export AMQP_URL='amqp://guest:guest@127.0.0.1:5672/%2f'
export MONGODB_URI='mongodb://127.0.0.1:$mongo_port/?directConnection=true'
export LOGFLEET_MONGO='$mongo'
export S3_ENDPOINT='http://127.0.0.1:8014'
export AWS_ACCESS_KEY_ID='$S3_ACCESS_KEY'
export AWS_SECRET_ACCESS_KEY='$S3_SECRET_KEY'
ENV
