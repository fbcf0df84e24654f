"""benchmarks/gpu_suite.py: the one-command GPU measurement (docs/scaling.md, "GPU figures").

The smoke run is the README-style command in a fresh process; its summary is checked against the
figures each stage wrote to its own file, read here independently. The budget logic is checked with
stand-in stages (tiny Python commands), so that a stage killed by its time limit keeps the others'
figures."""

import json
import os
import subprocess
import sys
import time

import pytest
from harness import load_benchmark, subprocess_env

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


def _load(path):
    with open(path) as f:
        return json.load(f)


def test_smoke_suite_runs_every_stage_and_its_summary_reports_the_stage_files(tmp_path):
    out = tmp_path / "suite"
    proc = subprocess.run([sys.executable, "benchmarks/gpu_suite.py", "--smoke", "--out", str(out),
                           "--batch-size", "4", "--pretrain-steps", "4"],
                          cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    suite = _load(out / "suite.json")
    assert list(suite["stages"]) == ["step", "pipeline", "pretrain", "search"]
    assert all(r["status"] == "ok" for r in suite["stages"].values())
    step, pipeline = _load(out / "step.json"), _load(out / "pipeline.json")
    pretrain, search = _load(out / "pretrain-run" / "summary.json"), _load(out / "search.json")
    for name, figures in (("step", step), ("pipeline", pipeline), ("pretrain", pretrain), ("search", search)):
        assert suite["stages"][name]["figures"] == figures
    # Each figure is consistent with the quantities it is made of.
    for kind in ("fra", "floor"):
        s = step["steps"][kind]
        assert s["samples_per_s"] == pytest.approx(4 / (s["ms_per_step"] / 1000), rel=1e-9)
    assert step["ratios"]["fra/floor"] == pytest.approx(step["steps"]["fra"]["ms_per_step"]
                                                        / step["steps"]["floor"]["ms_per_step"], rel=1e-9)
    assert step["batch_size"] == 4 and step["peak_memory_gib"]["host_rss"] > 0.1
    assert pretrain["steps_run"] == 4
    assert (pretrain["throughput"]["warmup_steps"], pretrain["throughput"]["timed_steps"]) == (1, 3)
    assert set(pipeline["rates"]) == {"decode", "cpu", "device"} and pipeline["cores"] == os.cpu_count()
    assert search["largest"]["batch_size"] == 4                    # the smoke search's simulated limit
    summary = (out / "summary.md").read_text()
    fra_rate = step["steps"]["fra"]["samples_per_s"]
    for value in (fra_rate, step["steps"]["floor"]["samples_per_s"], pretrain["throughput"]["samples_per_second"],
                  pipeline["rates"]["decode"]["wall"], pipeline["rates"]["device"]["wall"]):
        assert f"| {value:,.1f} |" in summary
    ratio = pipeline["rates"]["device"]["wall"] / fra_rate
    assert f"{'yes' if ratio >= 1 else 'no'} ({ratio:.2f}x the step's rate)" in summary
    assert "goal: at least 1,200 samples/s | not met" in summary


def _stand_in(suite, monkeypatch, scripts):
    """Replace each stage's command with `python -c script`, PATH in the script being <stage>.json."""
    def command(stage, args):
        path = os.path.join(args.out, f"{stage}.json")
        return [sys.executable, "-c", scripts[stage].replace("PATH", repr(path))], path

    monkeypatch.setattr(suite, "stage_command", command)


def test_a_stage_over_its_time_keeps_the_figures_of_the_others(tmp_path, monkeypatch):
    suite = load_benchmark("gpu_suite")
    monkeypatch.setattr(suite, "MIN_STAGE_S", 0.5)
    monkeypatch.setattr(suite, "SHARES", {"step": 0.5, "pipeline": 0.2, "pretrain": 0.5, "search": 1.0})
    pipeline = {"rates": {k: {"wall": w} for k, w in (("decode", 900.0), ("cpu", 300.0), ("device", 700.0))},
                "cores": 16}
    _stand_in(suite, monkeypatch, {
        "step": "import json; json.dump({'batch_size': 8, 'precision': 'p', 'xla': True, 'steps': {'fra': "
                "{'samples_per_s': 1234.5}, 'floor': {'samples_per_s': 2000.0}}, 'ratios': {'fra/floor': 1.62}, "
                "'peak_memory_gib': {'gpu0': 30.25}}, open(PATH, 'w'))",
        "pipeline": f"import json; json.dump({pipeline!r}, open(PATH, 'w'))",
        "pretrain": "import time; time.sleep(60)",
        "search": "import sys; sys.exit(3)",
    })
    args = suite.parse_args(["--out", str(tmp_path), "--budget-s", "10"])
    start = time.monotonic()
    assert suite.main(["--out", str(tmp_path), "--budget-s", "10"]) == 1
    assert time.monotonic() - start < 30
    stages = _load(tmp_path / "suite.json")["stages"]
    assert stages["step"]["status"] == stages["pipeline"]["status"] == "ok"
    assert stages["pretrain"]["status"].startswith("timed out after 5 s")       # its share: 0.5 x 10 s
    assert stages["search"]["status"] in ("failed (exit 3)", "skipped (budget spent)")
    summary = (tmp_path / "summary.md").read_text()
    assert "| FRA training step, samples/s per device (batch 8, p, XLA on) | 1,234.5 |" in summary
    assert "| goal: at least 1,200 samples/s | met |" in summary
    assert "| peak device memory of the step process, GiB (GPU:0; both models) | 30.25 |" in summary
    assert "| input pipeline (on-device path) faster than the FRA step | no (0.57x the step's rate) |" in summary
    assert f"| end to end: `pretrain --preset paper` | {stages['pretrain']['status']} |" in summary
    assert args.budget_s == 10


def test_a_stage_is_skipped_when_the_budget_is_spent(tmp_path, monkeypatch):
    suite = load_benchmark("gpu_suite")
    _stand_in(suite, monkeypatch, {"step": "raise SystemExit(0)"})
    args = suite.parse_args(["--out", str(tmp_path)])
    record = suite.run_stage("step", args, time.monotonic() + 5, str(tmp_path / "step.log"))
    assert record["status"] == "skipped (budget spent)" and record["figures"] is None


@pytest.mark.parametrize("argv, message", [
    (["--stages", "step,warp"], "--stages: warp not known"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
])
def test_bad_arguments_get_one_clear_line(argv, message, tmp_path, capsys):
    suite = load_benchmark("gpu_suite")
    with pytest.raises(SystemExit) as e:
        suite.parse_args(["--out", str(tmp_path)] + argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
