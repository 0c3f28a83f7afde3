"""A small shop deployment for the serving tests: one place that builds what the API serves."""

from __future__ import annotations

from valuerec.artifacts import ArtifactStore, default_root
from valuerec.data.ingest import ingest
from valuerec.data.store import Store
from valuerec.data.synth import generate
from valuerec.evaluate.ranking import Interactions
from valuerec.features.split import TemporalSplit
from valuerec.recommend.ease import EASERecommender
from valuerec.recommend.popularity import PopularityRecommender
from valuerec.value.registry import make_model


def build_shop(db: str, *, users: int, items: int, days: int, seed: int) -> None:
    """Synthetic events and items in ``db``, plus the artifacts the API loads: popularity,
    EASE in two versions (v0002 saved but not promoted, for promote/rollback) and a naive
    value model fitted on the last 30 days as holdout."""
    data = generate(users=users, items=items, days=days, holdout_days=10, seed=seed)
    with Store(db) as store:
        ingest(store, data.items, "items")
        ingest(store, data.events, "events")
        inter = Interactions.from_store(store)
        arts = ArtifactStore(default_root(db))
        arts.save("rec-popularity", PopularityRecommender().fit(inter), {"model": "popularity"})
        arts.save("rec-ease", EASERecommender(reg=250.0).fit(inter), {"model": "ease"})
        arts.save("rec-ease", EASERecommender(reg=2.0).fit(inter), {"model": "ease"}, promote=False)
        split = TemporalSplit.last_days(store, 30)
        naive = make_model("naive").fit(store, split.calibration_end, holdout_days=30)
        arts.save("value-naive", naive, {"model": "naive"})
