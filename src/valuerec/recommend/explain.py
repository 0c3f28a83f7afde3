"""Why an item was recommended: one short reason per item, shared by the CLI and the API.

The reason names the item from the user's own history that the recommended item is most
similar to ("similar to Toy Story"), by the model's own notion of item similarity, because a
title the user knows explains a suggestion better than a score does. A user with no usable
history was served the cold-start (popularity) scores, and is told so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from valuerec.data.schema import id_text
from valuerec.recommend.base import Recommender
from valuerec.recommend.popularity import PopularityRecommender

__all__ = ["COLD_START_REASON", "because"]

COLD_START_REASON = "popular with everyone (new user)"
#: why the popularity models recommend an item to a user they know (the server, the CLI)
POPULAR_REASON = "popular with everyone"


def because(
    model: Recommender,
    history: np.ndarray | Sequence[int] | None,
    items: np.ndarray | Sequence[int],
    titles: Mapping[str, object],
    ids: np.ndarray | None = None,
) -> list[str]:
    """One reason per recommended item.

    Args:
        model: the fitted recommender that ranked the items.
        history: the user's item indices (into ``model.item_ids_``), or ``None`` for a user
            the model served cold.
        items: indices of the recommended items, in rank order.
        titles: item id -> title; an item without a title is named by its id.
        ids: ``model.item_ids_`` as a NumPy array, when the caller keeps one (serving does:
            converting the model's Arrow-backed index costs more than the rest of this).
    """
    if history is None:
        return [COLD_START_REASON] * len(items)
    if isinstance(model, PopularityRecommender):  # it ranks by no similarity to anything
        return [POPULAR_REASON] * len(items)
    history = np.asarray(history, dtype=np.int64)
    if len(history) == 0:
        return ["popular"] * len(items)
    best = history[np.argmax(model._similarity_block(np.asarray(items), history), axis=1)]
    if ids is None:
        ids = model.item_ids_.to_numpy()  # array indexing: a pandas scalar lookup is slow
    return [f"similar to {_name(titles, h)}" for h in ids[best]]


def _name(titles: Mapping[str, object], item_id: str) -> str:
    """An item's title, or its id when it has none (a store keeps a missing title as NULL,
    which pandas reads as NaN, not as an absent key)."""
    title = titles.get(item_id)
    return title if isinstance(title, str) and title.strip() else str(item_id)


def item_titles(items: pd.DataFrame) -> dict[str, str]:
    """Item id -> title for the items of a catalogue table that have one (a non-blank text);
    the rest are named by their id (:func:`_name`), never by the NaN a NULL title reads as."""
    if items.empty or "title" not in items:
        return {}
    titled = items[items["title"].map(lambda t: isinstance(t, str) and bool(t.strip()))]
    return dict(zip(id_text(titled["item_id"]), titled["title"], strict=True))
