"""How blocks are held and combined: ingest a DataFrame, fold blocks on Spark or in the driver.

The engine knows nothing of losses or solvers: it sums ``fn(block, payload)`` over blocks.
Importing this package does not import pyspark (``ingest`` imports it when called), and its
names load on first use (PEP 562): a Python worker that unpickles one engine function imports
that function's module, not every engine and the solver registry ``engine_for`` consults.
"""
from __future__ import annotations

import importlib

# eager: the submodule of the same name would otherwise shadow the function once imported
from .ingest import ingest

#: public name -> the submodule that defines it
_EXPORTS = {
    "ENGINES": "choose", "engine_for": "choose", "ingest_blocks": "choose", "make_engine": "choose",
    "DriverEngine": "driver", "collect_to_driver": "driver", "estimate_driver_bytes": "driver",
    "LocalEngine": "local", "ResidentEngine": "resident", "SessionLost": "resident",
    "TaskError": "resident", "ShardedEngine": "sharded", "DataStats": "stats", "TreeEngine": "tree",
}
__all__ = ["ingest", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
