"""The benchmark harness of apikeys: ``python -m benchmarks`` (see ``docs/benchmarks.md``).

Layout, meant to grow (peers, HTTP, memory) without a rewrite:

- :mod:`benchmarks.harness`: cases, the interleaving runner, statistics; knows nothing of apikeys.
- :mod:`benchmarks.workloads`: the workloads, written once against a ``Subject`` protocol.
- :mod:`benchmarks.apikeys_sqlite`: the apikeys SQLAlchemy backend on SQLite, seeded fast.
- :mod:`benchmarks.targets`: the targets, checked as data.
- :mod:`benchmarks.report`: the run record and its console, JSON and Markdown renderings.
- :mod:`benchmarks.summary`: the summary table of ``docs/benchmarks.md``, from one run's records.
- :mod:`benchmarks.run`: the command line.
"""
