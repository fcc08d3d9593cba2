"""Plumbing every subcommand shares: settings, logging, a database session, error reporting.

Expected failures (a bad setting, an invalid policy, a refused request) become one line on
stderr and exit status 2, never a traceback: a person typed the command and needs to know what
to change.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from clipmod import settings as settings_mod
from clipmod.errors import ClipmodError
from clipmod.settings import Settings

Handler = Callable[[argparse.Namespace], int]


def setup_logging(level: str, fmt: str = "text", flush_s: float = 0.0) -> None:
    from clipmod import logs

    logs.setup(level, fmt, flush_s)


def load_settings() -> Settings:
    try:
        return settings_mod.load()
    except settings_mod.SettingsError as exc:
        sys.exit(f"clipmod: {exc}")


def guarded(handler: Handler) -> Handler:
    """Expected failures become messages and exit status 2, never a traceback."""
    from clipmod.policy.loader import PolicyError

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except PolicyError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            return 2
        except ClipmodError as exc:
            print(f"clipmod: {exc.code}: {exc.message}", file=sys.stderr)
            return 2
        except settings_mod.SettingsError as exc:
            print(f"clipmod: {exc}", file=sys.stderr)
            return 2

    return run


@contextmanager
def database(settings: Settings) -> Iterator[Session]:
    """One transaction on a short-lived engine: commands are one-shot processes."""
    from clipmod.db import make_engine, make_sessionmaker, transaction

    engine = make_engine(settings.database_url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            yield session
    finally:
        engine.dispose()


def load_runtime(settings: Settings) -> Any:
    from clipmod.runtime import ClipRuntime

    return ClipRuntime.load(settings.model, settings.device)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))
