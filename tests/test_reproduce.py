"""scripts/reproduce.py: selection, metrics and verdicts, a real two-seed reproduction, resume and merge."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.runtime.logger import RunLogger
from scripts import reproduce

ROOT = Path(__file__).resolve().parents[1]
SCRIPTED = "homl18-scripted-cartpole"  # 500 episodes of a fixed rule: 5 at --budget-scale 0.01


def meta(**overrides):
    base = {"reported_value": 100.0, "compare": "higher", "tolerance": None, "metric": "eval/return_mean"}
    return {**base, **overrides}


def test_verdict_rules():
    assert reproduce.verdict(meta(), 105.0, 1.0) == ("reproduced", "within ±10 of the book")
    assert reproduce.verdict(meta(), 120.0, 1.0)[0] == "better"
    assert reproduce.verdict(meta(), 80.0, 1.0) == ("worse", "20 below the book (band ±10)")
    assert reproduce.verdict(meta(), 80.0, 25.0)[0] == "reproduced"  # the spread over seeds widens the band
    assert reproduce.verdict(meta(compare="lower"), 80.0, 0.0)[0] == "better"
    assert reproduce.verdict(meta(compare="approx", tolerance=0.5), 101.0, 0.0)[0] == "worse"
    assert reproduce.verdict(meta(compare="none"), 80.0, 0.0)[0] == "not comparable"
    assert reproduce.verdict(meta(reported_value=None), 80.0, 0.0)[0] == "not comparable"
    assert reproduce.verdict(meta(), None, None)[0] == "not comparable"
    table = meta(compare="approx", reported_value=[[1.0, float("-inf")], [2.0, 3.0]], tolerance=1e-6)
    assert reproduce.verdict(table, [[1.0, float("-inf")], [2.0, 3.0]], [[0, 0], [0, 0]])[0] == "reproduced"
    assert reproduce.verdict(table, [[1.0, float("-inf")], [2.0, 3.1]], [[0, 0], [0, 0]])[0] == "worse"
    assert reproduce.verdict(table, [1.0, 2.0], [0, 0])[0] == "not comparable"  # laid out differently
    shapes = [[4, 2, 3], [4, 2, 5], [4, 2, 3, 2]]  # ragged lists compare element by element too
    mean, std = reproduce.aggregate([shapes, shapes])
    assert (mean, std) == (shapes, [[0, 0, 0], [0, 0, 0], [0, 0, 0, 0]])
    ragged = meta(compare="approx", reported_value=shapes, tolerance=0)
    assert reproduce.verdict(ragged, mean, std) == ("reproduced", "exactly the book's")
    assert reproduce.verdict(ragged, [[4, 2, 3], [4, 2, 5], [4, 2, 3, 3]], std)[0] == "worse"


def gan(**overrides):
    return meta(**{"id": "test-gan", "kind": "gan", "metric": "losses/critic_real", "compare": "approx",
                   "reported_value": -72.0, "tolerance": 3.0, **overrides})


def scored(score, classes, relative, score_real=8.45, classes_real=10, distance=100.0):
    """Sample-quality metrics as a run's metrics.json records them (means over seeds look the same)."""
    return {"quality/score": score, "quality/score_real": score_real, "quality/classes_covered": classes,
            "quality/classes_covered_real": classes_real, "quality/frechet_distance_relative": relative,
            "quality/frechet_distance": distance}


# measured on the presets' MNIST classifier (docs/reproduction.md): real digits, uniform noise, and on the
# sevens of mtf10-wgan-mnist7: real sevens, noise and one seven repeated (the single-class score is ~1 for all)
REAL, NOISE = scored(8.37, 10, 0.003), scored(1.15, 3, 1.13)
SEVENS, SEVENS_NOISE = scored(1.12, 1, 0.012, 1.12, 1), scored(1.15, 0, 4.93, 1.12, 1)
ONE_SEVEN = scored(1.0, 1, 1.86, 1.12, 1)


def test_generative_verdicts_need_samples_that_pass_the_quality_bar():
    word, reason = reproduce.judge(gan(), -72.5, 0.0, REAL)
    assert word == "reproduced" and reason.startswith("within ±3 of the book; samples pass the quality bar (score ")
    # the WGAN whose critic loss matches the book's while its samples are noise: judged against its own sevens
    for samples in (SEVENS_NOISE, ONE_SEVEN):
        word, reason = reproduce.judge(gan(), -72.5, 0.0, samples)
        assert word == "worse" and reason.startswith(
            "reproduced on losses/critic_real (within ±3 of the book), but samples fail the quality bar (")
    assert "0 of 1 classes covered, < 0.9 × 1" in reproduce.judge(gan(), -72.5, 0.0, SEVENS_NOISE)[1]
    assert "relative Fréchet distance 1.86 > 0.5" in reproduce.judge(gan(), -72.5, 0.0, ONE_SEVEN)[1]
    assert reproduce.judge(gan(), -72.5, 0.0, SEVENS)[0] == "reproduced"
    better = gan(compare="higher", reported_value=-80.0)
    assert reproduce.judge(better, -60.0, 0.0, REAL)[0] == "better"
    assert reproduce.judge(better, -60.0, 0.0, NOISE)[0] == "worse"
    assert reproduce.judge(gan(), -50.0, 0.0, REAL)[0] == "worse"  # the metric alone already misses
    word, reason = reproduce.judge(gan(compare="none"), -50.0, 0.0, NOISE)  # no number: the word stays
    assert word == "not comparable" and "samples fail the quality bar" in reason
    lenient = gan(quality_bar={"score": 0.1, "classes_covered": 0.2, "frechet_distance_relative": 2})
    assert reproduce.judge(lenient, -72.5, 0.0, NOISE)[0] == "reproduced"
    with pytest.raises(reproduce.ReproduceError, match="meta.quality_bar: unknown quality bar part"):
        reproduce.judge(gan(quality_bar={"fid": 2}), -72.5, 0.0, NOISE)
    assert reproduce.judge(meta(kind="rl"), 105.0, 1.0, None) == ("reproduced", "within ±10 of the book")


def test_samples_recorded_before_the_quality_bar_are_not_judged_on_a_guess():
    before = {"frechet_distance": 1262.8, "class_coverage": 0.91}  # what results.json held before the bar
    word, reason = reproduce.judge(gan(), -72.5, 0.0, before)
    assert word == "not comparable" and reason.startswith("reproduced on losses/critic_real (within ±3 of the book), "
                                                          "but samples not judged: no quality score for the bar")
    assert reason.endswith("(judged before the quality bar: rerun it)")
    assert reproduce.judge(gan(), -72.5, 0.0, None)[0] == "not comparable"
    word, reason = reproduce.judge(gan(), -50.0, 0.0, before)  # a miss on the metric stays one
    assert word == "worse" and "judged before the quality bar: rerun it" in reason


def test_sample_quality_from_a_runs_metrics():
    metrics = {**scored(7.0, 10, 0.2), "quality/mode_collapse": False, "status": "completed", "losses/g": 1.0}
    assert reproduce.sample_quality(metrics) == scored(7.0, 10, 0.2)  # numbers only, flags left out
    assert reproduce.sample_quality({"status": "completed"}) is None
    two = reproduce.mean_quality([scored(7.0, 10, 0.2), {**scored(8.0, 9, 0.4), "quality/label_accuracy": 0.9}])
    assert two == pytest.approx(scored(7.5, 9.5, 0.3))  # keys every seed recorded
    assert reproduce.mean_quality([scored(7.0, 10, 0.2), None]) is None and reproduce.mean_quality([]) is None


def test_metric_values_from_metrics_json_and_tensorboard(tmp_path):
    logger = RunLogger(tmp_path)
    for step, value in enumerate([1.0, 5.0, 3.0, 4.0]):
        logger.scalar("charts/episodic_return", value, step)
    logger.write_metrics({"eval/return_mean": 7.5, "tabular/Q": [[1.0, 2.0], [3.0, 4.0]]})
    logger.close()
    assert reproduce.metric_value(tmp_path, "eval/return_mean") == 7.5
    assert reproduce.metric_value(tmp_path, "tabular/Q[1][0]") == 3.0
    assert reproduce.metric_value(tmp_path, "tabular/Q[0]") == [1.0, 2.0]
    assert reproduce.metric_value(tmp_path, "charts/episodic_return@max") == 5.0
    assert reproduce.metric_value(tmp_path, "charts/episodic_return@last2") == 3.5
    assert reproduce.metric_value(tmp_path, "charts/episodic_return@last") == 4.0
    assert reproduce.metric_value(tmp_path, "charts/episodic_return@mean") == pytest.approx(3.25)
    assert reproduce.metric_value(tmp_path, "missing/key") is None
    assert reproduce.metric_value(tmp_path, "missing/tag@max") is None
    with pytest.raises(reproduce.ReproduceError, match="@median"):
        reproduce.metric_value(tmp_path, "charts/episodic_return@median")
    assert reproduce.aggregate([1.0, 3.0]) == (2.0, 1.0)
    inf = float("inf")
    assert reproduce.aggregate([[1.0, -inf], [3.0, -inf]]) == ([2.0, -inf], [1.0, 0.0])


def test_selection_and_unavailable_presets():
    presets = reproduce.load_presets()
    assert reproduce.select(presets, ["homl18-q*"]) == ["homl18-qlearning-mdp3", "homl18-qvi-mdp3"]
    assert set(reproduce.select(presets, [], all_presets=True, kind="rl")) >= {SCRIPTED, "mtf8-bandit-egreedy"}
    assert all(presets[i]["kind"].startswith("rl") for i in reproduce.select(presets, [], True, "rl"))
    with pytest.raises(reproduce.ReproduceError, match="no preset matches 'nope-\\*'"):
        reproduce.select(presets, ["nope-*"])
    with pytest.raises(reproduce.ReproduceError, match="--all"):
        reproduce.select(presets, [])
    skipped = {"requires": [], "skip": "too long"}
    assert reproduce.unavailable(skipped) == "too long"
    assert reproduce.unavailable(skipped, named=True) is None
    missing = reproduce.unavailable({"requires": ["no_such_module_xyz"], "skip": None})
    assert missing.startswith("needs no_such_module_xyz")


def test_budget_scale_multiplies_the_budget_keys():
    presets = reproduce.load_presets()
    assert reproduce.budget_overrides(SCRIPTED, presets[SCRIPTED], 0.01) == ["agent.episodes=5"]
    assert reproduce.budget_overrides(SCRIPTED, presets[SCRIPTED], 1.0) == []


def test_dry_run_lists_and_runs_nothing(tmp_path, capsys):
    out, runs = tmp_path / "docs" / "reproduction.md", tmp_path / "runs"
    assert reproduce.main([SCRIPTED, "mtf8-gridworld-*", "homl18-ex-*", "--dry-run", "--out", str(out),
                           "--runs-dir", str(runs)]) == 0
    printed = capsys.readouterr().out
    assert f"run  {SCRIPTED}: seeds [0, 1, 2] (to run, to run, to run)" in printed
    assert "run  mtf8-gridworld-policy-eval: seeds [0] (to run)" in printed  # deterministic: meta.seeds 1
    # its meta says skip (a glob does not waive it); without the atari extra the missing package is named first
    assert ("skip homl18-ex-spaceinvaders: hours" in printed
            or "skip homl18-ex-spaceinvaders: needs ale_py" in printed)
    if importlib.util.find_spec("Box2D") is None:
        assert "skip homl18-ex-lunarlander: needs Box2D" in printed
    assert not runs.exists() and not out.exists()


def test_two_seeds_resume_merge_and_write(tmp_path, capsys):
    out, runs, docs = tmp_path / "out", tmp_path / "runs", tmp_path / "docs" / "reproduction.md"
    results_file = out / "results.json"
    results_file.parent.mkdir(parents=True)
    other = {"id": "mtf3-ae-mnist", "book": "MTF", "chapter": 3, "kind": "ae", "reported": "val MSE 0.0057",
             "reported_value": 0.0064, "metric": "losses/recon@last10", "compare": "lower", "seeds": [0],
             "completed_seeds": [0], "values": [0.005], "mean": 0.005, "std": 0.0, "budget_scale": 1.0,
             "budget_note": None, "wall_s_per_seed": 60.0, "substitute": "MNIST test file", "verdict": "better",
             "reason": "0.0014 below the book", "curve": None, "errors": {}, "date": "2024-01-01"}
    results_file.write_text(json.dumps({"mtf3-ae-mnist": other}))  # another engineer's earlier rows

    args = [SCRIPTED, "--seeds", "2", "--budget-scale", "0.01", "--out", str(out), "--runs-dir", str(runs),
            "--docs", str(docs)]
    assert reproduce.main(args) == 0
    assert not docs.parent.exists()  # no --write: the tracked report is left alone
    results = json.loads(results_file.read_text())
    assert results["mtf3-ae-mnist"] == other
    entry = results[SCRIPTED]
    per_seed = [json.loads((runs / SCRIPTED / f"seed{s}" / "metrics.json").read_text()) for s in (0, 1)]
    assert [m["train/episodes"] for m in per_seed] == [5, 5]
    assert entry["values"] == [m["eval/return_mean"] for m in per_seed]
    assert entry["mean"] == pytest.approx(np.mean(entry["values"]))
    assert entry["std"] == pytest.approx(np.std(entry["values"]))
    assert entry["completed_seeds"] == [0, 1] and entry["budget_scale"] == 0.01
    assert entry["verdict"] in ("reproduced", "better", "worse") and entry["curve"] == f"{SCRIPTED}.png"
    assert entry["quality"] is None and "quality bar" not in entry["reason"]  # an RL preset: no samples to judge
    assert (out / entry["curve"]).stat().st_size > 0

    report = (out / "reproduction.md").read_text()
    assert f"[png]({SCRIPTED}.png)" in report
    rl, generative = report.index("## Reinforcement learning"), report.index("## Generative models")
    assert report.index(f"`{SCRIPTED}`") > rl and report.index("`mtf3-ae-mnist`") > generative
    assert "×0.01" in report and "on a substitute: MNIST test file" in report
    not_run = report[report.index("## Not run"):]
    assert "`mtf8-bandit-egreedy`" in not_run and SCRIPTED not in not_run and "mtf3-ae-mnist" not in not_run

    capsys.readouterr()
    stamp = (runs / SCRIPTED / "seed0" / "metrics.json").stat().st_mtime_ns
    assert reproduce.main(args) == 0  # finished runs are reused, not run again
    assert "seed 0: done before, reused" in capsys.readouterr().out
    assert (runs / SCRIPTED / "seed0" / "metrics.json").stat().st_mtime_ns == stamp
    assert json.loads(results_file.read_text())[SCRIPTED]["values"] == entry["values"]

    # --write publishes the results directory into the tracked report: entries, curves, markdown
    (docs.parent / "reproduction").mkdir(parents=True)
    # an entry from before the quality bar, its verdict written by the old rules: the report judges it again
    old = {"mtf10-wgan-mnist7": {**other, "id": "mtf10-wgan-mnist7", "kind": "gan", "metric": "losses/critic_real",
                                 "compare": "approx", "reported_value": -72.178, "mean": -72.5, "std": 0.0,
                                 "completed_seeds": [0], "seeds": [0], "verdict": "worse", "reason": "old rules",
                                 "quality": {"frechet_distance": 1262.8, "class_coverage": 0.91}}}
    (docs.parent / "reproduction" / "results.json").write_text(json.dumps(old))
    assert reproduce.main(["--report-only", "--write", "--out", str(out), "--docs", str(docs)]) == 0
    published = json.loads((docs.parent / "reproduction" / "results.json").read_text())
    assert set(published) == {"mtf10-wgan-mnist7", "mtf3-ae-mnist", SCRIPTED} and published[SCRIPTED] == entry
    assert published["mtf10-wgan-mnist7"]["verdict"] == "not comparable"  # the file says what the report says
    assert (docs.parent / "reproduction" / f"{SCRIPTED}.png").read_bytes() == (out / entry["curve"]).read_bytes()
    assert f"[png](reproduction/{SCRIPTED}.png)" in docs.read_text()
    row = next(line for line in docs.read_text().splitlines() if line.startswith("| `mtf10-wgan-mnist7`"))
    assert "**not comparable**: reproduced on losses/critic_real" in row
    assert "(judged before the quality bar: rerun it)" in row and "old rules" not in row


def test_without_write_the_tracked_files_stay_as_they_are(tmp_path):
    """The command line with its defaults, from another directory: results land in ./reproduction there."""
    tracked = sorted(p for p in (ROOT / "docs").rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in tracked}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "reproduce.py"), SCRIPTED, "--seeds", "1",
                           "--budget-scale", "0.01", "--runs-dir", str(tmp_path / "runs")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "the tracked report changes only with --write" in done.stdout
    assert json.loads((tmp_path / "reproduction" / "results.json").read_text())[SCRIPTED]["completed_seeds"] == [0]
    assert (tmp_path / "reproduction" / "reproduction.md").is_file()
    assert sorted(p for p in (ROOT / "docs").rglob("*") if p.is_file()) == tracked
    assert all(p.read_bytes() == content for p, content in before.items())


def test_a_run_is_reused_only_with_the_same_overrides_and_preset(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "completed"}))
    overrides = ["experiment=x", "seed=0"]
    (tmp_path / reproduce.STAMP).write_text(json.dumps({"overrides": overrides, "preset_sha256": "abc"}))
    assert reproduce.is_done(tmp_path, overrides, "abc")
    assert not reproduce.is_done(tmp_path, overrides, "def")  # the preset changed since
    assert not reproduce.is_done(tmp_path, ["experiment=x", "seed=1"], "abc")
    digest = reproduce.preset_digest(SCRIPTED)
    assert len(digest) == 64 and digest == reproduce.preset_digest(SCRIPTED)
    assert digest != reproduce.preset_digest(SCRIPTED, ["seed=123"])  # the composed config counts, not the file
    assert digest == reproduce.preset_digest(SCRIPTED, ["meta.tolerance=0.5"])  # how to report is not the run


def test_failed_runs_are_reported(tmp_path):
    run_dir = tmp_path / "run"
    result = reproduce.run_one(run_dir, ["experiment=no-such-preset"])
    assert result["status"] == "failed" and "no-such-preset" in result["error"]
    assert (run_dir / "reproduce.log").is_file()
