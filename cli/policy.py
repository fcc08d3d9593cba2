"""`clipmod policy …`: publish, activate, inspect, lint, backtest, shadow runs and suggest.

Every command opens the database from `CLIPMOD_*` settings; lint, backtest and suggest also load
the worker's model (`CLIPMOD_MODEL`), only to embed prompts: stored traffic is re-scored from
its saved embeddings. Heavy imports happen inside the commands, so `clipmod --help` stays fast.

Exit status: 0 success; 2 an invalid policy (each problem printed as
`file:line:col field: message`) or any other refused request (`clipmod: code: message`);
`lint` also returns 1 for warnings under `--strict` (see `clipmod.policy.lint`).
"""

from __future__ import annotations

import argparse
import functools
import getpass
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cli.common import database, guarded, load_runtime, load_settings, print_json
from clipmod.errors import ClipmodError
from clipmod.models import ItemEmbedding, PolicyVersion
from clipmod.policy import ship, versions
from clipmod.policy.loader import load_policy_file
from clipmod.settings import Settings


def _since(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date/time: {text!r}") from None


@contextmanager
def _progress(session: Session, revision: str, desc: str) -> Iterator[Callable[[int], None]]:
    """A tqdm bar on stderr over the stored embeddings a job reads (silent when not a TTY)."""
    from tqdm import tqdm

    total = session.scalar(
        select(func.count())
        .select_from(ItemEmbedding)
        .where(ItemEmbedding.model_revision == revision)
    )
    with tqdm(
        total=total, desc=desc, unit="item", file=sys.stderr, leave=False, disable=None
    ) as bar:
        yield bar.update


def _store(settings: Settings, revision: str) -> Any:
    """The traffic store the analysis commands read (synced from SQL first)."""
    from clipmod.traffic.sync import TrafficStore

    return TrafficStore(settings.traffic_dir, revision)


def _scopes(where: list[dict[str, Any]]) -> str:
    return "; ".join(f"{w['mode']}: {w['tenant'] or 'everyone'}" for w in where) or "-"


# -- versions ---------------------------------------------------------------------------------


def _actor(args: argparse.Namespace) -> ship.Actor:
    return ship.Actor(args.author or f"cli:{getpass.getuser()}")


def _activate(session: Session, version: PolicyVersion, args: argparse.Namespace) -> str:
    done = ship.activate(
        session, version, actor=_actor(args), tenant_names=args.tenant or [], shadow=args.shadow
    )
    scope = ", ".join(done.tenants) or "everyone"
    return f"{version.label} is now {done.mode.value} for {scope}"


@guarded
def cmd_publish(args: argparse.Namespace) -> int:
    _, text = load_policy_file(args.file)
    with database(load_settings()) as session:
        published = ship.publish(session, text, actor=_actor(args), source=args.file)
        version = published.version
        if published.created:
            parent = session.get(PolicyVersion, version.parent_id) if version.parent_id else None
            print(
                f"published {version.label} (id {version.id}"
                + (f", parent {parent.label})" if parent else ")")
            )
        else:
            print(f"{version.label} is already published with this exact content (id {version.id})")
        if not args.no_activate:
            print(_activate(session, version, args))
    return 0


@guarded
def cmd_activate(args: argparse.Namespace) -> int:
    with database(load_settings()) as session:
        version = versions.get_version(session, args.ref)
        print(_activate(session, version, args))
    return 0


@guarded
def cmd_shadow_stop(args: argparse.Namespace) -> int:
    with database(load_settings()) as session:
        stopped = ship.stop_shadow(session, actor=_actor(args), tenant_names=args.tenant or [])
    scope = ", ".join(args.tenant or []) or "everyone"
    print(f"stopped the shadow run of {', '.join(stopped)} for {scope}")
    return 0


@guarded
def cmd_list(args: argparse.Namespace) -> int:
    with database(load_settings()) as session:
        rows = versions.all_versions(session)
        where = versions.activations_by_version(session)
        if args.json:
            print_json({"versions": [versions.version_json(v, where.get(v.id, [])) for v in rows]})
            return 0
        for v in rows:
            print(
                f"{v.label:<24} id {v.id:<5} {v.created_at:%Y-%m-%d %H:%M}  {v.author:<20} "
                f"{_scopes(where.get(v.id, []))}"
            )
    return 0


@guarded
def cmd_show(args: argparse.Namespace) -> int:
    with database(load_settings()) as session:
        version = versions.get_version(session, args.ref)
        where = versions.activations_by_version(session).get(version.id, [])
        if args.json:
            print_json(versions.version_json(version, where, yaml_text=True))
            return 0
        print(f"# {version.label} (id {version.id}) by {version.author} at {version.created_at}")
        print(f"# sha256 {version.content_hash}; in force: {_scopes(where)}")
        print(version.yaml_text, end="" if version.yaml_text.endswith("\n") else "\n")
    return 0


# -- analysis ---------------------------------------------------------------------------------


@guarded
def cmd_lint(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from clipmod.policy import lint, validate
    from clipmod.policy.loader import PolicyError, parse_policy, read_policy_file

    text = read_policy_file(args.file)
    parse_policy(text, source=args.file)  # an invalid file fails before the model loads
    settings = load_settings()
    runtime = None if args.no_model else load_runtime(settings)
    run = functools.partial(
        validate.check,
        text,
        runtime=runtime,
        model_name=settings.model,
        source=args.file,
        near_duplicate=args.near_duplicate,
        store=_store(settings, runtime.revision) if runtime is not None else None,
    )
    try:
        with database(settings) as session:
            result = run(session=session)
    except SQLAlchemyError as exc:  # no database yet: lint what can be linted without one
        print(f"clipmod: database unavailable, traffic checks skipped ({exc})", file=sys.stderr)
        result = run()
    if result.problems:
        raise PolicyError(result.problems)
    findings = result.findings
    status = lint.exit_status(findings, strict=args.strict)
    errors = sum(f.severity == "error" for f in findings)
    if args.json:
        print_json(
            {
                "findings": [f.to_dict() for f in findings],
                "errors": errors,
                "warnings": len(findings) - errors,
                "status": status,
            }
        )
        return status
    for f in findings:
        print(f)
    print(f"{errors} errors, {len(findings) - errors} warnings", file=sys.stderr)
    return status


@guarded
def cmd_backtest(args: argparse.Namespace) -> int:
    from clipmod.policy import backtest

    policy, _ = load_policy_file(args.file)
    settings = load_settings()
    runtime = load_runtime(settings)
    with database(settings) as session:
        against = versions.get_version(session, args.against) if args.against else None
        with _progress(session, runtime.revision, "backtest") as progress:
            report = backtest.backtest(
                session,
                policy,
                runtime,
                draft_label=args.file,
                since=args.since,
                against=against,
                examples=args.examples,
                progress=progress,
                store=_store(settings, runtime.revision),
            )
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.render())
    return 0


@guarded
def cmd_shadow_report(args: argparse.Namespace) -> int:
    from clipmod.policy import shadow

    with database(load_settings()) as session:
        version = versions.get_version(session, args.version) if args.version else None
        report = shadow.shadow_report(
            session, version=version, since=args.since, examples=args.examples
        )
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.render())
    return 0


def _pick(value: float | None, quality: dict[str, float] | None) -> str:
    if value is None or quality is None:
        return "-"
    return f"{value} (P {quality['precision']:.2f} R {quality['recall']:.2f})"


@guarded
def cmd_suggest(args: argparse.Namespace) -> int:
    from clipmod.policy import suggest

    settings = load_settings()
    runtime = load_runtime(settings)
    with database(settings) as session:
        row = versions.get_version(session, args.policy) if args.policy else None
        row = row or versions.resolve(session, None)
        if row is None:
            raise ClipmodError("no active policy version; name one with --policy", code="no_policy")
        with _progress(session, runtime.revision, "suggest") as progress:
            report = suggest.suggest(
                session,
                versions.load(row),
                runtime,
                policy_label=row.label,
                target_precision=args.target_precision,
                review_precision=args.review_precision,
                progress=progress,
                store=_store(settings, runtime.revision),
            )
    if args.json:
        print_json(report.to_dict())
        return 0
    print(
        f"{report.policy}: {report.labelled_items} labelled items; block_at at precision "
        f"≥ {report.target_precision}, review_at at precision ≥ {report.review_precision}"
    )
    for s in report.categories:
        print(
            f"  {s.id:<20} review_at {s.current['review_at']} -> "
            f"{_pick(s.review_at, s.review_quality)}  block_at {s.current['block_at']} -> "
            f"{_pick(s.block_at, s.block_quality)}" + (f"  [{s.note}]" if s.note else "")
        )
    return 0


# -- parser -------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add `policy` and its subcommands to the `clipmod` parser."""
    policy = subparsers.add_parser("policy", help="versioned moderation policies")
    sub = policy.add_subparsers(dest="policy_cmd", required=True)

    def scoped(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tenant", action="append", help="only for this tenant (repeatable)")
        p.add_argument("--author", default=None, help="recorded as who did it")

    publish = sub.add_parser("publish", help="validate and store a new version; activate it")
    publish.add_argument("file", help="the policy YAML file")
    scoped(publish)
    mode = publish.add_mutually_exclusive_group()
    mode.add_argument("--no-activate", action="store_true", help="store only")
    mode.add_argument("--shadow", action="store_true", help="activate in shadow mode")
    publish.set_defaults(func=cmd_publish)

    activate = sub.add_parser("activate", help="put a version in force (rollback: an older one)")
    activate.add_argument("ref", help="name@N or version id")
    scoped(activate)
    activate.add_argument("--shadow", action="store_true", help="as the shadow version")
    activate.set_defaults(func=cmd_activate)

    lst = sub.add_parser("list", help="every version and where it is in force")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.set_defaults(func=cmd_list)

    show = sub.add_parser("show", help="one version's text and metadata")
    show.add_argument("ref", help="name@N or version id")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=cmd_show)

    lint = sub.add_parser("lint", help="find likely mistakes (exit 2 errors, 1 --strict warnings)")
    lint.add_argument("file", help="the policy YAML file")
    lint.add_argument("--json", action="store_true", help="machine-readable output")
    lint.add_argument("--strict", action="store_true", help="exit 1 on warnings")
    lint.add_argument("--no-model", action="store_true", help="skip checks that need the model")
    lint.add_argument(
        "--near-duplicate",
        type=float,
        default=0.95,
        metavar="COS",
        help="prompt cosine that counts as a near-duplicate (default 0.95)",
    )
    lint.set_defaults(func=cmd_lint)

    bt = sub.add_parser("backtest", help="re-score stored traffic: draft vs the active version")
    bt.add_argument("file", help="the policy YAML file")
    bt.add_argument("--since", type=_since, default=None, help="only items created since (ISO)")
    bt.add_argument("--against", default=None, help="compare with this version, not the active")
    bt.add_argument("--examples", type=int, default=5, help="example item ids per transition")
    bt.add_argument("--json", action="store_true", help="machine-readable output")
    bt.set_defaults(func=cmd_backtest)

    stop = sub.add_parser("shadow-stop", help="end a shadow run (for everyone, or --tenant)")
    scoped(stop)
    stop.set_defaults(func=cmd_shadow_stop)

    sr = sub.add_parser("shadow-report", help="shadow verdicts vs the real ones")
    sr.add_argument("--version", default=None, help="only this shadow version (name@N or id)")
    sr.add_argument(
        "--since", type=_since, default=None, help="only verdicts since (ISO date/time)"
    )
    sr.add_argument("--examples", type=int, default=5, help="example item ids per change")
    sr.add_argument("--json", action="store_true", help="machine-readable output")
    sr.set_defaults(func=cmd_shadow_report)

    sg = sub.add_parser("suggest", help="thresholds from moderator decisions")
    sg.add_argument("--target-precision", type=float, default=0.95, help="for block_at")
    sg.add_argument("--review-precision", type=float, default=0.5, help="floor for review_at")
    sg.add_argument("--policy", default=None, help="version to tune (default: the active one)")
    sg.add_argument("--json", action="store_true", help="machine-readable output")
    sg.set_defaults(func=cmd_suggest)
