#!/usr/bin/env bash
# Create the Open Bandit Pipeline (obp 0.4.1) peer environment at benchmarks/peers/.venv-obp
# (idempotent).
#
# obp 0.4.1 is the newest obp that installs on Python 3.11 (0.5.x declares Python < 3.11), and
# it is the wheel valuerec's `obd` data set is read from. It pins an old stack, so it lives in
# its own venv and never touches valuerec's. The pins are the combination that works here:
#   * torch 2.13.0 first and on its own: obp.ope.estimators imports torch at module level, and
#     2.13.0 is the local CPU wheel; any other torch spec would resolve to a CUDA build;
#   * pandas 1.5.3: OpenBanditDataset.pre_process calls DataFrame.drop(label, 1) and
#     pd.concat(frames, 1) (positional axis, removed in pandas 2);
#   * numpy 1.26.4 (last 1.x; pandas 1.5 is built against numpy 1), scipy 1.11.4,
#     scikit-learn 1.3.2 (the last releases that support numpy 1.26 on this Python);
#   * matplotlib / seaborn / tqdm / pyyaml / mypy-extensions: imported by obp at start-up.
# Running it again only re-checks the installed set (pip is a no-op when all is present).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-obp"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install -q)

# This machine's pip config lists a local index folder that lacks most names; pip warns once
# per package about it. Keep real errors, drop that noise.
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

if ! "$venv/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
    quiet "${pip[@]}" torch==2.13.0
fi
quiet "${pip[@]}" \
    obp==0.4.1 numpy==1.26.4 pandas==1.5.3 scipy==1.11.4 scikit-learn==1.3.2 \
    matplotlib==3.8.4 seaborn==0.13.2 tqdm pyyaml mypy-extensions

"$venv/bin/python" - <<'PY'
import warnings

warnings.filterwarnings("ignore")
import numpy, pandas, sklearn, torch  # noqa: E401
import obp
from obp.dataset import OpenBanditDataset  # noqa: F401
from obp.ope import DoublyRobust, RegressionModel  # noqa: F401
from obp.policy import BernoulliTS  # noqa: F401

print(f"obp {obp.__version__}  torch {torch.__version__}  numpy {numpy.__version__}  "
      f"pandas {pandas.__version__}  scikit-learn {sklearn.__version__}  "
      f"ok: {__import__('sys').prefix}")
PY
