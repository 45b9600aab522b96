"""`tianwang bench`: run the benchmarks on this machine, write results.json, report.md and PNG plots
to --out, and compare with --baseline. What is measured: tianwang.gateway.benchmarks.runner; the format
of results.json: docs/bench.md.

Exit codes: 0 done; 1 a step failed, or --baseline was given and a figure regressed by more than
--threshold percent; 2 usage (a bad flag, an unreadable baseline, an --out that cannot be written,
matplotlib missing).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _fail(message: str) -> int:
    print(f"tianwang bench: {message}", file=sys.stderr)
    return 2


def run_bench(args) -> int:
    try:
        import matplotlib  # noqa: F401  the plots
    except ImportError:
        return _fail("matplotlib is not installed (the plots); install the bench extra: pip install 'tianwang[bench]'")
    import logging

    from tianwang.gateway.benchmarks import runner

    # the gateways under test log to their own files; in this process, only what goes wrong
    if logging.getLogger().getEffectiveLevel() >= logging.INFO:
        for name in ("tianwang", "matplotlib"):
            logging.getLogger(name).setLevel(logging.WARNING)

    baseline = None
    if args.baseline:
        try:
            baseline = runner.load_baseline(args.baseline)
        except ValueError as exc:
            return _fail(f"--baseline: {exc}")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".tianwang-bench-probe"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        return _fail(f"--out {out}: cannot write there ({exc.strerror or exc})")

    results = runner.run(args.sections, args.quick, args.scale)
    comparison = runner.compare(results, baseline, args.threshold) if baseline is not None else None
    if comparison is not None and baseline is not None:
        results["baseline"] = {
            "path": str(args.baseline),
            "timestamp": baseline.get("timestamp"),
            "threshold_pct": args.threshold,
            "compared": len(comparison),
            "regressions": [c for c in comparison if c["regressed"]],
        }
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    plots = runner.write_plots(results, out)
    runner.write_report(
        results,
        comparison,
        plots,
        out,
        args.baseline,
        args.threshold,
        (baseline.get("quick"), baseline.get("scale")) if baseline is not None else None,
    )

    print(
        f"tianwang bench: {len(results['metrics'])} figures in {results['wall_s']:.0f} s "
        f"(USING_CEXT={results['machine']['using_cext']}): {out / 'results.json'}, {out / 'report.md'}, "
        f"{len(plots)} plots"
    )
    for skipped in results["skipped"]:
        print(f"skipped: {skipped['section']}: {skipped['what']}: {skipped['why']}")
    for error in results["errors"]:
        print(f"FAILED: {error['section']}: {error['step']}: {error['error']}")
    status = 1 if results["errors"] else 0
    if comparison is not None:
        regressed = [c for c in comparison if c["regressed"]]
        print(
            f"against {args.baseline}: {len(comparison)} figures compared, {len(regressed)} regressed beyond their "
            f"tolerance (the product's own figures; --threshold {args.threshold:g}%)"
        )
        for c in regressed:
            print(
                f"REGRESSION: {c['section']}: {c['name']}: {runner._fmt(c['baseline'], c['unit'])} -> "
                f"{runner._fmt(c['value'], c['unit'])} {c['unit']} ({runner._pct(c['change_pct'])})"
            )
        from tianwang.gateway.benchmarks.compare import load_warning

        busy = load_warning(results, baseline or {})
        if busy:
            print(f"warning: {busy}")
        if regressed:
            status = 1
    return status
