"""NAB scorer and harness: published scores reproduced, the rules on small cases,
the sweep against a row-by-row reference, the harness end to end."""

from __future__ import annotations

import json
import math
import shutil
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

NAB = Path(__file__).resolve().parents[2] / "shared" / "nab"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import nab  # noqa: E402
import nab_detectors  # noqa: E402
import nab_scorer  # noqa: E402

LABELS = NAB / "labels" / "combined_windows.json"
PROFILES = NAB / "config" / "profiles.json"
PROFILE_NAMES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")

# ../shared/nab/NOTICE.md: NAB's scores on these 38 series, thresholds optimised on them.
PUBLISHED = {
    "ARTime": (72.60, 63.58, 78.40),
    "contextOSE": (69.24, 64.57, 73.38),
}

pytestmark = pytest.mark.skipif(not NAB.is_dir(), reason="../shared/nab is not there")


@pytest.fixture(scope="module")
def keys() -> list[str]:
    return nab_scorer.data_files(NAB / "data")


def score(results: Any) -> dict[str, dict[str, float]]:
    return nab_scorer.score_corpus(results, NAB / "data", LABELS, PROFILES)


def constant_results(keys: Sequence[str], value: float) -> dict[str, Any]:
    out = {}
    for k in keys:
        stamps, _ = nab_scorer.read_csv_column(NAB / "data" / k, "value")
        out[k] = (stamps, np.full(stamps.size, value))
    return out


# ---------------------------------------------------------------- fidelity


@pytest.mark.parametrize("detector", sorted(PUBLISHED))
def test_published_scores_reproduced(detector: str, keys: list[str]) -> None:
    """Scoring NAB's published result files gives NAB's published scores to two decimals."""
    got = score(nab_scorer.load_results(NAB / "results", detector, keys))
    for profile, want in zip(PROFILE_NAMES, PUBLISHED[detector], strict=True):
        assert round(got[profile]["score"], 2) == want, (profile, got[profile])


def test_null_detector_scores_zero(keys: list[str]) -> None:
    """A detector that never alarms scores 0.00 in every profile."""
    for value in (0.0, 0.5):
        got = score(constant_results(keys, value))
        for profile in PROFILE_NAMES:
            assert got[profile]["score"] == pytest.approx(0.0, abs=1e-9)


def test_perfect_detector_scores_hundred(keys: list[str]) -> None:
    """1 on the first row of every window and 0 elsewhere scores exactly 100."""
    labels = nab_scorer.load_labels(LABELS)
    results = constant_results(keys, 0.0)
    for k in keys:
        stamps, scores = results[k]
        for start, _ in labels[k]:
            scores[np.flatnonzero(stamps == np.datetime64(start, "us"))] = 1.0
    got = score(results)
    for profile in PROFILE_NAMES:
        assert got[profile]["score"] == pytest.approx(100.0, abs=1e-9)
        assert got[profile]["threshold"] == 1.0


def test_fixed_threshold_at_the_optimum_gives_the_optimum(keys: list[str]) -> None:
    """score_at at the optimised thresholds reproduces score_corpus's scores."""
    results = nab_scorer.load_results(NAB / "results", "ARTime", keys)
    best = score(results)
    at = nab_scorer.score_at(
        results,
        NAB / "data",
        LABELS,
        PROFILES,
        {p: v["threshold"] for p, v in best.items()},
    )
    for profile in PROFILE_NAMES:
        assert at[profile] == pytest.approx(best[profile]["score"], abs=1e-9)


# ---------------------------------------------------------------- the rules


def write_series(root: Path, key: str, n: int) -> list[str]:
    """A data file of n rows, five minutes apart; returns its timestamps."""
    stamps = [
        str(np.datetime64("2020-01-01T00:00") + np.timedelta64(5 * i, "m")).replace("T", " ")
        for i in range(n)
    ]
    path = root / "data" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("timestamp,value\n" + "".join(f"{t}:00,{i}\n" for i, t in enumerate(stamps)))
    return [f"{t}:00" for t in stamps]


def one_file(tmp_path: Path, n: int, window: tuple[int, int]) -> tuple[dict[str, Any], Any]:
    stamps = write_series(tmp_path, "c/f.csv", n)
    labels = {"c/f.csv": [[stamps[window[0]], stamps[window[1]]]]}
    return labels, nab_scorer.CostMatrix(tp=1.0, fp=0.11, fn=1.0)


def raw_with_detections(tmp_path: Path, labels: Any, n: int, rows: Sequence[int]) -> float:
    scores = np.zeros(n)
    scores[list(rows)] = 1.0
    corpus = nab_scorer.build_corpus({"c/f.csv": (None, scores)}, tmp_path / "data", labels)
    return corpus.raw_at(nab_scorer.CostMatrix(tp=1.0, fp=0.11, fn=1.0), 1.0)


def S(x: float) -> float:
    return -1.0 if x > 3 else 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


def test_scoring_rules_on_one_window(tmp_path: Path) -> None:
    """First detection only, sigmoid position, FP distance, probation: NAB's rules."""
    n, lo, hi = 100, 40, 49  # probation is rows 0..14; the window is 10 rows wide
    labels, cost = one_file(tmp_path, n, (lo, hi))

    def raw(*rows: int) -> float:
        return raw_with_detections(tmp_path, labels, n, rows)

    assert raw() == pytest.approx(-cost.fn)
    assert raw(lo) == pytest.approx(cost.tp)  # the earliest detection earns exactly tpWeight
    assert raw(hi) == pytest.approx(S(-1 / 10) / S(-1.0))
    assert raw(hi, lo + 5, lo) == pytest.approx(cost.tp)  # only the earliest counts
    assert raw(5) == pytest.approx(-cost.fn)  # probationary: ignored
    assert raw(20) == pytest.approx(-cost.fn - cost.fp)  # no window before: full FP cost
    assert raw(hi + 1) == pytest.approx(-cost.fn + cost.fp * S(1 / 9))  # just after: cheap
    assert raw(hi + 18) == pytest.approx(-cost.fn + cost.fp * S(18 / 9))
    assert raw(99) == pytest.approx(-cost.fn - cost.fp)  # past 3 widths: full FP cost
    assert raw(lo, 20, 60) == pytest.approx(cost.tp - cost.fp + cost.fp * S(11 / 9))


def test_probation_is_capped_at_750_rows() -> None:
    """The probationary period is 15% of the file, at most 15% of 5000 rows."""
    assert nab_scorer.probation_rows(1000) == 150
    assert nab_scorer.probation_rows(4032) == 604
    assert nab_scorer.probation_rows(22695) == 750


def reference_raw(
    n: int, windows: Sequence[tuple[int, int]], scores: np.ndarray, t: float, cost: Any
) -> float:
    """NAB's rules row by row, as the paper states them (first detection per window)."""
    prob = min(math.floor(0.15 * n), 750)
    total = 0.0
    for lo, hi in windows:
        if hi < prob:
            continue
        hits = [i for i in range(max(lo, prob), hi + 1) if scores[i] >= t]
        if hits:
            total += cost.tp * S(-(hi - hits[0] + 1) / (hi - lo + 1)) / S(-1.0)
        else:
            total -= cost.fn
    for i in range(prob, n):
        if scores[i] < t or any(lo <= i <= hi for lo, hi in windows):
            continue
        before = [(lo, hi) for lo, hi in windows if hi < i]
        if not before:
            total -= cost.fp
        else:
            lo, hi = before[-1]
            total += cost.fp * S((i - hi) / (hi - lo))
    return total


def test_sweep_matches_row_by_row_reference(tmp_path: Path) -> None:
    """Every threshold of the vectorised sweep scores what the row-by-row rules say."""
    rng = np.random.default_rng(7)
    files = {
        "a/one.csv": (300, [(10, 60), (150, 180)]),  # the first window starts in probation
        "a/two.csv": (500, []),
        "b/three.csv": (1200, [(400, 450), (452, 470), (900, 1100)]),
    }
    labels, results = {}, {}
    for key, (n, windows) in files.items():
        stamps = write_series(tmp_path, key, n)
        labels[key] = [[stamps[lo], stamps[hi]] for lo, hi in windows]
        results[key] = (None, np.round(rng.random(n), 2))  # rounding makes ties
    corpus = nab_scorer.build_corpus(results, tmp_path / "data", labels)
    for cost in nab_scorer.cost_matrices(nab_scorer.load_profiles(PROFILES)).values():
        thresholds, raw = corpus.sweep(cost)
        assert thresholds[0] == 1.1 and np.all(np.diff(thresholds) < 0)
        for t, r in zip(thresholds, raw, strict=True):
            want = sum(reference_raw(n, w, results[k][1], t, cost) for k, (n, w) in files.items())
            assert r == pytest.approx(want, abs=1e-9)
            assert corpus.raw_at(cost, float(t)) == pytest.approx(want, abs=1e-9)
        t_best, r_best = corpus.optimise(cost)
        assert r_best == raw.max() and t_best == thresholds[np.flatnonzero(raw == raw.max())[0]]


def test_optimiser_takes_the_highest_threshold_on_a_tie(tmp_path: Path) -> None:
    """Thresholds that score the same: NAB keeps the highest."""
    n, lo, hi = 100, 40, 49
    labels, cost = one_file(tmp_path, n, (lo, hi))
    scores = np.zeros(n)
    scores[lo], scores[lo + 3] = 0.9, 0.8  # 0.8 adds a later, worthless detection
    corpus = nab_scorer.build_corpus({"c/f.csv": (None, scores)}, tmp_path / "data", labels)
    assert corpus.optimise(cost) == (0.9, pytest.approx(cost.tp))


def test_misaligned_results_are_refused(tmp_path: Path) -> None:
    """Results with the wrong length, or other timestamps, name the file."""
    labels, _ = one_file(tmp_path, 100, (40, 49))
    with pytest.raises(ValueError, match=r"c/f\.csv: 99 anomaly scores for 100 rows"):
        nab_scorer.build_corpus({"c/f.csv": (None, np.zeros(99))}, tmp_path / "data", labels)
    wrong = [datetime(2021, 1, 1)] * 100
    with pytest.raises(ValueError, match="timestamps differ"):
        nab_scorer.build_corpus({"c/f.csv": (wrong, np.zeros(100))}, tmp_path / "data", labels)


def test_leave_one_category_out_thresholds_come_from_other_categories(keys: list[str]) -> None:
    """Each category is scored at the threshold optimised without it."""
    results = nab_scorer.load_results(NAB / "results", "ARTime", keys)
    corpus = nab_scorer.build_corpus(results, NAB / "data", nab_scorer.load_labels(LABELS))
    cost = nab_scorer.cost_matrices(nab_scorer.load_profiles(PROFILES))["standard"]
    got, per_category = nab_scorer.leave_one_category_out(corpus, cost)
    assert len(per_category) == 5
    for c, t in per_category.items():
        others = [k for k in keys if nab_scorer.category(k) != c]
        assert t == corpus.optimise(cost, others)[0]
    per_file = {k: per_category[nab_scorer.category(k)] for k in keys}
    assert got == pytest.approx(corpus.normalise(cost, corpus.raw_at(cost, per_file)))


# ---------------------------------------------------------------- the harness

SMALL = (
    "artificialNoAnomaly/art_noisy.csv",
    "artificialWithAnomaly/art_daily_jumpsup.csv",
    "realKnownCause/rogue_agent_key_hold.csv",
    "realAWSCloudwatch/iio_us-east-1_i-a2eb1cd9_NetworkIn.csv",
)


@pytest.fixture
def small_dir(tmp_path: Path) -> Path:
    """Four NAB series in four categories, in NAB's layout."""
    root = tmp_path / "nab"
    for key in SMALL:
        (root / "data" / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(NAB / "data" / key, root / "data" / key)
    labels = nab_scorer.load_labels(LABELS)
    (root / "labels").mkdir()
    subset = json.dumps({k: labels[k] for k in SMALL})
    (root / "labels" / "combined_windows.json").write_text(subset)
    (root / "config").mkdir()
    shutil.copy(PROFILES, root / "config" / "profiles.json")
    return root


def test_harness_writes_nab_results_and_thresholds(
    small_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """nab.py writes one NAB results file per series and the shipped thresholds."""
    out = tmp_path / "out"
    assert nab.main(["--data", str(small_dir), "--results", str(out), "--detector", "zscore"]) == 0
    for key in SMALL:
        category, name = key.split("/")
        path = out / "zscore" / category / f"zscore_{name}"
        lines = path.read_text().splitlines()
        assert lines[0].startswith("timestamp,anomaly_score")
        assert len(lines) == len((small_dir / "data" / key).read_text().splitlines())
    table = json.loads((out / "thresholds.json").read_text())
    assert set(table["zscore"]) == set(PROFILE_NAMES)
    for entry in table["zscore"].values():
        assert 0.0 <= entry["threshold"] <= 1.1
        assert entry["source"] == "leave-one-category-out"
    printed = capsys.readouterr().out
    assert "us/point" in printed and "NAB-optimised" in printed


def test_harness_fixed_thresholds_are_scored_as_given(
    small_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--thresholds-from fixed scores at the thresholds of the given file."""
    out = tmp_path / "out"
    shipped = tmp_path / "shipped.json"
    shipped.write_text(json.dumps({"zscore": {p: {"threshold": 0.7} for p in PROFILE_NAMES}}))
    args = ["--data", str(small_dir), "--results", str(out), "--thresholds-from", "fixed"]
    args += ["--detector", "zscore"]
    assert nab.main([*args, "--thresholds-file", str(shipped)]) == 0
    with pytest.raises(SystemExit, match="no thresholds for detector 'null'"):
        nab.main([*args[:-2], "--detector", "null", "--thresholds-file", str(shipped)])
    table = json.loads((out / "thresholds.json").read_text())["zscore"]
    results = nab_scorer.load_results(out, "zscore", SMALL)
    want = nab_scorer.score_at(
        results,
        small_dir / "data",
        small_dir / "labels" / "combined_windows.json",
        PROFILES,
        dict.fromkeys(PROFILE_NAMES, 0.7),
    )
    for profile in PROFILE_NAMES:
        assert table[profile]["threshold"] == 0.7
        assert table[profile]["score"] == pytest.approx(want[profile])


@pytest.mark.parametrize("fitted_here", [True, False])
def test_harness_does_not_call_an_in_sample_score_shipped(
    small_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fitted_here: bool,
) -> None:
    """Thresholds fitted on these very labels are scored leave-one-category-out, not as given."""
    path = small_dir / "labels" / "combined_windows.json"
    labels = json.loads(path.read_text())
    path.write_text(json.dumps(labels, indent=4))  # the same labels laid out differently
    other = {**labels, "extra/series.csv": []}
    sha = nab_scorer.labels_digest(labels if fitted_here else other)
    base = nab_detectors.get("zscore")
    spec = nab_detectors.DetectorSpec(
        base.make, base.make_batch, dict.fromkeys(PROFILE_NAMES, 0.7), calibrated_on=sha
    )
    monkeypatch.setitem(nab_detectors.REGISTRY, "fitted", lambda: spec)
    out = tmp_path / "out"
    assert nab.main(["--data", str(small_dir), "--results", str(out), "--detector", "fitted"]) == 0
    table = json.loads((out / "thresholds.json").read_text())["fitted"]
    sources = {entry["source"] for entry in table.values()}
    assert sources == ({"leave-one-category-out"} if fitted_here else {"fixed"})
    assert ("in-sample" in capsys.readouterr().out) == fitted_here
    # Asked for explicitly, fixed thresholds are scored as given, but flagged when in-sample.
    args = ["--data", str(small_dir), "--results", str(out), "--detector", "fitted"]
    assert nab.main([*args, "--thresholds-from", "fixed"]) == 0
    table = json.loads((out / "thresholds.json").read_text())["fitted"]
    assert {entry["source"] for entry in table.values()} == {"fixed"}
    assert all(entry.get("in_sample", False) == fitted_here for entry in table.values())


def test_batched_and_single_paths_agree(small_dir: Path) -> None:
    """The lockstep batch (series of different lengths, masked) scores what step() scores."""
    series = nab.load_series(small_dir / "data", SMALL)
    assert len({s.values.size for s in series}) > 1
    spec = nab_detectors.get("zscore")
    single, _ = nab.run_single(spec, series)
    batched, _ = nab.run_batch(spec, series)
    for a, b in zip(single, batched, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_scores_outside_unit_interval_are_refused(
    small_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A detector answering outside [0, 1] stops the run, naming file and row."""

    class Loud:
        def step(self, timestamp: datetime, value: float) -> float:
            return 1.5

    monkeypatch.setitem(nab_detectors.REGISTRY, "loud", lambda: nab_detectors.DetectorSpec(Loud))
    with pytest.raises(ValueError, match=r"art_noisy\.csv: data row 1 scored 1\.5"):
        nab.main(["--data", str(small_dir), "--results", str(tmp_path), "--detector", "loud"])


def test_harness_runs_the_agents_detector_by_default() -> None:
    """The issue's command line (no --detector) measures the agent's own detector."""
    args = nab.parse_args(["--data", "d", "--results", "r"])
    assert args.detector == "cityedge"
    assert "cityedge" in nab_detectors.REGISTRY
