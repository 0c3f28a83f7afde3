#!/usr/bin/env bash
# Create the RecBole 1.2.1 peer environment at benchmarks/peers/.venv-recbole (idempotent).
#
# RecBole pins an old stack, so it lives in its own venv and never touches valuerec's.
# The pins are the combination known to work on this kind of machine:
#   * torch 2.13.0 first and on its own: it is the local CPU wheel; any other torch spec
#     would resolve to a multi-GB CUDA build;
#   * numpy 1.26.4 (RecBole uses np.float / np.int aliases removed in numpy 2);
#   * scipy 1.12.0 (1.13+ drops sparse-matrix behaviour LightGCN relies on);
#   * pandas 2.3.3, setuptools < 81 (pkg_resources), ray 2.6.3 (imported by recbole.quick_start);
#   * the packages RecBole imports at start-up but does not declare completely.
# Running it again only re-checks the installed set (pip is a no-op when all is present).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-recbole"
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
    recbole==1.2.1 numpy==1.26.4 scipy==1.12.0 pandas==2.3.3 'setuptools<81' ray==2.6.3 \
    colorlog colorama tensorboard texttable thop tabulate plotly pyyaml psutil

"$venv/bin/python" - <<'PY'
import warnings

warnings.filterwarnings("ignore")
import numpy, scipy, torch  # noqa: E401
import recbole
from recbole.quick_start import run_recbole  # noqa: F401  (pulls in every model module)

print(f"recbole {recbole.__version__}  torch {torch.__version__}  numpy {numpy.__version__}  "
      f"scipy {scipy.__version__}  ok: {__import__('sys').prefix}")
PY
