"""A GPU worker's host thread pools (`workers.service.limit_host_threads`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_a_gpu_worker_keeps_one_host_thread_per_pool() -> None:
    """In a fresh process, as the worker starts: BLAS, OpenMP and torch each left one thread."""
    code = (
        "import json, numpy, torch\n"
        "from threadpoolctl import threadpool_info\n"
        "from workers.service import limit_host_threads\n"
        "def pools(): return sorted({p['num_threads'] for p in threadpool_info()})\n"
        "before = [torch.get_num_threads(), pools()]\n"
        "limit_host_threads()\n"
        "print(json.dumps([before, [torch.get_num_threads(), pools()]]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    before, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert after == [1, [1]]
    if (os.cpu_count() or 1) > 1:  # the limit changed something: each pool had a thread per core
        assert before[0] > 1 and max(before[1]) > 1, before
