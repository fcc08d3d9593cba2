#!/usr/bin/env bash
# One command for a short GPU slot on a bare machine with no network (see README "Benchmarks").
# Prepared on a development machine: `make gpu-wheels gpu-redis gpu-postgres`, then carry
# .bench/wheels, .bench/redis.tar.xz and .bench/postgres.tar.xz with the working tree. There it
# installs the missing Python packages from the wheels (into .bench/site, on PYTHONPATH),
# starts Redis from the carried Debian binaries (or the machine's own) and PostgreSQL from the
# carried archive (`bench/gpu_postgres.sh`; SQLite if it does not start, and the note says so),
# then runs, each step on its own so one failure still leaves the others' figures:
#   gpudecode  `bench.gpudecode`: nvJPEG vs the CPU decode processes, speed and agreement;
#   gpu-N      `bench.pipeline`: bare forward and end to end, ViT-B/32, random weights, fp16,
#              batch 256, JPEGs decoded on the GPU (CLIPMOD_GPU_JPEG=auto), N worker processes;
#   cpu-N      the same with CLIPMOD_GPU_JPEG=off (the CPU decode processes), half the images.
# Usage: bench/gpu.sh [--device cuda|cpu] [--images N] [--batch N] [--model vit-b32|bundled]
#                     [--steps "gpudecode gpu-1 gpu-2 cpu-1"]
# A CPU check of the script itself: bench/gpu.sh --device cpu --images 64 --batch 32
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

DEVICE=cuda IMAGES=16384 BATCH=256 MODEL=vit-b32 BARE_BATCHES=30
STEPS="gpudecode gpu-1 gpu-2 cpu-1"
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --images) IMAGES="$2"; shift 2 ;;
    --batch) BATCH="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --bare-batches) BARE_BATCHES="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
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
# A second run on the same machine finds the wheels installed by the first.
[ -d .bench/site ] && export PYTHONPATH="$ROOT/.bench/site:$PYTHONPATH"
if ! "$PY" -c "import flask, celery, celery_batches, sqlalchemy, alembic, pydantic, redis" 2>/dev/null; then
  [ -d .bench/wheels ] || { echo "no .bench/wheels: run 'make gpu-wheels' and carry it" >&2; exit 1; }
  echo "installing $(ls .bench/wheels/*.whl | wc -l) wheels into .bench/site" >&2
  "$PY" -m pip install -q --no-index --no-deps --upgrade --target .bench/site .bench/wheels/*.whl
  export PYTHONPATH="$ROOT/.bench/site:$PYTHONPATH"
fi

REDIS_PORT="${CLIPMOD_BENCH_REDIS_PORT:-6399}"
# Carried packed (`make gpu-redis` writes both): a quarter of the bytes the slot sends over.
if [ ! -x .bench/redis/root/usr/bin/redis-server ] && [ -f .bench/redis.tar.xz ]; then
  tar xJf .bench/redis.tar.xz -C .bench
fi
if [ -x .bench/redis/root/usr/bin/redis-server ]; then
  REDIS=(env LD_LIBRARY_PATH="$ROOT/.bench/redis/lib" "$ROOT/.bench/redis/root/usr/bin/redis-server")
elif command -v redis-server >/dev/null; then
  REDIS=(redis-server)
else
  echo "no Redis: run 'make gpu-redis' and carry .bench/redis.tar.xz" >&2; exit 1
fi
stop_redis() { [ -f "$STATE/redis.pid" ] && kill "$(cat "$STATE/redis.pid")" 2>/dev/null || true; }
"${REDIS[@]}" --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no --daemonize yes \
  --pidfile "$ROOT/$STATE/redis.pid" --dir "$ROOT/$STATE" --logfile "$ROOT/$STATE/redis.log"
for _ in $(seq 50); do
  "$PY" -c "import redis; redis.Redis(port=$REDIS_PORT).ping()" 2>/dev/null && break; sleep 0.1
done
echo "Redis on $REDIS_PORT" >&2

PG_DIR=/tmp/clipmod-bench-pg DATABASE=""
if [ -f .bench/postgres.tar.xz ]; then
  if DATABASE=$(bench/gpu_postgres.sh start "$PG_DIR" "${CLIPMOD_BENCH_PG_PORT:-5439}"); then
    echo "PostgreSQL: $DATABASE" >&2
  else
    DATABASE=""; echo "note: PostgreSQL did not start (above): SQLite database, Redis broker" >&2
  fi
else
  echo "note: no .bench/postgres.tar.xz ('make gpu-postgres'): SQLite database, Redis broker" >&2
fi
stop_all() { stop_redis; [ -z "$DATABASE" ] || bench/gpu_postgres.sh stop "$PG_DIR" || true; }
trap stop_all EXIT
echo "setup: $(( $(date +%s) - started )) s" >&2

[ "$DEVICE" = cuda ] && "$PY" -c "import torch; print(torch.cuda.get_device_name(), torch.__version__)"
failed=0
step() {  # step NAME COMMAND...: output in $STATE/NAME.txt, its log in $STATE/NAME.log
  local name=$1; shift
  echo "== $name" >&2
  if "$@" 2>"$STATE/$name.log" | tee "$STATE/$name.txt"; then return 0; fi
  echo "$name failed; the end of $STATE/$name.log:" >&2; tail -c 3000 "$STATE/$name.log" >&2
  failed=1
}
STAND_IN=(); [ "$DEVICE" = cpu ] && STAND_IN=(--stand-in)
PIPELINE=("$PY" -m bench.pipeline --model "$MODEL" --device "$DEVICE" --batch "$BATCH"
  --bare-batches "$BARE_BATCHES" --broker "redis://127.0.0.1:$REDIS_PORT/0" --json)
[ -n "$DATABASE" ] && PIPELINE+=(--database "$DATABASE")
for s in $STEPS; do
  case "$s" in
    gpudecode)
      step gpudecode "$PY" -m bench.gpudecode --device "$DEVICE" --batch "$BATCH" \
        --images "$(( IMAGES < 2048 ? IMAGES : 2048 ))" --agree "$(( BATCH < 256 ? BATCH : 256 ))" \
        "${STAND_IN[@]}" --json ;;
    gpu-*)  # JPEGs decoded on the GPU, N worker processes sharing it
      step "e2e-$s" env CLIPMOD_GPU_JPEG=auto "${PIPELINE[@]}" --images "$IMAGES" \
        --workers "${s#gpu-}" ;;
    cpu-*)  # JPEGs decoded by the CPU decode processes, half the images
      step "e2e-$s" env CLIPMOD_GPU_JPEG=off "${PIPELINE[@]}" --images "$(( IMAGES / 2 ))" \
        --workers "${s#cpu-}" ;;
    *) echo "unknown step $s (gpudecode, gpu-N, cpu-N)" >&2; failed=1 ;;
  esac
done
echo "total: $(( $(date +%s) - started )) s; figures in $STATE/*.txt" >&2
exit "$failed"
