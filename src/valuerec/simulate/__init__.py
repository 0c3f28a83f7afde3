"""An interactive e-commerce simulator with ground truth: users with latent tastes, price
sensitivity and a dropout hazard that depends on how satisfying their slates are, so that
ranking policies can be compared on lifetime revenue and evaluated off-policy.

* :mod:`~valuerec.simulate.world` -- latent users and items, true probabilities;
* :mod:`~valuerec.simulate.env` -- the day-by-day environment (:class:`Simulator`);
* :mod:`~valuerec.simulate.platform` -- what the platform logs, fits and serves from;
* :mod:`~valuerec.simulate.log` -- logged days and the canonical event table.
"""

from valuerec.simulate.env import Incentive, SimResult, Simulator, slate_ndcg
from valuerec.simulate.log import DayLog, SimLog
from valuerec.simulate.platform import FEATURES, Platform
from valuerec.simulate.world import SimConfig, World

__all__ = [
    "FEATURES",
    "DayLog",
    "Incentive",
    "Platform",
    "SimConfig",
    "SimLog",
    "SimResult",
    "Simulator",
    "World",
    "slate_ndcg",
]
