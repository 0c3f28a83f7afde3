"""Peer: obp 0.4.1's own IPW, SNIPW and DR on the rounds ``benchmarks/ope_obd.py`` evaluates.

Runs in ``benchmarks/peers/.venv-obp`` (``setup_obp.sh``), never in valuerec's environment.
For each campaign it reads ``<inputs>/<campaign>.npz`` written by ``ope_obd.py --peer`` (our
row order, the target policy's distribution over (item, position), and our parsed arrays),
then:

* loads the random logs with obp's own ``OpenBanditDataset`` from the same extracted files
  (``--data``), puts its rounds in our order (by the file's row number) and checks that
  obp's parse (item, position, click, propensity, user-feature one-hots) equals ours;
* estimates the target policy's value with obp's ``InverseProbabilityWeighting``,
  ``SelfNormalizedInverseProbabilityWeighting`` and ``DoublyRobust``, the latter with obp's
  ``RegressionModel`` (one logistic regression per position on context + item one-hot,
  ``fit_predict`` with the same number of folds and seed), intervals from obp's
  ``estimate_interval`` (percentile bootstrap);
* simulates obp's ``BernoulliTS(is_zozotown_prior=True)`` action distribution and reports its
  L1 distance per position to ours, and obp's IPW under it;
* reports obp's on-policy click rate of the BTS logs.

    .venv-obp/bin/python obp_ope.py --inputs DIR --data OBD_FOLDER --out obp.json
"""

from __future__ import annotations

import argparse
import json
import platform
import warnings
from pathlib import Path

import numpy as np
import obp
import pandas as pd
import sklearn
from obp.dataset import OpenBanditDataset
from obp.ope import (
    DoublyRobust,
    InverseProbabilityWeighting,
    RegressionModel,
    SelfNormalizedInverseProbabilityWeighting,
)
from obp.policy import BernoulliTS
from sklearn.linear_model import LogisticRegression

warnings.filterwarnings("ignore")


def interval(estimator, value: float, seed: int, n_boot: int, **kw) -> dict[str, float]:
    ci = estimator.estimate_interval(**kw, n_bootstrap_samples=n_boot, random_state=seed)
    low = next(v for k, v in ci.items() if "lower" in k)
    high = next(v for k, v in ci.items() if "upper" in k)
    return {"estimate": float(value), "low": float(low), "high": float(high)}


def campaign_run(campaign: str, args: argparse.Namespace) -> dict:
    ours = np.load(Path(args.inputs) / f"{campaign}.npz")
    data_path = Path(args.data) / "dataset" / "obd"
    ds = OpenBanditDataset(behavior_policy="random", campaign=campaign, data_path=data_path)
    fb = ds.obtain_batch_bandit_feedback()
    # obp sorts by timestamp too but with an unstable sort: align by the file's row number
    order = pd.Index(ds.data.index).get_indexer(ours["row"])
    assert (order >= 0).all() and len(order) == fb["n_rounds"]
    action, position = fb["action"][order], fb["position"][order]
    reward, pscore, context = fb["reward"][order], fb["pscore"][order], fb["context"][order]
    parser_agrees = bool(
        np.array_equal(action, ours["action"])
        and np.array_equal(position, ours["position"])
        and np.array_equal(reward, ours["reward"])
        and np.allclose(pscore, ours["pscore"], rtol=0, atol=1e-15)
        and context.shape == ours["context"].shape
        and np.array_equal(context.astype(float), ours["context"])
    )
    n_rounds, (n_actions, len_list) = len(order), ours["action_dist"].shape
    action_dist = np.tile(ours["action_dist"][None], (n_rounds, 1, 1))

    reg = RegressionModel(
        base_model=LogisticRegression(C=args.C, max_iter=10_000, tol=1e-8),
        n_actions=n_actions,
        len_list=len_list,
        fitting_method="normal",
    )
    q_hat = reg.fit_predict(
        context=context, action=action, reward=reward, pscore=pscore, position=position,
        n_folds=args.folds, random_state=args.seed,
    )  # fmt: skip
    common = dict(
        reward=reward, action=action, pscore=pscore, position=position, action_dist=action_dist
    )
    out = {}
    for name, est, extra in (
        ("ipw", InverseProbabilityWeighting(), {}),
        ("snipw", SelfNormalizedInverseProbabilityWeighting(), {}),
        ("dr", DoublyRobust(), {"estimated_rewards_by_reg_model": q_hat}),
    ):
        value = est.estimate_policy_value(**common, **extra)
        out[name] = interval(est, value, args.seed, args.n_boot, **common, **extra)

    bts = BernoulliTS(
        n_actions=n_actions, len_list=len_list, is_zozotown_prior=True, campaign=campaign,
        random_state=args.seed,
    )  # fmt: skip
    obp_prior = bts.compute_batch_action_dist(n_rounds=1, n_sim=args.n_sim)[0]
    ipw_prior = InverseProbabilityWeighting().estimate_policy_value(
        **{**common, "action_dist": np.tile(obp_prior[None], (n_rounds, 1, 1))}
    )
    truth = OpenBanditDataset.calc_on_policy_policy_value_estimate(
        behavior_policy="bts", campaign=campaign, data_path=data_path
    )
    return {
        **out,
        "parser_agrees": parser_agrees,
        "prior_l1": np.abs(obp_prior - ours["prior_dist"]).sum(axis=0).tolist(),
        "ipw_obp_prior_bts": float(ipw_prior),
        "on_policy_truth": float(truth),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", required=True, help="folder of <campaign>.npz from ope_obd")
    parser.add_argument("--data", required=True, help="valuerec's extracted obd folder")
    parser.add_argument("--campaigns", default="all,men,women")
    parser.add_argument("--C", type=float, default=1.0)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--n-sim", type=int, default=100_000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    result = {
        "campaigns": {c: campaign_run(c, args) for c in args.campaigns.split(",")},
        "versions": f"obp {obp.__version__}, scikit-learn {sklearn.__version__}, "
        f"numpy {np.__version__}, pandas {pd.__version__}, Python {platform.python_version()}",
    }
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
