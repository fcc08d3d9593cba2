"""The wheels a bare GPU machine lacks to run the worker and `bench.pipeline`, for Python 3.12.

The GPU image brings torch, transformers and their own dependencies but none of the service's
(see /work/shared/environment.md); it has no network, so `make gpu-wheels` downloads the rest
here, pinned to the versions this virtualenv runs, into `.bench/wheels`, and `bench/gpu.sh`
installs them there with `--no-index --no-deps`. The closure is computed from the installed
metadata, so a dependency added to pyproject.toml travels without editing a list.
Run: `python -m bench.gpu_wheels [--dest DIR]`.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib import metadata

# On the GPU image already (with torch/transformers), or large: never shadowed by a wheel.
PRESENT_THERE = {
    "torch", "triton", "transformers", "tokenizers", "safetensors", "huggingface-hub", "hf-xet",
    "numpy", "pillow", "sympy", "mpmath", "networkx", "fsspec", "filelock",
    "setuptools", "regex", "requests", "urllib3", "idna", "certifi",
    "charset-normalizer", "pyyaml", "tqdm", "packaging", "typer", "shellingham", "rich",
    "markdown-it-py", "mdurl", "pygments", "httpx", "httpcore", "anyio", "h11", "sniffio",
    "annotated-doc",
}  # fmt: skip
ROOTS = ["clipmod"]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure() -> dict[str, str]:
    """name → installed version for every runtime dependency of the project, transitively."""
    seen: dict[str, str] = {}
    todo = list(ROOTS)
    while todo:
        name = _norm(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency's marker did not apply here
        seen[name] = dist.version
        for req in dist.requires or []:
            if "extra ==" in req and 'extra == "binary"' not in req:
                continue  # extras are not installed, except psycopg[binary]
            todo.append(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0])
    seen.pop("clipmod", None)
    return {
        n: v
        for n, v in sorted(seen.items())
        if n not in PRESENT_THERE and not n.startswith("nvidia-")
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", default=".bench/wheels")
    parser.add_argument("--list", action="store_true", help="print the pins, download nothing")
    args = parser.parse_args(argv)
    pins = [f"{n}=={v}" for n, v in closure().items()]
    if args.list:
        print("\n".join(pins))
        return 0
    platforms = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", "3.12", "--implementation", "cp", "-d", args.dest]
    for p in platforms:
        cmd += ["--platform", p]
    return subprocess.call(cmd + pins)


if __name__ == "__main__":
    sys.exit(main())
