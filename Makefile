# clipmod: `make help` lists the targets. Everything runs from a local virtualenv (.venv) that
# the first target to need it creates from pyproject.toml's pinned dependencies.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
export HF_HUB_OFFLINE ?= 1

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: an unpinned resolve would fetch a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed ## create .venv with the pinned dependencies

run: venv ## run the whole service on the embedded default (SQLite + embedded broker)
	$(BIN)/clipmod up --port $(PORT)

lint: venv ## ruff (lint + format check) and mypy on the domain package
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: venv lint ## lint, then every test incl. both end-to-end configurations
	.ci/services start
	set -o pipefail; source var/ci/env && $(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	  .ci/services stop; exit $$rc

test-fast: venv ## unit and API tests only (no worker processes, no servers)
	$(BIN)/pytest -m "not e2e" $(PYTEST_ARGS)

# Intake runs first: the others delete their stores when done (hundreds of thousands of files),
# and a journal-less ext4 (our VMs') then makes every new file slow to create for up to six
# minutes, which intake's blob writes would measure (docs/benchmarks.md, "The file system").
bench: venv ## benchmarks: intake/bare + idle latency, pipeline vs bare forward (Redis + PostgreSQL, and embedded), 1M-item backtest + store rebuild, bank overhead, policy editor
	.ci/services start
	set -o pipefail; source var/ci/env && $(BIN)/python -m bench.intake && \
	  $(BIN)/python -m bench.pipeline --model bundled \
	  --broker $$CLIPMOD_TEST_REDIS_URL --database $$CLIPMOD_TEST_PG_URL; rc=$$?; .ci/services stop; exit $$rc
	$(BIN)/python -m bench.pipeline
	$(BIN)/python -m bench.backtest --rebuild
	$(BIN)/python -m bench.banks
	$(BIN)/python -m bench.editor

gpu-wheels: venv ## wheels (Python 3.12) a bare GPU machine lacks, into .bench/wheels (bench/gpu.sh)
	$(BIN)/python -m bench.gpu_wheels --dest .bench/wheels

REDIS_LIBS := libatomic libsystemd libcap libgcrypt libgpg-error liblz4 libzstd liblzma libssl libcrypto
gpu-redis: ## Debian's redis-server unpacked with its libraries into .bench/redis (bench/gpu.sh)
	rm -rf .bench/redis && mkdir -p .bench/redis/debs .bench/redis/root .bench/redis/lib
	cd .bench/redis/debs && apt-get download redis-server redis-tools libjemalloc2 liblzf1
	for deb in .bench/redis/debs/*.deb; do dpkg -x $$deb .bench/redis/root; done
	cp -L .bench/redis/root/usr/lib/x86_64-linux-gnu/*.so.* .bench/redis/lib/
	for lib in $(REDIS_LIBS); do cp -L /lib/x86_64-linux-gnu/$$lib.so.* .bench/redis/lib/; done
	rm -rf .bench/redis/debs
	LD_LIBRARY_PATH=.bench/redis/lib .bench/redis/root/usr/bin/redis-server --version
	tar cJf .bench/redis.tar.xz -C .bench redis  # what travels: a quarter of the bytes

PG15 := /usr/lib/postgresql/15
# glibc's own libraries stay the machine's: a foreign copy breaks against its libc.
PG_GLIBC := /(libc|libm|libmvec|libpthread|libdl|librt|libresolv|libutil|libanl|ld-linux-x86-64)\.so
gpu-postgres: ## this machine's PostgreSQL 15 with its libraries, into .bench/postgres.tar.xz (bench/gpu_postgres.sh)
	@[ -x $(PG15)/bin/postgres ] || { echo "need PostgreSQL 15 in $(PG15) (apt-get install postgresql-15)"; exit 1; }
	rm -rf .bench/postgres .bench/postgres.tar.xz
	mkdir -p .bench/postgres/root$(PG15)/bin .bench/postgres/root/usr/share/postgresql .bench/postgres/lib/gcc
	cp -L $(PG15)/bin/postgres $(PG15)/bin/initdb $(PG15)/bin/pg_ctl .bench/postgres/root$(PG15)/bin/
	# Every module (plpgsql, dict_snowball, conversions, contrib) but the LLVM JIT: libLLVM alone
	# is ~100 MB and the server runs with jit=off. The man pages are left behind too.
	cp -rL $(PG15)/lib .bench/postgres/root$(PG15)/
	rm -rf .bench/postgres/root$(PG15)/lib/{bitcode,llvmjit.so,llvmjit_types.bc}
	cp -rL /usr/share/postgresql/15 .bench/postgres/root/usr/share/postgresql/
	rm -rf .bench/postgres/root/usr/share/postgresql/15/man
	for tz in UTC Etc/UTC; do [ ! -e /usr/share/zoneinfo/$$tz ] || \
	  install -D -m 644 /usr/share/zoneinfo/$$tz .bench/postgres/root/usr/share/zoneinfo/$$tz; done
	set -o pipefail; ldd .bench/postgres/root$(PG15)/bin/* .bench/postgres/root$(PG15)/lib/*.so \
	  | awk '/ => not found/ {print "missing: " $$1 > "/dev/stderr"; bad=1} / => \// {print $$3} END {exit bad}' \
	  | sort -u | grep -vE '$(PG_GLIBC)' | xargs cp -L -t .bench/postgres/lib/
	# libstdc++ and libgcc_s (for ICU) want glibc 2.36, the rest 2.34: they go in lib/gcc, which
	# gpu_postgres.sh drops (using the machine's own) where ours do not load.
	mv .bench/postgres/lib/libstdc++.so.* .bench/postgres/lib/libgcc_s.so.* .bench/postgres/lib/gcc/
	LD_LIBRARY_PATH=.bench/postgres/lib:.bench/postgres/lib/gcc .bench/postgres/root$(PG15)/bin/postgres --version
	tar -C .bench/postgres --owner=0 --group=0 --numeric-owner -cf - root lib | xz -T0 -6 > .bench/postgres.tar.xz
	rm -rf .bench/postgres
	@ls -l .bench/postgres.tar.xz

eval: venv ## evaluate the bundled demo model and policy
	$(BIN)/clipmod eval

train-demo: venv ## retrain the bundled demo model from scratch (~25 min on 2 CPU cores)
	$(BIN)/python -m clipmod.demo.train --out clipmod/assets/demo-clip

reproduce-demo: venv ## retrain into a temp folder; fail if eval moves > 2 points from the committed model
	$(BIN)/python -m clipmod.demo.reproduce

migration: venv ## autogenerate a migration: make migration m="add column x"
	d=$$(mktemp -d); CLIPMOD_DATA_DIR=$$d $(BIN)/alembic upgrade head && \
	  CLIPMOD_DATA_DIR=$$d $(BIN)/alembic revision --autogenerate -m "$(m)"

screenshots: venv ## the README's dashboard and policy-editor screenshots (docs/*.png), from a running app with demo data
	$(BIN)/python -m tests.dashboard.screenshots docs

editor-assets: ## rebuild the policy editor's vendored CodeMirror bundle (needs node + npm)
	tools/build-editor.sh

clean: ## remove the virtualenv and local data (var/)
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache

.PHONY: help venv run lint test test-fast bench gpu-wheels gpu-redis gpu-postgres eval train-demo reproduce-demo migration screenshots editor-assets clean
