"""Build the report: open each store read-only, compute what applies, render, write atomically.

A report covers one or more stores (the demo keeps CDNOW and MovieLens apart). For each store,
the sections that its data supports are computed and the others say what is missing: a store
of purchases without items gets no recommendation figures, a store of ratings no value
figures, and neither is an error. A section that fails for an unexpected reason is reported
in the page as well, so one broken model never costs the whole report.

Stores are opened read-only: a report never changes the data, and it can be built while other
read-only readers (a second report) use the same file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from valuerec.artifacts import default_root
from valuerec.data.store import Store, StoreError, deployment_path, is_url, redact
from valuerec.value.registry import MODELS as VALUE_MODELS

from . import sections
from .document import Section, StorePart
from .html import render
from .policy import policy_part, read_policy
from .recs import PeerRun, evaluate_recommenders, parse_models, read_peer
from .summary import summarise
from .value import NotApplicable, evaluate_models

__all__ = [
    "OutPathError",
    "ReportError",
    "ReportOptions",
    "build_report",
    "out_target",
    "write_report",
]

Step = Callable[[str], object]


class ReportError(RuntimeError):
    """The report cannot be built at all (no store at a path, unreadable peer file...)."""


class OutPathError(ReportError):
    """The report cannot be written where it was asked to be (``--out``)."""


@dataclass
class ReportOptions:
    """What to report on; ``None`` means the default of the command that owns the choice."""

    title: str = "valuerec report"
    value_model: str | None = None  # featured value model
    rec_models: str | None = None  # comma list of recommenders to evaluate
    peer: Path | None = None  # RecBole figures (benchmarks/peers JSON)
    policy: Path | None = None  # policy experiment record (benchmarks/value_policy.py --json)
    sections: tuple[str, ...] = field(default=("data", "value", "recommendations"))


def _guarded(sid: str, kind: str, title: str, make: Callable[[], Section]) -> Section:
    """Run one section's computation; what is missing or broken becomes a note, not a crash."""
    try:
        return make()
    except NotApplicable as exc:
        return sections.not_applicable(sid, kind, title, str(exc))
    except Exception as exc:  # the rest of the report is still worth having
        return sections.not_applicable(
            sid, kind, title, f"computing this section failed ({type(exc).__name__}: {exc})"
        )


def _store_part(path: str, options: ReportOptions, peer: list[PeerRun], step: Step) -> StorePart:
    if is_url(path):
        # a database's deployment name (DBNAME@HOST[_PORT][.SCHEMA]): the URL's tail named
        # every database on one server alike, and a password must not reach a shared file
        label = Path(deployment_path(path)).name
        sid = sections.slug(label)
    else:
        label = Path(path).name
        sid = sections.slug(Path(path).stem)
    root = str(default_root(path))
    try:
        store = Store(path, read_only=True)
    except StoreError as exc:
        raise ReportError(str(exc)) from None
    parts: list[Section] = []
    with store:
        step(f"{label}: data summary")
        summary = summarise(store)
        if "data" in options.sections:
            parts.append(
                _guarded(
                    f"{sid}-data",
                    "data",
                    "Data summary",
                    lambda: sections.data_section(sid, summary),
                )
            )
        if "value" in options.sections:
            parts.append(
                _guarded(
                    f"{sid}-value",
                    "value",
                    "Customer value",
                    lambda: sections.value_section(
                        sid,
                        evaluate_models(
                            store,
                            root,
                            featured=options.value_model,
                            step=lambda s: step(f"{label}: {s}"),
                        ),
                    ),
                )
            )
        if "recommendations" in options.sections:
            parts.append(
                _guarded(
                    f"{sid}-recommendations",
                    "recommendations",
                    "Recommendations",
                    lambda: sections.recommendations_section(
                        sid,
                        evaluate_recommenders(
                            store,
                            root,
                            models=options.rec_models,
                            peer=peer,
                            step=lambda s: step(f"{label}: {s}"),
                        ),
                    ),
                )
            )
    return StorePart(sid, label, redact(path), parts)


def build_report(
    dbs: Sequence[str | os.PathLike[str]],
    options: ReportOptions | None = None,
    step: Step = lambda _: None,
) -> str:
    """The HTML report of the stores at ``dbs`` (at least one, unless ``options.policy``
    names a policy record: then the report may be that section alone), as a string.

    Raises:
        ReportError: a path holds no store, a store cannot be opened, the peer or policy file
            is unreadable, or a recommender name is unknown.
    """
    options = options or ReportOptions()
    paths = [str(p) for p in dbs]
    if not paths and options.policy is None:
        raise ReportError("no store given")
    for p in paths:
        if "://" not in p and not Path(p).is_file():  # a database URL is checked on opening
            raise ReportError(f"no store at {p}")
    try:
        parse_models(options.rec_models)
        if options.value_model is not None:
            # normalised once, here: the check below and the featured-model lookup in
            # evaluate_models both compare it with registry names, and every other model
            # option (`value segments --model`, `--rec-models`) takes them in any case
            name = options.value_model.strip().lower()
            if name not in VALUE_MODELS:
                # a name no value model has is a typo, not "a model that was not scored here"
                raise ValueError(
                    f"unknown value model {options.value_model!r}; choose from "
                    f"{', '.join(VALUE_MODELS)}"
                )
            options = replace(options, value_model=name)
        peer = read_peer(options.peer) if options.peer is not None else []
        policy = read_policy(options.policy) if options.policy is not None else None
    except ValueError as exc:
        raise ReportError(str(exc)) from None
    parts = []
    ours = policy_part(policy, str(options.policy)) if policy is not None else None
    # every HTML id once in the page: a store's ids must not repeat the policy part's (a store
    # named policy.duckdb), another store's (the same file name twice), or another store's
    # sections' ("shop" has a section "shop-data", which a store shop-data.duckdb would be)
    used: set[str] = set(_ids(ours)) if ours is not None else set()
    for path in paths:
        part = _store_part(path, options, peer, step)
        base, n = part.id, 1
        while used & set(_ids(part)):
            n += 1
            part = _renamed(part, f"{base}-{n}")
        used |= set(_ids(part))
        parts.append(part)
    if ours is not None:
        step("policy section")
        parts.append(ours)
    step("rendering")
    return render(options.title, parts, datetime.now(UTC))


def _ids(part: StorePart) -> list[str]:
    """Every HTML id of a part: its own, its sections' and their blocks'."""

    def walk(s: Section) -> list[str]:
        return [s.id, *(b.id for b in s.blocks), *(i for c in s.children for i in walk(c))]

    return [part.id, *(i for s in part.sections for i in walk(s))]


def _renamed(part: StorePart, new_id: str) -> StorePart:
    """The same part with every id prefix ``part.id`` replaced (rare: equal file names)."""

    def fix(s: Section) -> None:
        s.id = new_id + s.id[len(part.id) :]
        for b in s.blocks:
            b.id = new_id + b.id[len(part.id) :]
        for c in s.children:
            fix(c)

    for s in part.sections:
        fix(s)
    return StorePart(new_id, part.label, part.path, part.sections)


def out_target(
    out: str | os.PathLike[str], what: str = "the report", example: str = "report.html"
) -> Path:
    """The absolute path to write ``what`` to, checked without writing anything (also
    ``value predict`` / ``value segments --out``; ``example``: a file name to suggest).

    A folder, or a path below a file, can never be written: say so before the stores are
    evaluated (minutes on a large store), not after. Missing folders are fine, they are made
    when the report is written.

    Raises:
        OutPathError: ``out`` is a directory, or an existing part of its folder is not one.
    """
    target = Path(out).expanduser().resolve()
    if target.is_dir():
        raise OutPathError(
            f"cannot write {what} to {target}: it is a directory "
            f"(give a file's path, such as {target / example})"
        )
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutPathError(f"cannot write {what} to {target}: {folder} is not a directory")
    return target


def write_report(
    dbs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    options: ReportOptions | None = None,
    step: Step = lambda _: None,
) -> Path:
    """Build the report and write it to ``out`` atomically; returns the absolute path.

    Written to a temporary file beside ``out`` and renamed into place, so a browser that has
    the old report open never reads half a new one. Missing folders of ``out`` are made.

    Raises:
        OutPathError: ``out`` is a directory, lies below a file (both found before any store
            is read), or writing it failed (permissions, a full disk...).
        ReportError: see :func:`build_report`.
    """
    started = time.perf_counter()
    target = out_target(out)
    html = build_report(dbs, options, step)
    # not mkstemp: its 0600 mode would keep the report from the people it is written for
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(html)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # a read-only folder, a full disk: no traceback
            raise OutPathError(
                f"cannot write the report to {target}: {exc.strerror or exc}"
            ) from None
        raise
    step(f"written in {time.perf_counter() - started:.1f} s")
    return target
