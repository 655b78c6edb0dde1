"""Hive's benchmarks: ``python -m bench`` (all) or ``python -m bench placement|dispatch``.

See BENCHMARKS.md for what each measures, the formulas and the latest results.
Nothing here is imported by the application or the test suite.
"""
