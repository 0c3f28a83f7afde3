"""Off-policy evaluation on real logs: Bernoulli Thompson sampling's click rate on ZOZOTOWN.

The Open Bandit Dataset (Saito et al. 2021) ran a uniform-random policy and Bernoulli Thompson
sampling (BTS) side by side on the same traffic. We estimate BTS's click rate from the random
logs alone (IPS, SNIPS, DR with a cross-fitted logistic reward model, 95% intervals) and
compare it with what BTS actually got: the click rate in its own logs (Wilson 95% interval).
Each (impression, position) is a round with position-specific probabilities, as in obp.

The target policy's distribution over (item, position), ``--eval-policy``:

* ``logged`` (default): the marginal distribution BTS actually had during the logged week,
  estimated from the propensities recorded in the BTS logs (harmonic mean per (item,
  position), see :func:`valuerec.data.obd.logged_action_dist`). This is the policy whose
  click rate the truth measures. The plain mean of the recorded propensities is not a
  distribution (it over-weights rounds where BTS was confident; the per-position sums are
  2-3.7), and the frequency of each (item, position) in the BTS logs is noisier.
* ``prior``: BTS with ZOZOTOWN's starting Beta prior (``obp/policy/conf/prior_bts.yaml``),
  simulated by Monte Carlo as obp's examples do. BTS updated its posteriors during the week,
  so this is a different (earlier) policy than the one that produced the truth; kept to
  reproduce obp's protocol.

``--peer`` runs obp's own IPW, SNIPW and DR (``benchmarks/peers/obp_ope.py`` in the venv made
by ``benchmarks/peers/setup_obp.sh``) on the same rounds, the same target distribution and the
same kind of reward model, and prints its figures beside ours with the relative difference.

    python benchmarks/ope_obd.py [--campaigns all,men,women] [--eval-policy logged|prior]
                                 [--interval normal|bootstrap] [--peer] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy import stats
from sklearn.linear_model import LogisticRegression

from valuerec.data import obd
from valuerec.evaluate import offpolicy as ope

console = Console(width=170)
HERE = Path(__file__).resolve().parent
PEER_PYTHON = HERE / "peers" / ".venv-obp" / "bin" / "python"
PEER_SCRIPT = HERE / "peers" / "obp_ope.py"
#: obp's names for the same estimators
PEER_NAMES = {"ips": "ipw", "snips": "snipw", "dr": "dr"}


def reward_model(args: argparse.Namespace) -> LogisticRegression:
    """Logistic regression on user-feature one-hots + item one-hot, one per position."""
    return LogisticRegression(C=args.C, max_iter=10_000, tol=1e-8)


def truth(clicks: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """BTS's on-policy click rate with a Wilson interval (clicks are rare: ~0.5%)."""
    k, n = int(clicks.sum()), int(clicks.size)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return {"estimate": k / n, "low": float(ci.low), "high": float(ci.high), "n": n, "clicks": k}


def run_campaign(campaign: str, args: argparse.Namespace, export: Path | None) -> dict[str, Any]:
    start = time.perf_counter()
    random, bts = obd.load("random", campaign), obd.load("bts", campaign)
    alpha, beta = obd.bts_prior(campaign)
    prior_dist = obd.thompson_action_dist(alpha, beta, n_sim=args.n_sim, seed=args.seed)
    dist = obd.logged_action_dist(bts) if args.eval_policy == "logged" else prior_dist

    f = random.frame
    actions, positions = f["item_id"].to_numpy(), f["position"].to_numpy()
    rewards, propensities = f["click"].to_numpy(dtype=float), f["propensity"].to_numpy()
    context = random.user_context()
    target = ope.action_probs(dist[None], actions, positions)
    q = ope.fit_reward_model(
        context, actions, rewards, random.n_items, positions=positions,
        model=reward_model(args), n_folds=args.folds, seed=args.seed,
    )  # fmt: skip
    q_logged = q[np.arange(q.shape[0]), actions]
    q_target = ope.expected_reward(q, dist[None], positions)
    estimates = ope.evaluate(
        rewards, propensities, target, q_logged, q_target,
        interval=args.interval, n_boot=args.n_boot, seed=args.seed,
    )  # fmt: skip
    result = {
        "campaign": campaign,
        "n_rounds": int(rewards.size),
        "n_items": random.n_items,
        "random_click_rate": float(rewards.mean()),
        "truth": truth(bts.frame["click"].to_numpy()),
        "estimates": {k: e.to_dict() for k, e in estimates.items()},
        "max_weight": float((target / propensities).max()),
        "seconds": time.perf_counter() - start,
    }
    if export is not None:
        np.savez(
            export / f"{campaign}.npz",
            row=f["row"].to_numpy(), action=actions, position=positions, reward=rewards,
            pscore=propensities, context=context, action_dist=dist, prior_dist=prior_dist,
        )  # fmt: skip
    return result


def run_peer(folder: Path, args: argparse.Namespace, campaigns: list[str]) -> dict[str, Any]:
    if not PEER_PYTHON.exists():
        raise SystemExit(f"no peer venv at {PEER_PYTHON}: run benchmarks/peers/setup_obp.sh")
    out = folder / "obp.json"
    cmd = [
        str(PEER_PYTHON), str(PEER_SCRIPT), "--inputs", str(folder), "--data", str(obd.folder()),
        "--campaigns", ",".join(campaigns), "--C", str(args.C), "--folds", str(args.folds),
        "--seed", str(args.seed), "--n-boot", str(args.n_boot), "--n-sim", str(args.n_sim),
        "--out", str(out),
    ]  # fmt: skip
    with console.status("obp peer running"):
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"obp peer failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b) if b else float("inf")


def show(results: list[dict[str, Any]], peer: dict[str, Any] | None, args: argparse.Namespace):
    kind = {"normal": "normal / delta", "bootstrap": "bootstrap"}[args.interval]
    table = Table(
        title=f"BTS click rate on OBD from the random logs (target: {args.eval_policy} BTS "
        f"distribution; ours: {kind} 95% CI" + (", obp: bootstrap 95% CI)" if peer else ")")
    )
    cols = ["campaign", "truth (BTS logs)", "estimator", "ours", "covers", "rel. err"]
    if peer:
        cols += ["obp", "ours vs obp"]
    for c in cols:
        table.add_column(c, justify="left" if c in ("campaign", "estimator") else "right")
    for res in results:
        t = res["truth"]
        first = True
        for name, e in res["estimates"].items():
            row = [
                res["campaign"] if first else "",
                f"{t['estimate']:.5f} [{t['low']:.5f}, {t['high']:.5f}]" if first else "",
                name,
                f"{e['estimate']:.5f} [{e['low']:.5f}, {e['high']:.5f}]",
                "yes" if e["low"] <= t["estimate"] <= e["high"] else "NO",
                f"{(e['estimate'] - t['estimate']) / t['estimate']:+.1%}",
            ]
            if peer:
                p = peer["campaigns"][res["campaign"]][PEER_NAMES[name]]
                row += [
                    f"{p['estimate']:.5f} [{p['low']:.5f}, {p['high']:.5f}]",
                    f"{rel(e['estimate'], p['estimate']):.2e}",
                ]
            table.add_row(*row)
            first = False
        table.add_section()
    console.print(table)
    for res in results:
        console.print(
            f"{res['campaign']}: {res['n_rounds']:,} random rounds, {res['n_items']} items, "
            f"random-policy click rate {res['random_click_rate']:.5f}, BTS clicks "
            f"{res['truth']['clicks']}/{res['truth']['n']:,}, max weight "
            f"{res['max_weight']:.1f}, {res['seconds']:.1f}s"
        )
    if peer:
        for c, p in peer["campaigns"].items():
            console.print(
                f"obp {c}: parser agrees with ours: {p['parser_agrees']}; obp's own BTS "
                f"prior simulation vs ours, L1 per position "
                f"{', '.join(f'{x:.3f}' for x in p['prior_l1'])}; obp IPW with its own "
                f"prior BTS: {p['ipw_obp_prior_bts']:.5f}; obp on-policy truth "
                f"{p['on_policy_truth']:.5f}"
            )
        console.print(f"obp environment: {peer['versions']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaigns", default=",".join(obd.CAMPAIGNS))
    parser.add_argument("--eval-policy", choices=("logged", "prior"), default="logged")
    parser.add_argument("--interval", choices=("normal", "bootstrap"), default="normal")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--n-sim", type=int, default=100_000, help="BTS Monte-Carlo draws")
    parser.add_argument("--folds", type=int, default=3, help="reward-model cross-fitting folds")
    parser.add_argument("--C", type=float, default=1.0, help="logistic regression C")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--peer", action="store_true", help="run obp beside us")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    campaigns = [c.strip() for c in args.campaigns.split(",") if c.strip()]
    export = Path(tempfile.mkdtemp(prefix="ope-obd-")) if args.peer else None
    try:
        results = []
        for campaign in campaigns:
            with console.status(f"{campaign}: estimating"):
                results.append(run_campaign(campaign, args, export))
        peer = run_peer(export, args, campaigns) if export is not None else None
    finally:
        if export is not None:
            shutil.rmtree(export, ignore_errors=True)
    show(results, peer, args)
    if args.json:
        payload = {"args": vars(args), "results": results, "peer": peer}
        args.json.write_text(json.dumps(payload, indent=2, default=str))


if __name__ == "__main__":
    main()
