"""valuerec: predict the lifetime value of each user and recommend what to show them.

The Python API mirrors the CLI::

    import valuerec
    store = valuerec.Store("shop.duckdb")
    valuerec.ingest(store, "events.csv", kind="events")
    valuerec.datasets.load("cdnow", store)
"""

from valuerec.data import datasets
from valuerec.data.ingest import IngestResult, InputError, ingest
from valuerec.data.store import Store

__version__ = "0.1.0"
__all__ = ["IngestResult", "InputError", "Store", "__version__", "datasets", "ingest"]
