"""Timing you can rank on: interleaved rounds in fresh processes, the median of rounds as the
figure with its spread and interval, and differences inside the spread treated as ties by
the speed-up, the Pareto front and the recommendation. (Nothing here depends on how fast this
machine is: the rankings are checked on recorded rows, the harness on its structure.)"""
import numpy as np

from pipeline.device.timing import combine_rounds, faster, index_rows, rotated, summarize
from pipeline.running.recommend import recommend
from pipeline.running.report import pareto


def test_rounds_rotate_so_every_artifact_takes_every_slot():
    orders = [rotated(["A", "B", "C"], index) for index in range(3)]
    assert orders == [["A", "B", "C"], ["B", "C", "A"], ["C", "A", "B"]]
    assert all(sorted(position) == ["A", "B", "C"] for position in zip(*orders))


def test_the_figure_is_the_median_of_rounds_with_spread_and_interval():
    rows = [{"artifact": "m.tflite", "threads": 1, "p50_ms": p50, "method": {"runs": 3},
             "times_ms": [p50 - 0.001, p50, p50 + 0.001]} for p50 in (0.040, 0.081, 0.043)]
    row = summarize(rows)
    assert row["p50_ms"] == 0.043 and row["p50_rounds_ms"] == [0.040, 0.081, 0.043]
    assert row["p50_spread_ms"] == 0.081 - 0.040 and "times_ms" not in row
    low, high = row["p50_ci95_ms"]
    assert 0.039 <= low <= row["p50_ms"] <= high <= 0.082
    assert summarize(rows) == row  # seeded bootstrap


def test_the_percentiles_stay_ordered_when_one_round_is_faster_and_longer():
    """A loaded machine: one round ran 1,000 fast calls, two ran 50 slow ones. The pooled
    times would put p90 below the median of the rounds' p50s; each percentile is the median
    of the rounds' own, so p50 <= p90 <= p99."""
    rng = np.random.default_rng(0)
    rounds = []
    for centre, runs in ((0.05, 1000), (0.20, 50), (0.21, 50)):
        times = centre * (1 + 0.01 * rng.random(runs))
        rounds.append({"artifact": "m.tflite", "threads": 1, "method": {"runs": runs}, "times_ms": list(times),
                       **{f"p{q}_ms": float(np.percentile(times, q)) for q in (50, 90, 99)}})
    pooled = np.concatenate([r["times_ms"] for r in rounds])
    assert np.percentile(pooled, 90) < np.median([r["p50_ms"] for r in rounds])  # the trap
    row = summarize(rounds)
    assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
    assert row["p90_ms"] == float(np.median([r["p90_ms"] for r in rounds]))
    assert row["runs_pooled"] == 1100 and row["min_ms"] == float(pooled.min())


def test_rows_of_artifacts_sharing_a_name_stay_apart():
    """A search's baseline and winner are both model_int8.tflite, in other folders."""
    rounds = []
    for index in range(3):
        order = rotated([0, 1], index)
        timed = [{"artifact": "model_int8.tflite", "threads": 1, "p50_ms": 1.0 + i, "method": {"runs": 1}}
                 for i in order]
        rounds.append(index_rows(timed, order))
    combined = combine_rounds(rounds)
    assert [row["p50_rounds_ms"] for row in combined] == [[1.0] * 3, [2.0] * 3]


def _row(name, p50, spread, size, score=0.97):
    return {"artifact": name, "dir": ".", "format": "tflite", "mode": name.split("_")[-1].split(".")[0],
            "p50_ms": p50, "p50_spread_ms": spread, "size_kb": size, "score": score, "passed": True,
            "failed_gates": [], "metric": "accuracy", "delta": 0.0, "arena_kb": None, "flash_kb": None}


def test_differences_inside_the_spread_are_ties():
    dynamic, int8 = _row("model_dynamic.tflite", 0.030, 0.012, 100.0), _row("model_int8.tflite", 0.036, 0.030, 60.0)
    assert not faster(dynamic, int8) and not faster(int8, dynamic)  # 6 µs apart, spreads of 12 and 30
    assert faster(_row("a", 0.010, 0.001, 1), _row("b", 0.030, 0.002, 1))
    rows = [dynamic, int8, _row("model_float32.tflite", 0.090, 0.005, 400.0)]
    pareto(rows)
    assert [r["pareto"] for r in rows] == [False, True, False]  # int8: as fast (tie) and smaller
    chosen = recommend(rows, {"max_accuracy_drop": 0.01}).chosen
    assert chosen["artifact"] == "model_int8.tflite"
    # a tie on latency and size goes to the more accurate
    rows = [_row("a", 0.030, 0.010, 60.0, score=0.95), _row("b", 0.032, 0.010, 60.0, score=0.97)]
    pareto(rows)
    assert recommend(rows, {}).chosen["artifact"] == "b"


def test_bench_times_every_artifact_in_rounds(trained_run, tmp_path):
    import json
    import shutil

    from typer.testing import CliRunner

    from pipeline.cli import app

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir, ignore=shutil.ignore_patterns("*.lock"))
    quantized = CliRunner().invoke(app, ["quantize", "--int8", "--dynamic", "--no-recover", "--run", str(run_dir)])
    assert quantized.exit_code == 0
    result = CliRunner().invoke(app, ["bench", "--run", str(run_dir),
                                      "--artifact", "model_dynamic.tflite,model_int8.tflite",
                                      "--min-seconds", "0.15", "--runs", "30"])
    assert result.exit_code == 0, result.output
    bench = json.loads((run_dir / "bench.json").read_text())
    assert bench["timing"]["rounds"] == 3 and bench["timing"]["process"] == "a fresh process per round"
    assert [r["artifact"] for r in bench["results"]] == ["model_dynamic.tflite", "model_int8.tflite"]
    for row in bench["results"]:
        assert len(row["p50_rounds_ms"]) == 3 and row["p50_ms"] == float(np.median(row["p50_rounds_ms"]))
        assert row["p50_spread_ms"] == max(row["p50_rounds_ms"]) - min(row["p50_rounds_ms"])
        low, high = row["p50_ci95_ms"]
        assert low <= high and row["runs_pooled"] >= 30
