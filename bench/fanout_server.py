"""The fan-out benchmark's server process: tianwang.gateway.bench.fanout (kept runnable from here).

    python bench/fanout_server.py {tianwang,tianwang-disk,plain} --envelopes N
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("tianwang.gateway.bench.fanout", run_name="__main__")
