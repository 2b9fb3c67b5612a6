#!/usr/bin/env bash
# Gateway overhead benchmark (`make bench`): direct (load -> fake upstream) against
# gateway (load -> gateway -> fake upstream), interleaved in one run. See bench/README.md.
#
#   bash bench/run.sh                       # full: instant upstream, then 50 ms upstream
#   QUICK=1 DURATION=5 bash bench/run.sh    # instant upstream only
#   DYNAMO=standin bash bench/run.sh        # the in-memory DynamoDB stand-in: the gateway's own capacity
#
# Knobs (environment):
#   QUICK=0                 1: skip the slow-upstream phase
#   DURATION=10             seconds per measurement (stream measurements too)
#   ROUNDS=1                rounds; each runs every (phase, mode, c, target); order alternates
#   WARMUP=3                seconds of discarded load per target and phase
#   CONCURRENCY="1 8 32"    non-stream levels, instant upstream
#   STREAM_CONCURRENCY="1 8"  stream levels, instant upstream ("" skips streaming)
#   SLOW_LATENCY_MS=50      upstream latency of the second phase
#   SLOW_CONCURRENCY="8 32" non-stream levels of the second phase
#   UPSTREAM_LATENCY_MS=0   upstream latency of the first phase
#   UPSTREAM_CHUNKS=20  UPSTREAM_CHUNK_DELAY_MS=0
#   UPSTREAM_PORT=18000  GATEWAY_PORT=18080  DYNAMODB_PORT=8000
#   AWS_ENDPOINT_URL_DYNAMODB   use this DynamoDB (Local) instead of bootstrapping one
#   DYNAMO=local            local: DynamoDB Local (bootstrapped, or AWS_ENDPOINT_URL_DYNAMODB);
#                           standin: bench/dynamo_standin.py, in memory, answers at once (it
#                           measures the gateway, not DynamoDB; see its docstring)
#   STANDIN_PORT=18001  DYNAMO_CPUS=$UPSTREAM_CPUS   the stand-in's port and CPUs
#   BENCH_CACHE=0           1: the org's response cache on (same body every request: hits)
#   BENCH_KEY_LIMITS=0      1: the key has rpm, tpm, daily and monthly USD limits (never reached)
#   BENCH_ORG_RPM=0         N: the org's requests-per-minute limit (0: none)
#   PIN=1  LOAD_CPUS=0  UPSTREAM_CPUS=0  GATEWAY_CPUS=1   taskset layout (PIN=0: none)
#   ENGINE=auto             load.py engine for non-stream: auto (wrk if on PATH) | python
#   EXTRAS=1                0: skip the DynamoDB round-trip count, the Mangum handler's CPU
#                           (bench/mangum_cpu.py) and the import timing
#   BENCH_COMMIT            the commit to name in the report when run from a snapshot (a
#                           `git archive` copy, PYTHONPATH=<copy>/layers/dynoyard), not a checkout
#   LABEL=full|quick        results go to bench/results/<date>-<LABEL>/ (default: full or
#                           quick, then -standin, -cache, -keylimits, -orgrpm as set)
set -uo pipefail
set -m # every background job in its own process group: cleanup stops exactly those

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
PY="$ROOT/.venv/bin/python"
QUICK="${QUICK:-0}"
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-1}"
WARMUP="${WARMUP:-3}"
CONCURRENCY="${CONCURRENCY:-1 8 32}"
STREAM_CONCURRENCY="${STREAM_CONCURRENCY-1 8}"
UPSTREAM_LATENCY_MS="${UPSTREAM_LATENCY_MS:-0}"
SLOW_LATENCY_MS="${SLOW_LATENCY_MS:-50}"
SLOW_CONCURRENCY="${SLOW_CONCURRENCY:-8 32}"
UPSTREAM_CHUNKS="${UPSTREAM_CHUNKS:-20}"
UPSTREAM_CHUNK_DELAY_MS="${UPSTREAM_CHUNK_DELAY_MS:-0}"
UPSTREAM_PORT="${UPSTREAM_PORT:-18000}"
GATEWAY_PORT="${GATEWAY_PORT:-18080}"
DYNAMODB_PORT="${DYNAMODB_PORT:-8000}"
PIN="${PIN:-1}"
LOAD_CPUS="${LOAD_CPUS:-0}"
UPSTREAM_CPUS="${UPSTREAM_CPUS:-0}"
GATEWAY_CPUS="${GATEWAY_CPUS:-1}"
ENGINE="${ENGINE:-auto}"
EXTRAS="${EXTRAS:-1}"
DYNAMO="${DYNAMO:-local}"
STANDIN_PORT="${STANDIN_PORT:-18001}"
DYNAMO_CPUS="${DYNAMO_CPUS:-$UPSTREAM_CPUS}"
BENCH_CACHE="${BENCH_CACHE:-0}"
BENCH_KEY_LIMITS="${BENCH_KEY_LIMITS:-0}"
BENCH_ORG_RPM="${BENCH_ORG_RPM:-0}"
if [[ -z "${LABEL:-}" ]]; then
  if [[ "$QUICK" == 1 ]]; then LABEL=quick; else LABEL=full; fi
  [[ "$DYNAMO" == standin ]] && LABEL+=-standin
  [[ "$BENCH_CACHE" == 1 ]] && LABEL+=-cache
  [[ "$BENCH_KEY_LIMITS" == 1 ]] && LABEL+=-keylimits
  [[ "$BENCH_ORG_RPM" != 0 ]] && LABEL+=-orgrpm
fi

export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-local}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-local}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "$*"; exit 1; }
pin() { # pin CPUS CMD...
  local cpus="$1"; shift
  if [[ "$PIN" == 1 ]]; then taskset -c "$cpus" "$@"; else "$@"; fi
}
answers() { curl -s -o /dev/null --max-time 1 "$1"; }
wait_http() { # wait_http URL SECONDS
  local i
  for ((i = 0; i < $2 * 4; i++)); do
    curl -sf -o /dev/null --max-time 2 "$1" && return 0
    sleep 0.25
  done
  return 1
}

[[ -x "$PY" ]] || die "$PY not found: create the virtualenv first"
OUT_DIR="$ROOT/bench/results/$(date +%Y-%m-%d)-$LABEL"
[[ -e "$OUT_DIR" ]] && OUT_DIR="$OUT_DIR-$(date +%H%M%S)"
mkdir -p "$OUT_DIR"
RESULTS="$OUT_DIR/results.jsonl"
: > "$RESULTS"
TMP="$(mktemp -d /tmp/dynoyard-bench.XXXXXX)"
PREFIX="bench-$(date +%Y%m%d-%H%M%S)"

# ---- cleanup: only what this script started, by process group; then the tables ------
STARTED=()
TABLES_MADE=0
cleanup() {
  local pg
  for pg in "${STARTED[@]}"; do kill -TERM -- "-$pg" 2>/dev/null; done
  sleep 0.5
  for pg in "${STARTED[@]}"; do kill -KILL -- "-$pg" 2>/dev/null; done
  if [[ "$TABLES_MADE" == 1 ]]; then
    "$PY" bench/bench_env.py teardown --prefix "$PREFIX" >/dev/null 2>&1 \
      || log "could not delete the $PREFIX-* tables"
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

LAST_PID=""
start_bg() { # start_bg NAME CPUS CMD...  (log in $OUT_DIR/NAME.log)
  local name="$1" cpus="$2"; shift 2
  pin "$cpus" "$@" >"$OUT_DIR/$name.log" 2>&1 </dev/null &
  LAST_PID=$!
  STARTED+=("$LAST_PID")
  disown "$LAST_PID" # no "Terminated" notices; cleanup still stops its process group
}

# ---- DynamoDB: the in-memory stand-in, or DynamoDB Local -----------------------------------
DDB_STATS=""
if [[ "$DYNAMO" == standin ]]; then
  [[ -n "${AWS_ENDPOINT_URL_DYNAMODB:-}" ]] && log "DYNAMO=standin: AWS_ENDPOINT_URL_DYNAMODB ignored"
  export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$STANDIN_PORT"
  answers "$AWS_ENDPOINT_URL_DYNAMODB/" && die "port $STANDIN_PORT is busy: set STANDIN_PORT"
  start_bg dynamo "$DYNAMO_CPUS" "$PY" bench/dynamo_standin.py --port "$STANDIN_PORT"
  STANDIN_PID=$LAST_PID
  DDB_STATS="$AWS_ENDPOINT_URL_DYNAMODB/stats"
  wait_http "$DDB_STATS" 20 || die "DynamoDB stand-in did not start: $OUT_DIR/dynamo.log"
elif [[ "$DYNAMO" != local ]]; then
  die "DYNAMO must be local or standin, not $DYNAMO"
elif [[ -z "${AWS_ENDPOINT_URL_DYNAMODB:-}" ]]; then
  export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$DYNAMODB_PORT"
  if "$PY" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("dynoyard.local.__main__") is None)' 2>/dev/null; then
    log "DynamoDB Local: python -m dynoyard.local bootstrap (port $DYNAMODB_PORT)"
    DYNAMODB_PORT="$DYNAMODB_PORT" timeout 180 "$PY" -m dynoyard.local bootstrap \
      >"$OUT_DIR/bootstrap.log" 2>&1 || log "bootstrap failed, see $OUT_DIR/bootstrap.log"
  fi
fi
answers "$AWS_ENDPOINT_URL_DYNAMODB" \
  || die "no DynamoDB at $AWS_ENDPOINT_URL_DYNAMODB (start DynamoDB Local or set AWS_ENDPOINT_URL_DYNAMODB)"
DDB_PORT="${AWS_ENDPOINT_URL_DYNAMODB##*:}"; DDB_PORT="${DDB_PORT%%/*}"
DDB_PID="${STANDIN_PID:-}"
[[ -n "$DDB_PID" ]] || DDB_PID="$(ss -Hltnp "sport = :$DDB_PORT" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)"
log "DynamoDB at $AWS_ENDPOINT_URL_DYNAMODB${DDB_PID:+ (pid $DDB_PID)}; tables $PREFIX-*"

# ---- fake upstream ------------------------------------------------------------------------
UPSTREAM="http://127.0.0.1:$UPSTREAM_PORT"
answers "$UPSTREAM/" && die "port $UPSTREAM_PORT is busy: set UPSTREAM_PORT"
answers "http://127.0.0.1:$GATEWAY_PORT/" && die "port $GATEWAY_PORT is busy: set GATEWAY_PORT"
start_bg upstream "$UPSTREAM_CPUS" "$PY" bench/fake_upstream.py --port "$UPSTREAM_PORT" \
  --latency-ms "$UPSTREAM_LATENCY_MS" --chunks "$UPSTREAM_CHUNKS" \
  --chunk-delay-ms "$UPSTREAM_CHUNK_DELAY_MS"
UP_PID=$LAST_PID
wait_http "$UPSTREAM/health" 20 || die "fake upstream did not start: $OUT_DIR/upstream.log"

# ---- tables, organization, key, catalog ----------------------------------------------------
[[ "$DYNAMO" == local ]] && TABLES_MADE=1 # the stand-in's tables end with it
VARIANT=()
[[ "$BENCH_CACHE" == 1 ]] && VARIANT+=(--cache)
[[ "$BENCH_KEY_LIMITS" == 1 ]] && VARIANT+=(--key-limits)
[[ "$BENCH_ORG_RPM" != 0 ]] && VARIANT+=(--org-rpm "$BENCH_ORG_RPM")
SETUP="$("$PY" bench/bench_env.py setup --prefix "$PREFIX" --upstream-base "$UPSTREAM/v1" \
  --dir "$TMP" "${VARIANT[@]}" 2>"$OUT_DIR/setup.log")" || die "setup failed: $OUT_DIR/setup.log"
eval "$SETUP"
export ACCOUNTS_TABLE USAGE_TABLE CACHE_TABLE IDEMPOTENCY_TABLE DYNOYARD_MODELS_FILE BENCH_KEY

# ---- gateway ---------------------------------------------------------------------------------
SERVER_OPTS=()
"$PY" -c 'import uvloop' 2>/dev/null && SERVER_OPTS+=(--loop uvloop)
"$PY" -c 'import httptools' 2>/dev/null && SERVER_OPTS+=(--http httptools)
export POWERTOOLS_METRICS_DISABLED=true POWERTOOLS_LOG_LEVEL=WARNING
# Every bench request comes from 127.0.0.1: lift the per-IP request limit (1,200 a minute by
# default), or the gateway would answer 429 before doing any of the work measured.
export DYNOYARD_IP_REQUESTS_PER_MINUTE="${DYNOYARD_IP_REQUESTS_PER_MINUTE:-1000000000}"
start_bg gateway "$GATEWAY_CPUS" "$PY" -m uvicorn dynoyard.api.app:create_app --factory \
  --host 127.0.0.1 --port "$GATEWAY_PORT" --no-access-log --log-level warning "${SERVER_OPTS[@]}"
GW_PID=$LAST_PID
GATEWAY="http://127.0.0.1:$GATEWAY_PORT"
wait_http "$GATEWAY/healthz" 60 || die "gateway did not start: $OUT_DIR/gateway.log"
log "gateway pid $GW_PID on $GATEWAY (${SERVER_OPTS[*]:-asyncio, h11}), upstream pid $UP_PID"

# ---- probe: one request of each kind through each target, seen once upstream ---------------
# (With BENCH_CACHE=1 both are misses: their messages differ from each other's, the cache key
# ignores `stream`, and from the measurements', whose every request after the first is a hit.)
probe() { # probe BASE KEY
  local chat='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"probe"}],"max_tokens":16}'
  local stream='{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"probe stream"}],"max_tokens":16}'
  local out
  curl -s -o /dev/null -X POST "$UPSTREAM/stats"
  out="$(curl -s --max-time 20 "$1/chat/completions" -H "Authorization: Bearer $2" \
    -H 'Content-Type: application/json' -d "$chat")"
  [[ "$out" == *'Hello from the fake upstream.'* ]] || { log "probe $1 chat: ${out:0:300}"; return 1; }
  out="$(curl -sN --max-time 20 "$1/chat/completions" -H "Authorization: Bearer $2" \
    -H 'Content-Type: application/json' -d "$stream")"
  [[ "$out" == *'data: [DONE]'* ]] || { log "probe $1 stream: ${out:0:300}"; return 1; }
  out="$(curl -s "$UPSTREAM/stats")"
  [[ "$out" == '{"chat":1,"chat_stream":1}' ]] || { log "probe $1: upstream saw $out"; return 1; }
}
probe "$UPSTREAM/v1" sk-upstream || die "probe of the fake upstream failed"
probe "$GATEWAY/v1" "$BENCH_KEY" || die "probe through the gateway failed: $OUT_DIR/gateway.log"

# ---- extras: DynamoDB round trips (in-process) and cold-start imports -------------------------
if [[ "$EXTRAS" == 1 ]]; then
  log "DynamoDB round trips per request (in-process app, 50 requests of each kind)"
  POWERTOOLS_LOG_LEVEL=WARNING pin "$GATEWAY_CPUS" "$PY" bench/ddb_roundtrips.py -n 50 \
    >"$OUT_DIR/ddb.jsonl" 2>"$OUT_DIR/ddb.log" || log "ddb_roundtrips failed: $OUT_DIR/ddb.log"
  log "REST entrance CPU: the Mangum handler in-process, 1000 requests of each kind"
  pin "$GATEWAY_CPUS" "$PY" bench/mangum_cpu.py -n 1000 >"$OUT_DIR/mangum.jsonl" \
    2>"$OUT_DIR/mangum.log" || log "mangum_cpu failed: $OUT_DIR/mangum.log"
  log "cold-start import time (5 runs)"
  pin "$GATEWAY_CPUS" "$PY" bench/import_time.py --runs 5 >"$OUT_DIR/imports.json" \
    2>"$OUT_DIR/imports.log" || log "import_time failed: $OUT_DIR/imports.log"
fi

# ---- measurements ----------------------------------------------------------------------------
declare -A BASE=([direct]="$UPSTREAM/v1" [gateway]="$GATEWAY/v1")
declare -A KEY=([direct]=sk-upstream [gateway]="$BENCH_KEY")
run_load() { # run_load MODE TARGET C SECONDS ROUND PHASE
  local cpu=(--cpu-pid "upstream=$UP_PID")
  [[ "$2" == gateway ]] && cpu+=(--cpu-pid "gateway=$GW_PID")
  [[ -n "$DDB_PID" ]] && cpu+=(--cpu-pid "dynamodb=$DDB_PID")
  [[ -n "$DDB_STATS" ]] && cpu+=(--dynamo-stats "$DDB_STATS")
  pin "$LOAD_CPUS" "$PY" bench/load.py "$1" --base-url "${BASE[$2]}" --key "${KEY[$2]}" \
    -c "$3" -d "$4" --label "$2" --round "$5" --tag "phase=$6" --engine "$ENGINE" \
    --tag "dynamo=$DYNAMO" --tag "cache=$BENCH_CACHE" --tag "key_limits=$BENCH_KEY_LIMITS" \
    --tag "org_rpm=$BENCH_ORG_RPM" --upstream-stats "$UPSTREAM/stats" "${cpu[@]}"
}

PHASES=("$UPSTREAM_LATENCY_MS")
[[ "$QUICK" != 1 && "$SLOW_LATENCY_MS" != "$UPSTREAM_LATENCY_MS" ]] && PHASES+=("$SLOW_LATENCY_MS")
for phase in "${PHASES[@]}"; do
  curl -s -o /dev/null -X POST "$UPSTREAM/control" -d "{\"latency_ms\": $phase}"
  if [[ "$phase" == "$UPSTREAM_LATENCY_MS" ]]; then
    chat_levels="$CONCURRENCY"; stream_levels="$STREAM_CONCURRENCY"
  else
    chat_levels="$SLOW_CONCURRENCY"; stream_levels=""
  fi
  if [[ "$WARMUP" != 0 ]]; then
    for t in direct gateway; do
      log "phase ${phase}ms: warm-up $t ${WARMUP}s"
      run_load chat "$t" 8 "$WARMUP" 0 "$phase" >/dev/null || log "warm-up $t failed"
    done
  fi
  for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then order=(direct gateway); else order=(gateway direct); fi
    for c in $chat_levels; do
      for t in "${order[@]}"; do
        log "phase ${phase}ms round $r: chat c=$c $t"
        run_load chat "$t" "$c" "$DURATION" "$r" "$phase" >>"$RESULTS" || log "failed: chat $t c=$c"
      done
    done
    for c in $stream_levels; do
      for t in "${order[@]}"; do
        log "phase ${phase}ms round $r: stream c=$c $t"
        run_load stream "$t" "$c" "$DURATION" "$r" "$phase" >>"$RESULTS" || log "failed: stream $t c=$c"
      done
    done
  done
done

# ---- report ----------------------------------------------------------------------------------
{
  if [[ -n "${BENCH_COMMIT:-}" ]]; then commit="$BENCH_COMMIT (snapshot)"; else
    commit="$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo '+dirty')"
  fi
  echo "# Dynoyard gateway overhead, $(date -Is), commit $commit"
  echo "# load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (other processes on the host move every figure)"
  echo "# host: $(nproc) cpus ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), kernel $(uname -r), python $("$PY" -c 'import platform; print(platform.python_version())')"
  echo "# rounds=$ROUNDS duration=${DURATION}s warmup=${WARMUP}s phases(upstream ms)=${PHASES[*]} chunks=$UPSTREAM_CHUNKS chunk_delay=${UPSTREAM_CHUNK_DELAY_MS}ms"
  if command -v wrk >/dev/null && [[ "$ENGINE" != python ]]; then
    nonstream="$(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'), 1 thread"
  else
    nonstream="python asyncio client"
  fi
  echo "# load: $nonstream (non-stream), python asyncio client (stream)"
  echo "# gateway: uvicorn ${SERVER_OPTS[*]:-}, 1 process, POWERTOOLS_METRICS_DISABLED=true, POWERTOOLS_LOG_LEVEL=WARNING (no per-request log line or metric), DYNOYARD_IP_REQUESTS_PER_MINUTE=$DYNOYARD_IP_REQUESTS_PER_MINUTE"
  if [[ "$DYNAMO" == standin ]]; then
    echo "# DynamoDB: stand-in bench/dynamo_standin.py at $AWS_ENDPOINT_URL_DYNAMODB (in memory, answers at once; tables from template.yaml), pinned cpu $DYNAMO_CPUS"
  else
    echo "# DynamoDB: DynamoDB Local at $AWS_ENDPOINT_URL_DYNAMODB (tables from template.yaml), not pinned"
  fi
  echo "# variant: cache=$BENCH_CACHE key_limits=$BENCH_KEY_LIMITS org_rpm=$BENCH_ORG_RPM"
  if [[ "$PIN" == 1 ]]; then
    echo "# pinning: load cpu $LOAD_CPUS, upstream cpu $UPSTREAM_CPUS, gateway cpu $GATEWAY_CPUS"
  else
    echo "# pinning: none"
  fi
  echo
  "$PY" bench/report.py "$RESULTS" --ddb "$OUT_DIR/ddb.jsonl" --imports "$OUT_DIR/imports.json" \
    --mangum "$OUT_DIR/mangum.jsonl"
} | tee "$OUT_DIR/report.txt"
log "results: ${OUT_DIR#"$ROOT"/}/ (results.jsonl, report.txt, logs)"
