#!/usr/bin/env bash
# Serve the app as N replicas of `python app.py` behind nginx, each session kept on one replica.
#
#   deploy/serve.sh N PORT [HOST]      e.g. deploy/serve.sh 2 8080      (HOST: 127.0.0.1 by default)
#
# Starts N replicas on free ports of 127.0.0.1 and nginx (Debian's package) on HOST:PORT with
# deploy/nginx.conf.template, waits until every replica and nginx answer, prints "serving on http://HOST:PORT",
# and stops them all on SIGTERM or Ctrl-C. The replicas read the same variables as `python app.py`
# (DDPM_EXPLAINER_CHECKPOINT, DDPM_EXPLAINER_CACHE_MB, ...); each gets its own cache folder (under GRADIO_TEMP_DIR
# when it is set). A replica that stops is reported and not restarted; nginx sends its sessions to the others.
# DDPM_EXPLAINER_RUN_DIR: where the nginx config, its logs and each replica's log go (default: a new temporary
# folder, removed at the end). DDPM_EXPLAINER_START_S: how long to wait for the replicas (default 300 s).
set -uo pipefail

usage() { echo "usage: $0 N PORT [HOST]  (N replicas of app.py behind nginx on HOST:PORT)" >&2; exit 2; }
[[ $# -ge 2 && $# -le 3 && $1 =~ ^[1-9][0-9]?$ && $2 =~ ^[0-9]+$ ]] || usage
N=$1 PORT=$2 HOST=${3:-127.0.0.1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
[[ -x $NGINX ]] || { echo "nginx is missing: apt-get install nginx" >&2; exit 1; }

if [[ -n ${DDPM_EXPLAINER_RUN_DIR:-} ]]; then
  RUN=$DDPM_EXPLAINER_RUN_DIR KEEP_RUN=1
  mkdir -p "$RUN"
else
  RUN=$(mktemp -d -t ddpm-explainer-serve-XXXXXX) KEEP_RUN=0
fi
PIDS=() PORTS=() NGINX_PID=""

stop_all() {
  trap - INT TERM
  echo "stopping nginx and ${#PIDS[@]} replicas ..."
  [[ -n $NGINX_PID ]] && kill -TERM "$NGINX_PID" 2>/dev/null
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  wait  # (each replica stops within about a second; nginx at once)
  [[ $KEEP_RUN == 1 ]] || rm -rf "$RUN"
  echo "stopped"
  exit "${1:-0}"
}
trap 'stop_all 0' INT TERM

# N free ports, held open together so that no two are the same
read -r -a PORTS <<<"$("$PYTHON" - "$N" <<'EOF'
import socket, sys
held = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in held:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))
EOF
)"
[[ ${#PORTS[@]} == "$N" ]] || { echo "could not find $N free ports" >&2; exit 1; }

UPSTREAMS=""
for k in $(seq 0 $((N - 1))); do
  port=${PORTS[$k]}
  temp_env=()
  [[ -n ${GRADIO_TEMP_DIR:-} ]] && temp_env=(GRADIO_TEMP_DIR="$GRADIO_TEMP_DIR/replica-$k")
  (cd "$ROOT" && exec env GRADIO_SERVER_NAME=127.0.0.1 GRADIO_SERVER_PORT="$port" "${temp_env[@]}" \
     "$PYTHON" app.py) >"$RUN/replica-$k.log" 2>&1 &
  PIDS+=($!)
  echo "$k ${PIDS[$k]} $port" >>"$RUN/replicas"
  echo "replica $k: pid ${PIDS[$k]} on 127.0.0.1:$port (log $RUN/replica-$k.log)"
  UPSTREAMS+="        server 127.0.0.1:$port max_fails=1 fail_timeout=10s;"$'\n'
done

template=$(<"$ROOT/deploy/nginx.conf.template")
conf=${template//@RUN@/$RUN}
conf=${conf//@LISTEN@/$HOST:$PORT}
conf=${conf//@UPSTREAMS@/${UPSTREAMS%$'\n'}}
printf '%s\n' "$conf" >"$RUN/nginx.conf"
NGINX_USER_DIRECTIVE=""
[[ $EUID == 0 ]] && NGINX_USER_DIRECTIVE="user $(id -un) $(id -gn);"
"$NGINX" -t -q -g "$NGINX_USER_DIRECTIVE" -p "$RUN" -e "$RUN/error.log" -c "$RUN/nginx.conf" || stop_all 1

answers() { "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" 2>/dev/null; }
deadline=$((SECONDS + ${DDPM_EXPLAINER_START_S:-300}))
for k in $(seq 0 $((N - 1))); do
  until answers "http://127.0.0.1:${PORTS[$k]}/gradio_api/info"; do
    if ! kill -0 "${PIDS[$k]}" 2>/dev/null; then
      echo "replica $k exited while starting; the end of its log:" >&2; tail -20 "$RUN/replica-$k.log" >&2; stop_all 1
    fi
    ((SECONDS < deadline)) || { echo "replica $k did not answer within the time allowed" >&2; stop_all 1; }
    sleep 0.5
  done
done

# nginx's workers run as the user who runs this script, like the replicas (as root, nginx would switch them to
# nobody, who may not reach the run folder for its cache)
"$NGINX" -p "$RUN" -e "$RUN/error.log" -c "$RUN/nginx.conf" -g "daemon off; ${NGINX_USER_DIRECTIVE:-}" &
NGINX_PID=$!
echo "$NGINX_PID" >"$RUN/nginx.master"
CHECK_HOST=$HOST
[[ $HOST == 0.0.0.0 ]] && CHECK_HOST=127.0.0.1
until answers "http://$CHECK_HOST:$PORT/gradio_api/info"; do
  kill -0 "$NGINX_PID" 2>/dev/null || { echo "nginx exited:" >&2; tail -5 "$RUN/error.log" >&2; stop_all 1; }
  ((SECONDS < deadline)) || { echo "nginx did not answer on port $PORT" >&2; stop_all 1; }
  sleep 0.2
done
echo "serving on http://$HOST:$PORT with $N replicas (run folder $RUN)"

# Until a signal: report a replica that stops; stop everything if nginx or the last replica does.
declare -A reported=()
while true; do
  wait -n
  kill -0 "$NGINX_PID" 2>/dev/null || { echo "nginx stopped; stopping the replicas" >&2; stop_all 1; }
  alive=0
  for k in "${!PIDS[@]}"; do
    if kill -0 "${PIDS[$k]}" 2>/dev/null; then
      alive=$((alive + 1))
    elif [[ -z ${reported[$k]:-} ]]; then
      reported[$k]=1
      echo "replica $k (pid ${PIDS[$k]}) stopped; nginx sends its sessions to the others" >&2
    fi
  done
  ((alive > 0)) || { echo "every replica stopped" >&2; stop_all 1; }
done
