"""`clipmod submit`: a small HTTP client for trying the service by hand.

It talks to the API like any platform would (bearer key, JSON body), so it also shows a
newcomer what a real integration sends. Problems with a file are reported per file and the rest
are still sent: one unreadable path should not hide the verdicts of the others.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cli.common import load_settings
from cli.run import DEV_KEY_FILE

DEFAULT_URL = "http://127.0.0.1:8000"


def _api(url: str, key: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read() or b"{}"
        try:
            return exc.code, json.loads(raw)
        except json.JSONDecodeError:
            return exc.code, {"error": {"code": "http_error", "message": raw[:200].decode()}}
    except urllib.error.URLError as exc:
        raise SystemExit(
            f"clipmod: cannot reach {url}: {exc.reason} (is `clipmod up` running?)"
        ) from None


def _client_key(args: argparse.Namespace) -> str:
    key = args.key or os.environ.get("CLIPMOD_API_KEY")
    if not key:
        key_file = load_settings().data_dir / DEV_KEY_FILE
        if key_file.exists():
            key = key_file.read_text(encoding="utf-8").strip()
    if not key:
        sys.exit("clipmod: no API key: pass --key, set CLIPMOD_API_KEY, or run `clipmod up` first")
    return key


def _summary(path: str, item: dict[str, Any]) -> str:
    verdict = item.get("verdict")
    if verdict is None:
        err = item.get("error") or {}
        return f"{path}: {item['status']} {err.get('code', '')} {err.get('message', '')}".rstrip()
    cats = ", ".join(
        f"{c['id']}={c['score']:.3f}{'!' if c['action'] != 'allow' else ''}"
        for c in verdict["categories"]
    )
    policy = verdict["policy"]
    return f"{path}: {verdict['action'].upper()}  [{cats}]  ({policy['name']}@{policy['version']})"


def _body(path: str, args: argparse.Namespace) -> dict[str, Any]:
    """The JSON body for one file; a `ValueError` says in one line why it cannot be sent."""
    file = Path(path)
    if not file.exists():
        raise ValueError("no such file")
    if not file.is_file():
        raise ValueError("not a file (a directory?)")
    body: dict[str, Any] = {"external_id": args.prefix + file.name} if args.prefix else {}
    try:
        if args.text:
            body["text"] = file.read_text(encoding="utf-8")
        else:
            body["image_base64"] = base64.b64encode(file.read_bytes()).decode()
    except UnicodeDecodeError:
        raise ValueError("--text needs a UTF-8 text file; this one is binary") from None
    except OSError as exc:
        raise ValueError(exc.strerror or str(exc)) from None
    return body


def cmd_submit(args: argparse.Namespace) -> int:
    key = _client_key(args)
    base = args.url.rstrip("/")
    pending: dict[str, str] = {}
    failures = 0
    for path in args.paths:
        try:
            body = _body(path, args)
        except ValueError as exc:
            print(f"{path}: not sent: {exc}")
            failures += 1
            continue
        status, reply = _api(f"{base}/v1/items", key, "POST", body)
        if status not in (200, 202):
            err = reply.get("error", {})
            print(f"{path}: HTTP {status} {err.get('code')}: {err.get('message')}")
            failures += 1
            continue
        pending[reply["id"]] = path
        if not args.wait:
            print(f"{path}: {reply['status']} {reply['id']}")
    deadline = time.monotonic() + args.timeout
    while args.wait and pending and time.monotonic() < deadline:
        for item_id, path in list(pending.items()):
            _, item = _api(f"{base}/v1/items/{item_id}", key)
            if item.get("status") in ("scored", "failed"):
                print(_summary(path, item), flush=True)
                failures += item["status"] == "failed"
                del pending[item_id]
        time.sleep(0.2)
    for path in pending.values() if args.wait else ():
        print(f"{path}: still not scored after {args.timeout:.0f} s")
        failures += 1
    return 1 if failures else 0


def register(sub: Any) -> None:
    submit = sub.add_parser("submit", help="upload files and print their verdicts")
    submit.add_argument("paths", nargs="+", help="image files (or text files with --text)")
    submit.add_argument(
        "--url",
        default=os.environ.get("CLIPMOD_API_URL", DEFAULT_URL),
        help=f"API base URL (default $CLIPMOD_API_URL or {DEFAULT_URL})",
    )
    submit.add_argument(
        "--key", default=None, help="API key (default $CLIPMOD_API_KEY, then the dev key file)"
    )
    submit.add_argument("--wait", action="store_true", help="wait for and print verdicts")
    submit.add_argument(
        "--timeout", type=float, default=60, help="seconds to wait with --wait (default 60)"
    )
    submit.add_argument("--text", action="store_true", help="send the files' contents as text")
    submit.add_argument("--prefix", default="", help="use PREFIX+filename as external_id")
    submit.set_defaults(func=cmd_submit)
