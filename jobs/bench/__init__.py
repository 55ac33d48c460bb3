"""The benchmark behind jobs/benchmark.py, one part per module; imports flow down this list:

config       Config, the run's Spark settings, shared constants, the log
data         data sources (DATASETS, LIBSVM, CSV, synthetic), the cached DataFrame, the driver copy
cases        the cases and which run (--quick, full) selects them
measure      the records (Outcome, Described, Row, RepeatedRow, CaseResult) and timing a system
runners      the systems: sparkopt, pyspark.ml, scikit-learn
scoring      the one shared objective, the reference optimum, gaps and time to the target gap
ratios       per-pass and ingest ratios against numpy and a bare Arrow transfer
tables       number format and markdown tables
solvers      synchronous, local and asynchronous solvers side by side
experiments  one experiment per kind of case, and run_case
targets      each target of the issue against its threshold
report       results.md, results.json, the PNGs
"""
