"""The measurements behind `tianwang bench` and the pytest-benchmark suites in bench/.

Each module holds corpora, scenarios and timed functions that both callers share: the verb
(gateway/cli/bench.py, report and plots in gateway/benchmarks/runner.py) runs them at the sizes it is
given and writes results.json; the suites in bench/ run them at their own sizes and assert the
targets of docs/architecture.md. Nothing here is imported by the gateway itself.
"""

# the sections of `tianwang bench`, in the order they run (kept here: the CLI parser reads them without
# importing the measurements)
SECTIONS = ("nmea", "router", "fanout", "latency", "scale")
