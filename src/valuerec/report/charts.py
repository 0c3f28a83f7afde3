"""The report's charts: matplotlib figures rendered to standalone SVG.

Why this shape:

* Matplotlib's object API (``Figure``, never ``pyplot``) keeps no global state, so building a
  report inside a server or a test leaves nothing behind, and no display is needed.
* SVG with text kept as text (``svg.fonttype = none``) is small, sharp at any zoom, and its
  title and axis labels stay searchable; dense scatters are rasterised inside the SVG so a
  chart of 20,000 customers stays a few hundred kilobytes. A fixed hash salt and no date in
  the metadata make the same data give the same bytes.
* Every chart gets a title, axis labels with units and a one-line caption saying how to read
  it: a chart an analyst has to decode is a chart that gets misread.

Each function takes numbers already computed elsewhere and returns a
:class:`~valuerec.report.document.Chart`; nothing here computes a metric.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Mapping

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogFormatter
from sklearn.metrics import roc_curve

from .document import Chart

__all__ = [
    "actual_vs_predicted",
    "churn_roc",
    "decile_calibration",
    "events_by_month",
    "gain_lift",
    "ltv_distribution",
    "policy_over_days",
    "popularity_bias",
    "popularity_deciles",
]

_RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "valuerec-report",
    "font.family": "sans-serif",
    "font.size": 9.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    # labels are users' text (event types, policy names): "$" is a dollar, never mathtext
    "text.parse_math": False,
}
WIDE = (7.2, 3.6)
SQUARE = (5.6, 4.8)
REFERENCE = "#9a9a9a"


def _figure(size: tuple[float, float] = WIDE, ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _plain(value: float, _pos: object = None) -> str:
    """Tick labels as plain numbers (10, 100, 1,000): analysts read them faster than 10^2,
    and no mathtext has to be laid out."""
    return f"{value:,.0f}" if abs(value) >= 1 or value == 0 else f"{value:.2g}"


PLAIN = FuncFormatter(_plain)


class PlainLogMinor(LogFormatter):
    """Minor tick labels of a log axis, as plain numbers.

    On a log axis spanning less than a decade or two, matplotlib labels some minor ticks (a
    range such as 12 to 80 has no major tick at all). Its default minor formatter writes them
    as mathtext (``$\\mathdefault{2\\times10^{1}}$``), which the report's
    ``text.parse_math=False`` draws literally. This keeps matplotlib's choice of which minor
    ticks get a label and writes each one as :data:`PLAIN` does.
    """

    def __call__(self, x: float, pos: int | None = None) -> str:
        return _plain(x) if super().__call__(x, pos) else ""


def _chart(fig: Figure, chart_id: str, title: str, xlabel: str, ylabel: str, caption: str) -> Chart:
    """Render ``fig`` to SVG bytes under the report's style."""
    buf = io.BytesIO()
    with matplotlib.rc_context(_RC):
        width = int(fig.get_figwidth() * 11)  # characters of an 11-pt bold title per inch
        fig.suptitle(textwrap.fill(title, width), fontsize=11, fontweight="bold")
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return Chart(chart_id, title, xlabel, ylabel, caption, buf.getvalue())


# ------------------------------------------------------------------------------ data


def events_by_month(chart_id: str, by_month: pd.DataFrame) -> Chart:
    """Stacked bars of events per calendar month, one colour per event type."""
    title = "Events per month, by type"
    xlabel, ylabel = "month (UTC)", "events (count)"
    with matplotlib.rc_context(_RC):
        fig, (ax,) = _figure()
        x = np.arange(len(by_month))
        bottom = np.zeros(len(by_month))
        for etype in by_month.columns:
            values = by_month[etype].to_numpy(dtype=float)
            ax.bar(x, values, bottom=bottom, label=str(etype), width=0.85)
            bottom += values
        step = max(1, len(x) // 12)
        ax.set_xticks(x[::step], [f"{m:%Y-%m}" for m in by_month.index[::step]], rotation=45)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(title="event type", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    caption = (
        "Each bar is one month of the log; its height is the number of events, split by type: "
        "look for gaps, spikes and a partial first or last month."
    )
    return _chart(fig, chart_id, title, xlabel, ylabel, caption)


# ----------------------------------------------------------------------------- value


def ltv_distribution(chart_id: str, ltv: np.ndarray, model: str, horizon_days: float) -> Chart:
    """Histogram of predicted LTV on log-spaced bins; customers at zero are counted aside."""
    ltv = np.asarray(ltv, dtype=float)
    positive = ltv[ltv > 0]
    zeros = int((ltv <= 0).sum())
    title = f"Predicted LTV of every customer ({model}, {horizon_days:g}-day horizon)"
    xlabel = "predicted LTV (currency units, discounted; log scale)"
    ylabel = "customers (count)"
    with matplotlib.rc_context(_RC):
        fig, (ax,) = _figure()
        if positive.size:
            # a handful of near-zero predictions would stretch the axis over decades of
            # nothing: they are drawn in the first bin instead
            lo, hi = float(np.quantile(positive, 0.001)), float(positive.max())
            bins = np.geomspace(lo, hi * 1.0001, 40) if hi > lo else np.array([lo * 0.9, lo * 1.1])
            ax.hist(np.clip(positive, lo, None), bins=bins, color="#3b75af")
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(PLAIN)
            ax.xaxis.set_minor_formatter(PlainLogMinor(labelOnlyBase=False))
            for q, style in ((0.5, "--"), (0.9, ":")):
                v = float(np.quantile(ltv, q))
                if v > 0:
                    ax.axvline(v, color="black", linestyle=style, linewidth=1,
                               label=f"{int(q * 100)}th percentile: {v:,.2f}")  # fmt: skip
            ax.legend(loc="upper right")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    zero_note = f" {zeros:,} customers predicted at 0 are not drawn." if zeros else ""
    if positive.size and (positive < lo).any():
        zero_note += f" The first bar includes {int((positive < lo).sum()):,} below {lo:,.3g}."
    caption = (
        "Each bar counts customers whose predicted lifetime value falls in that range; value is "
        f"concentrated in the right tail, where few customers hold much of it.{zero_note}"
    )
    return _chart(fig, chart_id, title, xlabel, ylabel, caption)


def gain_lift(chart_id: str, grid: np.ndarray, gains: Mapping[str, np.ndarray]) -> Chart:
    """Cumulative gain (left) and lift (right) of holdout spend, one line per model."""
    title = "Cumulative gain and lift of holdout spend (held-out customers)"
    xlabel = "customers targeted (% of held-out, best predicted first)"
    ylabel = "holdout spend captured (% of total)"
    lift_label = "lift (spend share / customer share, x)"
    pct = 100.0 * grid
    with matplotlib.rc_context(_RC):
        fig, (gain_ax, lift_ax) = _figure((8.4, 3.8), ncols=2)
        gain_ax.plot(pct, pct, color=REFERENCE, linestyle="--", label="random")
        lift_ax.axhline(1.0, color=REFERENCE, linestyle="--", label="random")
        inner = grid > 0
        for name, gain in gains.items():
            gain_ax.plot(pct, 100.0 * gain, label=name)
            lift_ax.plot(pct[inner], gain[inner] / grid[inner], label=name)
        gain_ax.set_xlabel(xlabel)
        gain_ax.set_ylabel(ylabel)
        gain_ax.set_title("cumulative gain")
        gain_ax.legend(loc="lower right")
        lift_ax.set_xlabel(xlabel)
        lift_ax.set_ylabel(lift_label)
        lift_ax.set_title("lift")
        lift_ax.set_xlim(0, 100)
    caption = (
        "Left: the share of next-period spend held by the top x % of customers as each model "
        "ranks them (higher is better, the dashed line is random targeting); right: the same "
        "as a multiple of random."
    )
    return _chart(fig, chart_id, title, xlabel, ylabel, caption)


def decile_calibration(chart_id: str, deciles: pd.DataFrame, model: str) -> Chart:
    """Mean predicted against mean actual holdout spend per decile of predicted value."""
    title = f"Decile calibration ({model}, held-out customers)"
    xlabel = "decile of predicted spend (1 = highest predicted)"
    ylabel = "mean holdout spend per customer (currency units)"
    with matplotlib.rc_context(_RC):
        fig, (ax,) = _figure()
        x = deciles["decile"].to_numpy()
        ax.bar(x - 0.2, deciles["predicted_mean"], width=0.4, label="predicted", color="#3b75af")
        ax.bar(x + 0.2, deciles["actual_mean"], width=0.4, label="actual", color="#e1812c")
        ax.set_xticks(x)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(loc="upper right")
    caption = (
        "Customers are sorted by predicted spend and cut into ten equal groups; where the blue "
        "bar matches the orange one, the model's amounts are right for that group."
    )
    return _chart(fig, chart_id, title, xlabel, ylabel, caption)


def actual_vs_predicted(
    chart_id: str, actual: np.ndarray, predicted: np.ndarray, model: str
) -> Chart:
    """Scatter of each held-out customer's predicted and actual spend on symmetric-log axes."""
    title = f"Actual against predicted holdout spend ({model})"
    xlabel = "predicted holdout spend (currency units, log scale)"
    ylabel = "actual holdout spend (currency units, log scale)"
    actual = np.asarray(actual, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    with matplotlib.rc_context(_RC):
        fig, (ax,) = _figure(SQUARE)
        ax.scatter(predicted, actual, s=6, alpha=0.35, color="#3b75af", linewidths=0,
                   rasterized=True)  # fmt: skip
        top = max(float(actual.max(initial=0.0)), float(predicted.max(initial=0.0)), 1.0)
        ax.plot([0, top], [0, top], color=REFERENCE, linestyle="--", label="actual = predicted")
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_yscale("symlog", linthresh=1.0)
        ax.xaxis.set_major_formatter(PLAIN)
        ax.yaxis.set_major_formatter(PLAIN)
        ax.set_xlim(0, top * 1.5)
        ax.set_ylim(0, top * 1.5)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(loc="upper left")
    caption = (
        "Dots on the dashed line were predicted exactly; the row of dots at 0 on the vertical "
        "axis are customers who did not buy again (axes are linear below 1, log above)."
    )
    return _chart(fig, chart_id, title, xlabel, ylabel, caption)


def churn_roc(
    chart_id: str,
    churned: np.ndarray,
    p_return: Mapping[str, np.ndarray],
    auc: Mapping[str, float],
) -> Chart:
    """ROC of each model's churn score ``1 - p_return`` for "did not buy in the holdout".

    ``p_return`` is each model's probability of buying in the holdout; ``auc`` is the
    evaluator's ``auc_return`` per model (the AUC of ``p_return`` for returning, which equals
    the AUC of ``1 - p_return`` for churning), shown in the legend as computed.
    """
    title = "Churn ROC: who will not buy again in the holdout"
    xlabel = "false positive rate (% of returning customers flagged)"
    ylabel = "true positive rate (% of churned customers flagged)"
    churned = np.asarray(churned, dtype=bool)
    with matplotlib.rc_context(_RC):
        fig, (ax,) = _figure(SQUARE)
        ax.plot([0, 100], [0, 100], color=REFERENCE, linestyle="--", label="random (AUC 0.5)")
        if churned.any() and (~churned).any():
            for name, p in p_return.items():
                fpr, tpr, _ = roc_curve(churned, 1.0 - np.asarray(p, dtype=float))
                ax.plot(100 * fpr, 100 * tpr, label=f"{name} (AUC {auc.get(name, np.nan):.3f})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(loc="lower right")
    caption = (
        "Each curve sweeps a threshold on 1 - P(buys in the holdout): the closer it hugs the "
        "top-left corner (larger AUC), the better the model tells churners from customers "
        "who come back."
    )
    return _chart(fig, chart_id, title, xlabel, ylabel, caption)


# --------------------------------------------------------------------------- recommendations


def popularity_deciles(
    train_counts: np.ndarray, tops: Mapping[str, np.ndarray], groups: int = 10
) -> pd.DataFrame:
    """Share of train interactions and of each model's recommendation slots per popularity
    decile of the catalogue (decile 1 = the most-interacted tenth of items).

    Items are ranked by train interactions (ties by item index, so the cut is reproducible)
    and cut into ``groups`` equal-size groups; ``-1`` entries of a top-k list (nothing left
    to recommend) are not slots.
    """
    counts = np.asarray(train_counts, dtype=float)
    order = np.lexsort((np.arange(counts.size), -counts))
    group_of = np.empty(counts.size, dtype=np.int64)
    for g, members in enumerate(np.array_split(order, min(groups, max(counts.size, 1)))):
        group_of[members] = g
    n = int(group_of.max()) + 1 if counts.size else 0
    total = counts.sum()
    out = {"decile": np.arange(1, n + 1)}
    out["catalogue"] = np.bincount(group_of, weights=counts, minlength=n) / (total or 1.0)
    for name, top in tops.items():
        slots = np.asarray(top).ravel()
        slots = slots[slots >= 0]
        hits = np.bincount(group_of[slots], minlength=n).astype(float)
        out[name] = hits / (slots.size or 1.0)
    return pd.DataFrame(out)


def popularity_bias(chart_id: str, shares: pd.DataFrame, k: int, protocol: str) -> Chart:
    """Grouped bars: catalogue share of interactions against each model's share of slots."""
    title = f"Popularity bias: where the top-{k} lists go ({protocol})"
    xlabel = "item popularity decile (1 = the 10% of items with most train interactions)"
    ylabel = "share of interactions or of slots (%)"
    series = [c for c in shares.columns if c != "decile"]
    width = 0.8 / max(len(series), 1)
    with matplotlib.rc_context(_RC):
        fig, (ax,) = _figure()
        x = shares["decile"].to_numpy()
        for i, name in enumerate(series):
            label = "catalogue (train interactions)" if name == "catalogue" else name
            color = REFERENCE if name == "catalogue" else None
            offset = (i - (len(series) - 1) / 2) * width
            ax.bar(x + offset, 100 * shares[name], width=width, label=label, color=color)
        ax.set_xticks(x)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(loc="upper right")
    caption = (
        "Grey bars: how users' interactions spread over the catalogue; coloured bars: where "
        "each model's recommendations go. Bars taller than grey in decile 1 mean the model "
        "favours already popular items."
    )
    return _chart(fig, chart_id, title, xlabel, ylabel, caption)


# --------------------------------------------------------------------------- policies


def policy_over_days(chart_id: str, daily: Mapping[str, Mapping[str, list[float]]]) -> Chart:
    """Two panels per policy: cumulative revenue and active users, day by day (seed means)."""
    title = "Ranking policies in the simulator: revenue and active users over the days served"
    xlabel = "day the policy has served"
    ylabel = "cumulative revenue (currency units) / active users (count)"
    with matplotlib.rc_context(_RC):
        fig, (rev_ax, act_ax) = _figure(WIDE, ncols=2)
        for name, series in daily.items():
            days = np.asarray(series["day"], dtype=float)
            rev_ax.plot(days, np.asarray(series["cumulative_revenue"], float), label=name)
            act_ax.plot(days, np.asarray(series["active"], float), label=name)
        rev_ax.set_xlabel(xlabel)
        rev_ax.set_ylabel("cumulative revenue (currency units)")
        rev_ax.yaxis.set_major_formatter(PLAIN)
        act_ax.set_xlabel(xlabel)
        act_ax.set_ylabel("active users (count)")
        act_ax.yaxis.set_major_formatter(PLAIN)
        rev_ax.legend(loc="upper left")
    caption = (
        "Left: revenue earned so far under each policy; right: users who have not left. A "
        "policy that sells more today but tires users shows a steeper start on the left and a "
        "faster fall on the right. Means over seeds; every policy faces the same random draws."
    )
    return _chart(fig, chart_id, title, xlabel, ylabel, caption)
