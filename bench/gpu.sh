#!/usr/bin/env bash
# One command for a short GPU slot on a bare machine with no network (see README "Benchmarks").
# Prepared on a development machine: `make gpu-wheels gpu-redis`, then carry .bench/wheels and
# .bench/redis with the working tree. There it installs the missing Python packages from the
# wheels (into .bench/site, on PYTHONPATH), starts Redis from the carried Debian binaries (or
# the machine's own), skips PostgreSQL (a SQLite database; the note says so), and runs the
# bare-forward and end-to-end benchmark: ViT-B/32, random weights, fp16 on CUDA, batch 256.
# Usage: bench/gpu.sh [--device cuda|cpu] [--images N] [--batch N] [--model vit-b32|bundled]
# A CPU check of the script itself: bench/gpu.sh --device cpu --images 64 --batch 32
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

DEVICE=cuda IMAGES=16384 BATCH=256 MODEL=vit-b32 BARE_BATCHES=30
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --images) IMAGES="$2"; shift 2 ;;
    --batch) BATCH="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --bare-batches) BARE_BATCHES="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$DEVICE" = cpu ] && [ "$BARE_BATCHES" = 30 ] && BARE_BATCHES=3

# The project's virtualenv where there is one (development machines), else the machine's python.
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
STATE=.bench/gpu-run
mkdir -p "$STATE"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

started=$(date +%s)
if ! "$PY" -c "import flask, celery, celery_batches, sqlalchemy, alembic, pydantic, redis" 2>/dev/null; then
  [ -d .bench/wheels ] || { echo "no .bench/wheels: run 'make gpu-wheels' and carry it" >&2; exit 1; }
  echo "installing $(ls .bench/wheels/*.whl | wc -l) wheels into .bench/site" >&2
  "$PY" -m pip install -q --no-index --no-deps --target .bench/site .bench/wheels/*.whl
  export PYTHONPATH=".bench/site:$PYTHONPATH"
fi

REDIS_PORT="${CLIPMOD_BENCH_REDIS_PORT:-6399}"
if [ -x .bench/redis/root/usr/bin/redis-server ]; then
  REDIS=(env LD_LIBRARY_PATH="$ROOT/.bench/redis/lib" "$ROOT/.bench/redis/root/usr/bin/redis-server")
elif command -v redis-server >/dev/null; then
  REDIS=(redis-server)
else
  echo "no Redis: run 'make gpu-redis' and carry .bench/redis" >&2; exit 1
fi
stop_redis() { [ -f "$STATE/redis.pid" ] && kill "$(cat "$STATE/redis.pid")" 2>/dev/null || true; }
trap stop_redis EXIT
"${REDIS[@]}" --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no --daemonize yes \
  --pidfile "$ROOT/$STATE/redis.pid" --dir "$ROOT/$STATE" --logfile "$ROOT/$STATE/redis.log"
for _ in $(seq 50); do
  "$PY" -c "import redis; redis.Redis(port=$REDIS_PORT).ping()" 2>/dev/null && break; sleep 0.1
done
echo "setup: $(( $(date +%s) - started )) s; Redis on $REDIS_PORT" >&2
echo "note: PostgreSQL skipped (no carried server): SQLite database, Redis broker" >&2

[ "$DEVICE" = cuda ] && "$PY" -c "import torch; print(torch.cuda.get_device_name(), torch.__version__)"
"$PY" -m bench.pipeline --model "$MODEL" --device "$DEVICE" --batch "$BATCH" \
  --images "$IMAGES" --bare-batches "$BARE_BATCHES" \
  --broker "redis://127.0.0.1:$REDIS_PORT/0" --json 2>"$STATE/bench.log" | tee "$STATE/result.txt" \
  || { echo "the benchmark failed; the end of $STATE/bench.log:" >&2; tail -c 4000 "$STATE/bench.log" >&2; exit 1; }
echo "total: $(( $(date +%s) - started )) s; figures also in $STATE/result.txt" >&2
