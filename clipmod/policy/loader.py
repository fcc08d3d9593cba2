"""Parse policy YAML into a `Policy`, with errors that point at file:line:column.

Editors fix a policy from the error message alone, so every problem names where it is and which
field it concerns, e.g. `policies/x.yaml:14:9 categories[2].block_at: must be ≥ review_at`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from clipmod.errors import ClipmodError
from clipmod.policy.schema import Policy

# The largest policy text: the demo policy is 14 KB, and 64 categories of 256 prompts each fit
# in well under this. A bigger text is a paste of something else; refusing it before YAML
# parsing keeps a 5 MB paste from costing a parse on every keystroke of the editor.
MAX_POLICY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Problem:
    source: str
    line: int
    column: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}:{self.column}"
        return f"{where} {self.field}: {self.message}" if self.field else f"{where} {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "line": self.line,
            "column": self.column,
            "field": self.field,
            "message": self.message,
        }


class PolicyError(ClipmodError):
    """A policy that does not parse or validate; carries every problem found."""

    code, status = "invalid_policy", 422

    def __init__(self, problems: list[Problem]):
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["error"]["problems"] = [p.to_dict() for p in self.problems]  # type: ignore[assignment]
        return body


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def node_at(
    root: yaml.Node | None, loc: tuple[int | str, ...], *, key: bool = False
) -> yaml.Node | None:
    """Walk the YAML node tree along a pydantic error location.

    Returns the deepest node reached: the value's node, or with `key` the last key's node (an
    unknown key is best pointed at by its name). A missing key points at its parent mapping.
    """
    node = root
    for i, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == part), None)
            if pair is None:
                return node
            node = pair[0] if key and i == len(loc) - 1 else pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return node
            node = node.value[part]
        else:
            return node
    return node


def _problems_from(exc: ValidationError, root: yaml.Node | None, source: str) -> list[Problem]:
    problems = []
    for err in exc.errors():
        # Drop pydantic's union/type tags such as `function-after[...]` from the location.
        loc = tuple(p for p in err["loc"] if isinstance(p, int) or "[" not in str(p))
        message = str(err["msg"]).removeprefix("Value error, ")
        field = _field_path(loc)
        if ": " in message:
            # Model-level validators name their own field: "block_at: must be ≥ review_at".
            head, _, rest = message.partition(": ")
            if head.replace("_", "").replace(".", "").isalnum():
                field = f"{field}.{head}" if field else head
                loc = (*loc, *head.split("."))
                message = rest
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        node = node_at(root, loc, key=err["type"] == "extra_forbidden")
        mark = node.start_mark if node is not None else None
        problems.append(
            Problem(
                source=source,
                line=(mark.line + 1) if mark else 1,
                column=(mark.column + 1) if mark else 1,
                field=field,
                message=message,
            )
        )
    return problems


def _size(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB" if n >= 100_000 else f"{n:,} bytes"


def text_bytes(text: str) -> int:
    """The text's size in UTF-8 (lone surrogates, which JSON can carry, counted too)."""
    return len(text.encode("utf-8", errors="surrogatepass"))


def check_size(text: str, source: str = "<policy>") -> None:
    """Refuse a text over `MAX_POLICY_BYTES` with one problem at its start."""
    size = text_bytes(text)
    if size > MAX_POLICY_BYTES:
        raise PolicyError(
            [
                Problem(
                    source,
                    1,
                    1,
                    "",
                    f"the policy is {_size(size)}; the limit is {MAX_POLICY_BYTES / 2**20:g} MiB "
                    f"({MAX_POLICY_BYTES:,} bytes): was something else pasted?",
                )
            ]
        )


def problem_at(text: str, source: str, loc: tuple[int | str, ...], message: str) -> Problem:
    """A problem found after validation (e.g. against the database), positioned like the rest."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        root = None
    node = node_at(root, loc)
    mark = node.start_mark if node is not None else None
    line, column = ((mark.line + 1), (mark.column + 1)) if mark else (1, 1)
    return Problem(source, line, column, _field_path(loc), message)


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Validate YAML text; raise `PolicyError` listing every problem with its position."""
    check_size(text, source)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        return_line = (mark.line + 1) if mark else 1
        column = (mark.column + 1) if mark else 1
        raise PolicyError(
            [Problem(source, return_line, column, "", f"YAML syntax: {exc.problem}")]
        ) from None
    except yaml.YAMLError as exc:  # e.g. a control character: the reader refuses the text
        reason = str(getattr(exc, "reason", exc)).splitlines()[0]
        raise PolicyError([Problem(source, 1, 1, "", f"YAML: {reason}")]) from None
    if not isinstance(data, dict):
        raise PolicyError([Problem(source, 1, 1, "", "a policy must be a YAML mapping")])
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(_problems_from(exc, root, source)) from None


def read_policy_file(path: str | Path) -> str:
    """A policy file's exact text (it is what gets versioned), or a `PolicyError` saying why not."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([Problem(str(path), 1, 1, "", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise PolicyError([Problem(str(path), 1, 1, "", f"not UTF-8 text: {exc.reason}")]) from None


def load_policy_file(path: str | Path) -> tuple[Policy, str]:
    """Read and validate a policy file; returns the policy and its exact text (for versioning)."""
    text = read_policy_file(path)
    return parse_policy(text, source=str(path)), text
