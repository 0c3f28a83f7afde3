"""``valuerec recommend ...``: evaluate recommenders, fit and save them, recommend, find similar.

``evaluate`` splits the store's interactions with one of the shared protocols and scores every
model with the one ranking evaluator; ``fit`` trains on everything and saves versioned
artifacts (``rec-<model>``) that ``for`` and ``similar`` load. ``for`` explains each item with
the item from the user's history it is most similar to.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from rich.text import Text

from valuerec.artifacts import ArtifactStore, data_fingerprint, default_root
from valuerec.cli_common import (
    DataTable,
    DbOption,
    JsonOption,
    fail,
    load_saved,
    open_store,
    out,
    print_json,
    progress,
    say_error,
    warn,
)
from valuerec.data.schema import one_id
from valuerec.data.store import Store, default_db_path, redact
from valuerec.evaluate.ranking import Interactions, interest_types, protocol_split
from valuerec.recommend.base import Recommender
from valuerec.recommend.explain import because, item_titles
from valuerec.recommend.registry import MODELS, fit_and_evaluate, make_recommender
from valuerec.recommend.rerank import candidate_pool, look_types
from valuerec.serve.config import CONFIG_ENV, ServeSettings, model_name
from valuerec.serve.repository import Repository
from valuerec.serve.schemas import MAX_VALUE_WEIGHT
from valuerec.serve.state import Histories

recommend_app = typer.Typer(
    help="Recommenders: evaluate, fit and save, recommend for a user, similar items.",
    no_args_is_help=True,
    add_completion=False,
)
PREFIX = "rec-"
ModelsOption = Annotated[str, typer.Option("--models", help=f"Comma list of {', '.join(MODELS)}.")]
ModelOption = Annotated[str, typer.Option("--model", help=f"One of {', '.join(MODELS)}.")]
KOption = Annotated[int, typer.Option("-k", "--k", min=1, help="Number of items.")]
EventTypesOption = Annotated[
    str | None,
    typer.Option(
        "--event-types",
        help="Comma list of event types that count as interactions; default: every type but "
        "exposures and dislikes (the serving settings' default roles, as `valuerec train`).",
    ),
]

#: as `valuerec serve --config` (and `train`): the same file, read by the same loader
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar=CONFIG_ENV,
        help="Serving settings (TOML or JSON) whose event roles say what a user's history, "
        "dislikes and looks are, as `valuerec serve --config`; default: the default roles.",
    ),
]


def _settings(config: Path | None) -> ServeSettings:
    """The serving settings from ``config`` (else ``$VALUEREC_SERVE_CONFIG``, else defaults),
    or one error line naming the file and the bad key."""
    # imported here: cli_serve imports this module (its `train` fits recommenders)
    from valuerec.cli_serve import _settings as load

    return load(config)


def _names(spec: str) -> list[str]:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if not names or unknown:
        raise fail(f"unknown recommender(s) {unknown or spec!r}; choose from {', '.join(MODELS)}")
    return names


def _fitted(
    names: list[str], items: pd.DataFrame, users: pd.DataFrame, train: Interactions
) -> Iterator[tuple[str, Recommender | str, float]]:
    """Fit each named recommender on ``train`` under a progress bar: (name, model or the
    reason it could not use the data, seconds). One model's failure never costs the others
    (as ``value fit``): the caller reports it and exits 1 once the rest are done."""
    with progress() as bar:
        task = bar.add_task("fitting", total=len(names))
        for name in names:
            bar.update(task, description=f"fitting {name}")
            start = time.perf_counter()
            model: Recommender | str
            try:
                model = make_recommender(name, items, users).fit(train)
            except Exception as exc:  # one model's failure is its row alone, never the others
                model = _failure(exc)
            yield name, model, time.perf_counter() - start
            bar.advance(task)


def _failure(exc: Exception) -> str:
    """What a model's failure says: a ValueError is data the model cannot use (its message
    says why); anything else is a bug, named by its type so it can be reported, while the
    other models still run (a TypeError from one model's side features stopped them all)."""
    if isinstance(exc, ValueError):
        return str(exc)
    return f"failed with {type(exc).__name__}: {exc} (a bug: please report it)"


def _report_failures(failed: dict[str, str]) -> None:
    """Each failed model's reason on stderr, then exit 1 (a part failed, the rest stands)."""
    for name, reason in failed.items():
        say_error(f"{name}: {reason}")
    if failed:
        raise typer.Exit(1)


def item_interactions(store: Store, event_types: list[str] | None = None) -> int:
    """Events with an item (of ``event_types`` only, when given): what recommenders learn from."""
    kinds = "" if event_types is None else " AND event_type IN (SELECT unnest(?::VARCHAR[]))"
    params = [] if event_types is None else [list(event_types)]
    sql = f"SELECT count(*) AS n FROM events WHERE item_id IS NOT NULL{kinds}"
    return int(store.query(sql, params)["n"][0])


def _interactions(store: Store, event_types: str | None) -> Interactions:
    """The store's interactions of ``event_types`` (a comma list) or, by default, of every
    type the default serving roles call interest: exposures the server logged are what a
    user was shown, not what they chose, so a model must neither learn nor be scored on them.
    An error if there are none."""
    types = [t.strip().lower() for t in (event_types or "").split(",") if t.strip()]
    if not types:
        types = interest_types(store)
    if not types or item_interactions(store, types) == 0:
        found = list(store.event_type_counts(with_item=True).items())[:8]
        have = ", ".join(f"{t} ({n:,})" for t, n in found)
        raise fail(
            f"no interactions with items of type {', '.join(types) or '(none)'} in "
            f"{redact(store.path)}; "
            + (f"the types with an item there: {have}" if have else "ingest events first")
        )
    return Interactions.from_store(store, event_types=types)


@recommend_app.command()
def evaluate(
    db: DbOption = default_db_path(),
    protocol: Annotated[
        str, typer.Option("--protocol", help="random-split, leave-one-out or temporal.")
    ] = "random-split",
    models: ModelsOption = "popularity,itemknn,ease,ease-side,als",
    k: KOption = 10,
    as_json: JsonOption = False,
    event_types: EventTypesOption = None,
) -> None:
    """Split, fit on train, score the test part with the shared evaluator; one table.

    Sequence models (sasrec) stop early on the validation part and, on leave-one-out, read
    the validation item as part of the test-time history, as RecBole's sequential models do.
    """
    names = _names(models)
    with open_store(db, must_exist=True) as store:
        inter = _interactions(store, event_types)
        items, users = store.items(), store.users()
    try:
        split = protocol_split(inter, protocol)
    except ValueError as exc:
        raise fail(str(exc)) from None
    rows: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    with progress() as bar:
        task = bar.add_task("fitting", total=len(names))
        for name in names:
            bar.update(task, description=f"fitting {name}")
            try:
                _, report, fit_s = fit_and_evaluate(
                    name, split, items, users, k=k, unmasked=protocol == "leave-one-out"
                )
                rows[name] = {**report.metrics, "fit_s": fit_s}
            except Exception as exc:  # one model's failure is its row alone, never the others
                failed[name] = _failure(exc)
                rows[name] = {"error": failed[name]}
            bar.advance(task)
    if as_json:
        print_json({"protocol": protocol, "k": k, "models": rows})
    else:
        table = DataTable(title=f"{protocol}, test part, full ranking, seen items excluded")
        cols = [f"ndcg@{k}", f"recall@{k}", f"mrr@{k}", f"hit@{k}", f"coverage@{k}"]
        for c in ["model", *cols, "fit s"]:
            if c == "model":  # whole names (recent-popularity) on an 80-column terminal
                table.add_column(c, no_wrap=True, min_width=max(map(len, rows), default=5))
            else:
                table.add_column(c, justify="right")
        for name, m in rows.items():
            if "error" in m:
                table.add_row(name, Text("failed", style="red"), *[""] * len(cols))
            else:
                table.add_row(name, *(f"{m[c]:.4f}" for c in cols), f"{m['fit_s']:.2f}")
        out.print(table)
    _report_failures(failed)


@recommend_app.command()
def fit(
    db: DbOption = default_db_path(),
    models: ModelsOption = "popularity,ease",
    as_json: JsonOption = False,
    event_types: EventTypesOption = None,
) -> None:
    """Fit recommenders on every interaction and save each as an artifact (rec-<model>)."""
    names = _names(models)
    with open_store(db, must_exist=True) as store:
        inter = _interactions(store, event_types)
        items, users = store.items(), store.users()
        fingerprint = data_fingerprint(store)
    arts = ArtifactStore(default_root(db))
    saved, failed = {}, {}
    for name, model, fit_s in _fitted(names, items, users, inter):
        if isinstance(model, str):
            failed[name] = model
            continue
        meta = {
            "model": name,
            "fit_seconds": fit_s,
            "users": len(inter.user_ids),
            "items": len(inter.item_ids),
            "data_fingerprint": fingerprint,
        }
        saved[name] = arts.save(PREFIX + name, model, meta)
    if as_json:
        print_json(saved)
    else:
        for name, version in saved.items():
            out.print(f"{name}: saved {PREFIX}{name} {version}")
    _report_failures(failed)


def _load(db: str, name: str) -> Recommender:
    """The current version of recommender ``name``, unpickled and checked to be one.

    Every failure is one line naming the artifact, its version and folder: a truncated pickle,
    or a value model's pickle in a recommender's folder, was a traceback. Fitting is the advice
    only where nothing was ever saved: a broken pointer or version is mended by promoting
    another one.
    """
    # read as the API reads ?model= (EASE, rec-ease, " ease" are ease)
    name = model_name(name, PREFIX) if name.strip() else name
    if name not in MODELS:
        raise fail(f"unknown recommender {name!r}; choose from {', '.join(MODELS)}")
    arts, key = ArtifactStore(default_root(db)), PREFIX + name
    model, _ = load_saved(
        arts, key, Recommender, "recommender", f"valuerec recommend fit --models {name}"
    )
    return model


def _titles(db: str) -> dict[str, str]:
    with open_store(db, must_exist=True) as store:
        return item_titles(store.items())


def _reasons(
    model: Recommender, history: tuple[str, ...], rec: pd.DataFrame, titles: dict[str, str]
) -> list[str]:
    """For each item, the history item it is most similar to ("because you liked X"); users
    served cold (no history item the model knows, or none it can use: content's items
    without text) are told so."""
    seen = model.item_ids_.get_indexer(list(dict.fromkeys(history)))
    seen = seen[seen >= 0]
    items = model.item_ids_.get_indexer(rec["item_id"])
    cold = not len(seen) or bool(rec["cold_start"].any())
    return because(model, None if cold else seen, items, titles)


def _current(db: str, user_id: str, settings: ServeSettings) -> tuple[tuple[str, ...], set[str]]:
    """What a server run with ``settings`` knows of ``user_id`` now, read from the store as
    it reads it at start-up: their interest history (oldest first, the settings' event roles
    and history limit: a configured exposure type such as ``impression`` is what the user
    was shown, not what they chose) and the items not to show them (their dislikes, and
    items hidden through the API).
    """
    roles = settings.events
    with open_store(db, must_exist=True) as store:
        repo = Repository(store, roles.exposure)
        histories = Histories(settings.history_limit)
        histories.load(repo.interactions(roles, [user_id]))
        hidden = repo.hidden_items()
    return histories.get(user_id), set(histories.negatives(user_id)) | hidden


def _top(
    model: Recommender, user_id: str, k: int, history: tuple[str, ...], refused: set[str]
) -> pd.DataFrame:
    """``model``'s top-``k`` for ``user_id`` as the server serves them (:func:`_current`):
    scored from the user's history in the store now, so events stored after the fit count
    and a user the model never saw is served from their history rather than cold; without
    their seen items, their dislikes (a model learns from interest only, so a dislike alone
    never makes an item seen) and the items hidden through the API."""
    rec = model.recommend([user_id], k=k + len(refused), histories={user_id: list(history)})
    rec = rec.loc[~rec["item_id"].isin(refused)].head(k).reset_index(drop=True)
    rec["rank"] = np.arange(1, len(rec) + 1)
    return rec


def _value_rerank(
    db: str,
    user_id: str,
    rec_model: Recommender,
    k: int,
    value_weight: float,
    diversity: float,
    value_model: str | None,
    candidates: int,
    current: tuple[tuple[str, ...], set[str]],
    settings: ServeSettings,
) -> pd.DataFrame:
    """The top-``candidates`` by relevance, re-ranked by the value-aware blend
    (:func:`valuerec.recommend.rerank.value_rerank`), with each item's price and estimated
    purchase propensity (the settings' exposure types count as looks, as on the server);
    the user's churn risk and LTV rank come from ``value_model``."""
    from valuerec.recommend.rerank import ItemValues, UserValues, value_rerank

    cand = _top(rec_model, user_id, max(candidates, k), *current)
    risk = rank = None
    with open_store(db, must_exist=True) as store:
        items = ItemValues.from_store(store, look_types=look_types(settings.events.exposure))
        if value_model is not None:
            from valuerec.cli_value import _load as load_value_model
            from valuerec.cli_value import _predict_all

            fitted, _ = load_value_model(ArtifactStore(default_root(db)), value_model)
            pred, _ = _predict_all(store, fitted, None, None)  # as of the log's end
            risk, rank = UserValues.from_predictions(pred).get(user_id)
    arrays = items.take(cand["item_id"])
    if (
        value_weight > 0
        and len(cand) > 1
        and np.ptp(arrays.price) == 0
        and np.ptp(arrays.p_purchase) == 0
    ):
        warn(
            f"the value weight changes nothing here: these {len(cand)} candidates share one "
            f"price ({arrays.price[0]:g}) and one purchase propensity "
            f"({arrays.p_purchase[0]:.3f}); nothing in the store (items' price, purchases) "
            "tells them apart"
        )
    try:
        order = value_rerank(
            cand["score"].to_numpy(dtype=float),
            arrays.price,
            arrays.p_purchase,
            value_weight,
            k=k,
            churn_risk=risk,
            ltv_rank=rank,
            diversity=diversity,
            embedding=arrays.embedding,
        )
    except ValueError as exc:
        raise fail(str(exc)) from None
    out_rec = cand.iloc[order].reset_index(drop=True)
    out_rec["rank"] = np.arange(1, len(out_rec) + 1)
    out_rec["price"] = arrays.price[order]
    out_rec["p_purchase"] = arrays.p_purchase[order]
    out_rec["relevance_rank"] = order + 1
    return out_rec


@recommend_app.command("for")
def recommend_for(
    user_id: Annotated[str, typer.Argument(help="The user to recommend for.")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help=f"One of {', '.join(MODELS)}; default: the settings' default_model "
            "(ease unless --config says otherwise), as the server's default.",
        ),
    ] = None,
    k: KOption = 10,
    db: DbOption = default_db_path(),
    as_json: JsonOption = False,
    value_weight: Annotated[
        float,
        typer.Option(
            "--value-weight",
            help="Weight of expected revenue (P(purchase) x price) against relevance; "
            f"0 = relevance only; at most {MAX_VALUE_WEIGHT:g}, as the API's value_weight.",
        ),
    ] = 0.0,
    diversity: Annotated[
        float, typer.Option("--diversity", help="MMR weight against similar items (categories).")
    ] = 0.0,
    value_model: Annotated[
        str | None,
        typer.Option(
            "--value-model",
            help="Saved value model whose churn risk and LTV rank lower the value weight for "
            "at-risk high-value users.",
        ),
    ] = None,
    candidates: Annotated[
        int | None,
        typer.Option(
            "--candidates",
            help="Relevance candidates the blend re-ranks; default: max(50, 5 k), as the server.",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Top-k items for a user with titles, scores and the reason for each, as the server
    serves them: scored from the user's history in the store now (events after the fit
    count), without items they saw or disliked (``dislike``, ``not_interested``) or that were
    hidden through the API. Give the server's ``--config`` (or ``$VALUEREC_SERVE_CONFIG``)
    where it declares other event roles: they say what counts as the user's history.

    With ``--value-weight`` or ``--diversity`` the top ``--candidates`` by relevance are
    re-ranked by the value-aware blend (the simulator's ValueAwarePolicy formula): price and
    purchase propensity per item come from the store's log.
    """
    if not user_id.strip() or user_id != user_id.strip():
        # as the API refuses it: stored ids are trimmed, so " u1" would be served cold as a
        # new user while u1 has a history
        raise fail(
            f"USER_ID {user_id!r} must not be blank or start or end with whitespace "
            "(ids are stored trimmed)"
        )
    weights_ok = all(math.isfinite(w) and w >= 0 for w in (value_weight, diversity))
    if candidates is None:
        candidates = candidate_pool(k)
    if not weights_ok or candidates < 1:  # NaN compares False: it would pass as "relevance"
        raise fail("--value-weight and --diversity must be numbers >= 0, --candidates >= 1")
    if value_weight > MAX_VALUE_WEIGHT:  # the API's bound: beyond it the blend's sums overflow
        raise fail(
            f"--value-weight must be at most {MAX_VALUE_WEIGHT:g} (as the API's value_weight), "
            f"got {value_weight:g}"
        )
    settings = _settings(config)
    if model is None:  # the model a request that names none gets
        model = settings.default_model
    rec_model = _load(db, model)
    current = _current(db, str(user_id), settings)
    blended = value_weight > 0 or diversity > 0
    if blended:
        rec = _value_rerank(
            db, str(user_id), rec_model, k, value_weight, diversity, value_model, candidates,
            current, settings,
        )  # fmt: skip
    else:
        rec = _top(rec_model, str(user_id), k, *current)
    titles = _titles(db)
    rec["title"] = rec["item_id"].map(titles)
    rec["reason"] = _reasons(rec_model, current[0], rec, titles)
    if as_json:
        print_json(rec.astype(object).where(rec.notna(), None).to_dict(orient="records"))
        return
    cold = " (new user: cold start)" if rec["cold_start"].any() else ""
    how = f", value weight {value_weight:g}" if blended else ""
    table = DataTable(title=f"{model}: top {k} for user {user_id}{cold}{how}")
    cols = ["rank", "item", "title", "score"]
    if blended:
        cols += ["price", "P(buy)", "relevance rank"]
    for c in [*cols, "reason"]:
        table.add_column(c, justify="left" if c in ("item", "title", "reason") else "right")
    for r in rec.itertuples():
        extra = [f"{r.price:,.2f}", f"{r.p_purchase:.3f}", str(r.relevance_rank)] if blended else []
        title = r.title if isinstance(r.title, str) else ""
        table.add_row(str(r.rank), str(r.item_id), title, f"{r.score:.3f}", *extra, r.reason)
    out.print(table)


@recommend_app.command()
def similar(
    item_id: Annotated[str, typer.Argument(help="The item to find neighbours of.")],
    model: ModelOption = "ease",
    k: KOption = 10,
    db: DbOption = default_db_path(),
    as_json: JsonOption = False,
) -> None:
    """Items most similar to an item, by the model's own notion of similarity; none (an
    empty list) when the model has no other item to compare it with."""
    rec_model = _load(db, model)
    # unknown is by the model's vocabulary, as the API decides: an empty answer is also what
    # a known item gets when there is nothing to compare it with (a one-item catalogue)
    if rec_model.item_ids_.get_indexer([one_id(item_id)])[0] < 0:
        raise fail(f"unknown item {item_id!r} for model {model}")
    with open_store(db, must_exist=True) as store:
        hidden = Repository(store).hidden_items()  # as the server leaves them out
    # -k below 1: a usage error already; asked for more so that k remain once hidden go
    sim = rec_model.similar_items(item_id, k=k + len(hidden))
    sim = sim.loc[~sim["similar_item_id"].isin(hidden)].head(k).reset_index(drop=True)
    sim["rank"] = np.arange(1, len(sim) + 1)
    titles = _titles(db)
    sim["title"] = sim["similar_item_id"].map(titles)
    if as_json:
        print_json(sim.astype(object).where(sim.notna(), None).to_dict(orient="records"))
        return
    if sim.empty:
        alone = " (the model knows no other item)" if len(rec_model.item_ids_) < 2 else ""
        out.print(f"{model}: no item similar to {item_id}{alone}")
        return
    title = titles.get(item_id)
    table = DataTable(
        title=f"{model}: items similar to {item_id}" + (f" ({title})" if title else "")
    )
    for c in ("rank", "item", "title", "score"):
        table.add_column(c)
    for r in sim.itertuples():
        title = r.title if isinstance(r.title, str) else ""
        table.add_row(str(r.rank), str(r.similar_item_id), title, f"{r.score:.3f}")
    out.print(table)
