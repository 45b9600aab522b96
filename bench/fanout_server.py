"""The fan-out benchmark's server process: tianwang.gateway.benchmarks.fanout (kept runnable from here).

python bench/fanout_server.py {tianwang,tianwang-disk,plain} --envelopes N
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("tianwang.gateway.benchmarks.fanout", run_name="__main__")
