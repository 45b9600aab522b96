"""The bench plots on synthetic results: the decode speed-up panel shows the 5x target and a verdict,
log axes carry points rather than bars, a one-figure panel and a CPU figure below the clock's
resolution are not drawn as results."""

import matplotlib
import pytest

from tianwang.gateway.benchmarks import runner

matplotlib.use("Agg")


def m(section, name, value, unit, better="higher"):
    return {
        "section": section,
        "name": name,
        "unit": unit,
        "better": better,
        "value": value,
        "best": value,
        "repeats": 1,
    }


@pytest.fixture
def drawn(monkeypatch):
    """The figures write_plots saves, by file name (kept after they are closed)."""
    from matplotlib.figure import Figure

    figures = {}
    save = Figure.savefig

    def keep(self, path, *args, **kwargs):
        figures[str(path).rsplit("/", 1)[-1]] = self
        return save(self, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def results(speedups=(6.2, 5.4), cpu=0.003):
    ms = [
        m("nmea", "decode cext", 2.1e6, "sentences/s"),
        m("nmea", "decode python", 1.4e5, "sentences/s"),
        m("nmea", "decode pynmea2", 6.0e4, "sentences/s"),
        m("nmea", "tianwang decode nmea 20000 sentences", 0.4, "s", "lower"),  # alone in its unit
    ]
    ms += [m("nmea", f"tianwang decode / gpsdecode speed-up shape{i}", v, "x") for i, v in enumerate(speedups)]
    ms += [
        m("scale", "200 JT/T 808 terminals at 1 Hz: gateway CPU", cpu, "cores", "lower"),
        m("scale", "20 signal controllers polled at 1 Hz: gateway CPU", 0.41, "cores", "lower"),
        m("scale", "10 ONVIF cameras at 1 event/s: gateway CPU", 0.2, "cores", "lower"),
    ]
    runs = [
        {"label": "200 JT/T 808 terminals at 1 Hz", "window_s": 3.0},
        {"label": "20 signal controllers polled at 1 Hz", "window_s": 3.0},
        {"label": "10 ONVIF cameras at 1 event/s", "window_s": 4.0},
    ]
    return {"metrics": ms, "details": {"scale": {"runs": runs}}}


def panel(fig, unit):
    return next(ax for ax in fig.axes if ax.get_xlabel().startswith(unit))


def test_the_speed_up_panel_has_the_target_line_and_a_verdict(tmp_path, drawn):
    runner.write_plots(results(), tmp_path)
    ax = panel(drawn["nmea.png"], "x")
    assert any(list(line.get_xdata()) == [5.0, 5.0] for line in ax.get_lines())
    assert "target 5x met (lowest 5.40x)" in ax.get_title()
    runner.write_plots(results(speedups=(6.2, 3.9)), tmp_path)
    assert "target 5x NOT met (lowest 3.90x)" in panel(drawn["nmea.png"], "x").get_title()


def test_log_axes_carry_points_not_bars_and_one_figure_panels_are_left_out(tmp_path, drawn):
    runner.write_plots(results(), tmp_path)
    fig = drawn["nmea.png"]
    rates = panel(fig, "sentences/s")
    assert rates.get_xscale() == "log" and not rates.patches  # no bar lengths on a log axis
    assert [ax.get_xlabel() for ax in fig.axes] == ["sentences/s (log scale)", "x"]  # the lone "s" figure: not drawn


def test_a_cpu_figure_below_the_clocks_resolution_is_not_drawn(tmp_path, drawn):
    runner.write_plots(results(cpu=0.003), tmp_path)
    labels = [t.get_text() for t in panel(drawn["scale.png"], "cores").get_yticklabels()]
    assert labels == ["20 signal controllers polled at 1 Hz: gateway CPU", "10 ONVIF cameras at 1 event/s: gateway CPU"]
    runner.write_plots(results(cpu=0.2), tmp_path)
    assert len(panel(drawn["scale.png"], "cores").get_yticklabels()) == 3
