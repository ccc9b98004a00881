"""The anomaly runtime: causal, silent while warming up, batch-invariant, compact."""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from cityedge.anomaly import AnomalyEngine, BlockModel, BlockTable, StreamTable
from cityedge.anomaly.block import one_alarm_per_event, score_block_rows, sustained_z
from cityedge.anomaly.nab import DEFAULT_MODEL, make, make_batch
from cityedge.anomaly.records import envelope_records

MODELS = Path(__file__).resolve().parents[1] / "models"
MODEL = "window_novelty"
BLOCK_MODEL = "block_novelty"
T0 = datetime(2024, 1, 1)
both = pytest.mark.parametrize("model", [MODEL, BLOCK_MODEL])


def series(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 50 + 10 * np.sin(2 * np.pi * t / 96) + rng.normal(0, 1, n)


def run_one(values: np.ndarray, model: str = MODEL) -> list[float]:
    engine = AnomalyEngine(MODELS)
    engine.add_stream("s", model)
    step = timedelta(minutes=5)
    return [engine.step([("s", T0 + i * step, float(v))])[0][1] for i, v in enumerate(values)]


@both
def test_score_does_not_depend_on_future_values(model: str) -> None:
    """Scores up to t are identical whatever the readings after t are."""
    a = series(700, 1)
    b = a.copy()
    b[500:] += 1000.0  # a wild future
    sa, sb = run_one(a, model), run_one(b, model)
    assert sa[:500] == sb[:500]
    assert sa[500:] != sb[500:]


@both
def test_warm_up_raises_no_alarm(model: str) -> None:
    """A new stream scores 0 during warm-up, even on wild readings."""
    engine = AnomalyEngine(MODELS)
    engine.add_stream("s", model)
    warmup = engine.model_of("s").post.warmup
    rng = np.random.default_rng(2)
    wild = rng.normal(0, 1, warmup) * 10.0 ** rng.integers(0, 6, warmup)
    scores = [engine.step([("s", T0, float(v))])[0][1] for v in wild]
    assert scores == [0.0] * warmup


def test_spike_after_warm_up_scores_high() -> None:
    """A large spike in a regular series scores well above anything before it."""
    x = series(900, 3)
    x[800] += 80.0
    s = run_one(x)
    assert s[800] == max(s)
    assert s[800] > 2 * max(s[:800])


@both
def test_batched_equals_one_at_a_time(model: str) -> None:
    """Scoring streams together in one tick gives the scores they get alone."""
    n, length = 5, 400
    data = [series(length, 10 + k) for k in range(n)]
    data[2][300] += 100.0
    alone = [run_one(d, model) for d in data]
    engine = AnomalyEngine(MODELS)
    for k in range(n):
        engine.add_stream(k, model)
    together: list[list[float]] = [[] for _ in range(n)]
    for i in range(length):
        # Streams arrive in a different order every tick, and stream 4 skips odd ticks.
        order = [(k * 3 + i) % n for k in range(n)]
        batch = [(k, T0, float(data[k][i])) for k in order]
        for k, s in engine.step(batch):
            together[int(k)].append(s)  # type: ignore[call-overload]
    for k in range(n):
        np.testing.assert_allclose(together[k], alone[k], rtol=1e-6, atol=1e-9)


@both
def test_skipped_streams_keep_their_state(model: str) -> None:
    """A stream absent from a tick is untouched: its scores are those it gets alone."""
    x, y = series(300, 20), series(600, 21)
    alone = run_one(x, model)
    engine = AnomalyEngine(MODELS)
    engine.add_stream("x", model)
    engine.add_stream("y", model)
    got = []
    xi = 0
    for i in range(600):
        batch = [("y", T0, float(y[i]))]
        if i % 2 == 0:
            batch.append(("x", T0, float(x[xi])))
            xi += 1
        for k, s in engine.step(batch):
            if k == "x":
                got.append(s)
    np.testing.assert_allclose(got, alone, rtol=1e-6, atol=1e-9)


@both
def test_non_finite_reading_scores_zero_and_changes_nothing(model: str) -> None:
    """NaN and inf score 0 and leave the stream as if they never came."""
    x = series(400, 4)
    clean = run_one(x, model)
    engine = AnomalyEngine(MODELS)
    engine.add_stream("s", model)
    got = []
    for i, v in enumerate(x):
        if i in (200, 350):
            assert engine.step([("s", T0, math.nan)]) == [("s", 0.0)]
            assert engine.step([("s", T0, math.inf)]) == [("s", 0.0)]
        got.append(engine.step([("s", T0, float(v))])[0][1])
    assert got == clean


def test_spike_scores_high_in_block_model() -> None:
    """The block model flags a large spike when the spike's block completes."""
    x = series(2400, 3)
    x[2000] += 80.0
    s = run_one(x, BLOCK_MODEL)
    top = int(np.argmax(s))
    assert 2000 <= top < 2006
    assert s[top] > 2 * max(s[500:2000])


def _block_scores(values: np.ndarray, **post: float) -> np.ndarray:
    """score_block_rows one reading at a time, with some post parameters replaced."""
    model = AnomalyEngine(MODELS).model_of_name(BLOCK_MODEL)
    assert isinstance(model, BlockModel)
    model.post = dataclasses.replace(model.post, **post)
    table = BlockTable.for_model(model, capacity=1)
    row = np.array([table.allocate()])
    return np.array([score_block_rows(model, table, row, np.array([v]))[0] for v in values])


def test_block_novelty_scores_only_completed_blocks() -> None:
    """With range records off, readings that do not complete a block score 0."""
    x = series(1200, 8)
    x[1000] += 80.0
    s = _block_scores(x, record_scale=0.0)
    assert s[1000:1006].any()
    assert all(v == 0.0 for i, v in enumerate(s) if (i + 1) % 6)


def test_range_record_scores_at_the_reading_itself() -> None:
    """A reading beyond the memory's range scores at once, e / (e + record_scale)."""
    x = series(1500, 9)
    x[1201] = x[:1201].max() + 0.5 * np.ptp(x[:1201])  # mid-block, half the range above
    s = _block_scores(x, suppress_half_life=1e9)  # novelty stays silent after its first alarm
    e = 0.5
    assert s[1201] == pytest.approx(e / (e + 0.1), rel=1e-3)
    inside = _block_scores(series(1500, 9), record_scale=0.1, suppress_half_life=1e9)
    assert inside[1201] < 0.2  # no record without the excursion


def test_records_alarm_now_and_then_on_a_drift() -> None:
    """A drift past the old extremes alarms early, then now and then, not at every reading."""
    x = series(3000, 10)
    x[2000:] += np.linspace(0, 40, 1000)  # the mean climbs past every earlier maximum
    s = _block_scores(x, stats_alpha=1.0, suppress_half_life=1e9)
    fired = np.flatnonzero(s[2000:] > 0.3)
    assert 0 < fired.size <= 15 and fired[0] < 100


def _sustained(
    d_fine: np.ndarray, k: int = 16, valid: np.ndarray | None = None
) -> tuple[np.ndarray, list[int]]:
    """sustained_z for one stream fed one fine-scale novelty per block (coarse invalid).

    Returns the z per block and, per block, how many means the fine scale has seen.
    """
    model = AnomalyEngine(MODELS).model_of_name(BLOCK_MODEL)
    assert isinstance(model, BlockModel)
    p = dataclasses.replace(model.post, sustain_blocks=k)
    table = BlockTable(memory=model.memory, sustain=k, capacity=1)
    row = np.array([table.allocate()])
    ok = np.ones(len(d_fine), dtype=bool) if valid is None else valid
    out, seen = [], []
    for i, v in enumerate(d_fine):
        d = np.array([[v, 0.0]])
        mask = np.array([[bool(ok[i]), False]])
        out.append(sustained_z(table, row, d, mask, np.array([i]), p)[0])
        seen.append(int(table.sseen[row[0], 0]))
    return np.array(out), seen


def test_sustained_novelty_adds_up_a_small_lasting_rise_not_a_blip() -> None:
    """Mean of the last k novelties against its own history: a lasting rise, not one block."""
    rng = np.random.default_rng(3)
    base = 0.05 + 0.01 * rng.standard_normal(400)
    lasting, blip = base.copy(), base.copy()
    lasting[300:] += 0.03  # three standard deviations of a single novelty, for good
    blip[300] += 0.3  # thirty, once
    (z_lasting, _), (z_blip, _) = _sustained(lasting), _sustained(blip)
    assert not z_lasting[:45].any()  # k valid novelties, then 30 means, before any z
    assert z_lasting[300:316].max() > 3 * max(z_lasting[100:300].max(), 1.0)
    assert z_blip[300:316].max() < z_lasting[300:316].max()
    assert z_lasting[300:316].argmax() > 8  # it builds up as the ring fills with the rise


def test_sustained_novelty_waits_for_a_ring_of_valid_novelties() -> None:
    """An invalid novelty keeps the mean out until k valid ones follow it."""
    valid = np.ones(100, dtype=bool)
    valid[60] = False  # a block whose novelty could not be computed
    _, seen = _sustained(np.full(100, 0.05), k=16, valid=valid)
    assert seen[14] == 0 and seen[15] == 1  # the first full ring
    assert seen[59] == 45  # one mean per block since
    assert seen[60:76] == [45] * 16  # the invalid one is in the ring for 16 blocks
    assert seen[76] == 46  # then the means resume


def test_one_alarm_per_event_across_channels() -> None:
    """Within the gap only a higher score is reported; after it, any score is."""
    model = AnomalyEngine(MODELS).model_of_name(BLOCK_MODEL)
    assert isinstance(model, BlockModel)
    table = BlockTable.for_model(model, capacity=1)
    row = np.array([table.allocate()])
    reported = {}
    steps = [(10, 0.5), (20, 0.4), (30, 0.5), (40, 0.6), (60, 0.0), (112, 0.3), (113, 0.3)]
    for count, score in steps:
        table.count[row] = count
        reported[count] = one_alarm_per_event(table, row, np.array([score]), 72)[0]
    # 112 is 72 readings after 40: still the same event; 113 is past it.
    assert reported == {10: 0.5, 20: 0.0, 30: 0.0, 40: 0.6, 60: 0.0, 112: 0.0, 113: 0.3}
    assert table.alast[row[0]] == 113 and table.alevel[row[0]] == 0.3


def test_a_table_of_another_layout_is_refused() -> None:
    model = AnomalyEngine(MODELS).model_of_name(BLOCK_MODEL)
    assert isinstance(model, BlockModel)
    table = BlockTable(memory=model.memory, sustain=0, capacity=1)
    row = np.array([table.allocate()])
    with pytest.raises(ValueError, match="another model"):
        score_block_rows(model, table, row, np.array([1.0]))


def test_block_state_per_stream_is_a_few_kilobytes() -> None:
    """One block-model stream costs its memory, its sustained ring and scalars: at most 8 kB."""
    engine = AnomalyEngine(MODELS)
    per = engine.state_bytes_per_stream(BLOCK_MODEL)
    assert per <= 8 * 1024
    model = engine.model_of_name(BLOCK_MODEL)
    assert isinstance(model, BlockModel)
    table = BlockTable.for_model(model, capacity=64)
    assert sum(a.nbytes for a in table.arrays()) == 64 * per


def test_nab_factories_use_the_block_model() -> None:
    assert DEFAULT_MODEL == BLOCK_MODEL


def test_state_per_stream_is_a_few_kilobytes() -> None:
    """One stream costs the window and four scalars: at most 8 kB."""
    engine = AnomalyEngine(MODELS)
    per = engine.state_bytes_per_stream(MODEL)
    assert per <= 8 * 1024
    table = StreamTable(window=engine.model_of_name(MODEL).window, capacity=64)
    arrays = [table.buf, table.count, table.mean, table.var, table.ref]
    assert sum(a.nbytes for a in arrays) == 64 * per


@both
def test_streams_come_and_go(model: str) -> None:
    """Removed streams free their row; a re-added stream starts fresh (warm-up again)."""
    engine = AnomalyEngine(MODELS)
    for k in range(40):  # forces the table to grow
        engine.add_stream(k, model)
    with pytest.raises(KeyError):
        engine.add_stream(3, model)
    engine.remove_stream(3)
    engine.add_stream(3, model)
    assert engine.has_stream(3)
    assert run_one(series(200, 5), model) == [
        s for _k, s in (engine.step([(3, T0, float(v))])[0] for v in series(200, 5))
    ]


def test_nab_factories_follow_the_harness_contract() -> None:
    """make() scores one reading at a time; make_batch(n) the same, per tick."""
    x = series(300, 6)
    single = make()
    one = [single.step(T0, float(v)) for v in x]
    assert all(0.0 <= s <= 1.0 for s in one)
    batch = make_batch(2)
    both = [
        batch.step_batch(
            np.array([T0, T0], dtype="datetime64[us]"),
            np.array([v, np.nan]),
            np.array([True, False]),
        )
        for v in x
    ]
    np.testing.assert_allclose([b[0] for b in both], one, rtol=1e-6, atol=1e-9)
    assert all(b[1] == 0.0 for b in both)


def test_block_mean_record_catches_a_level_inside_the_range() -> None:
    """A level that leaves its band, no reading leaving the range, alarms at a block's end."""
    rng = np.random.default_rng(11)
    x = 50 + 10 * np.tile([1.0, -1.0], 1200) + rng.normal(0, 0.3, 2400)  # 40/60, means ~50
    x[2004:2100] = 55 + rng.normal(0, 0.3, 96)  # inside the range; block means ~55
    quiet = 1e12  # score_scale: the shape novelty scores ~0, only records speak
    with_records = _block_scores(x, score_scale=quiet)
    assert _block_scores(x, score_scale=quiet, record_scale=0.0).max() < 1e-6
    assert with_records[1000:2004].max() < 0.2
    assert with_records[2004:2100].max() > 0.6
    first = 2004 + int(np.argmax(with_records[2004:2100] > 0.6))
    assert (first + 1) % 6 == 0  # at a block's completion


def _chattering(n: int, onset: int, seed: int) -> np.ndarray:
    """A flat reading with a rare excursion, then one in every block from ``onset``.

    Every excursion stays inside the range the early ones set, and the block
    means stay inside their band: only how often the peaks come changes.
    """
    rng = np.random.default_rng(seed)
    x = 33.5 + rng.normal(0, 0.05, n)
    rare = rng.choice(np.arange(200, onset - 50), 12, replace=False)
    x[rare] += rng.uniform(2.0, 6.0, rare.size)  # the range: up to ~39.5
    x[onset::6] += 2.3  # from the onset, a peak of ~35.8 in every block
    return x


def test_envelope_record_catches_peaks_that_come_back_every_block() -> None:
    """Excursions inside the old range, but in every block: the peaks' floor breaks its record."""
    x = _chattering(2400, 1800, 21)
    quiet = 1e12  # score_scale: the shape novelty scores ~0, only records speak
    with_envelope = _block_scores(x, score_scale=quiet)
    without = _block_scores(x, score_scale=quiet, envelope_blocks=0)
    assert without[1800:].max() < 0.2  # no range or block-mean record sees it
    # Before the onset the envelope adds nothing near an alarm to the rare excursions' records.
    assert (with_envelope[:1800] - without[:1800]).max() < 0.2
    first = 1800 + int(np.argmax(with_envelope[1800:] > 0.5))
    # The third block with a peak completes the first run of three.
    assert 1800 + 12 <= first < 1800 + 24 and (first + 1) % 6 == 0


def _envelope_call(mean_inside: bool, history: int, memory_blocks: int) -> tuple[float, float]:
    """envelope_records on one stream whose last 3 blocks peak 1.0 above every earlier one."""
    model = AnomalyEngine(MODELS).model_of_name(BLOCK_MODEL)
    assert isinstance(model, BlockModel)
    p = dataclasses.replace(model.post, envelope_blocks=3, envelope_history=history)
    table = BlockTable.for_model(model, capacity=1)
    row = np.array([table.allocate()])
    mem = np.full((1, model.memory, 3), np.inf, dtype=np.float32)
    filled = mem[0, -memory_blocks:]
    filled[:] = (0.0, 1.0, -1.0)  # block mean, maximum, minimum
    filled[-3:, 1] = 2.0  # the last three blocks' peaks
    table.memhi[row], table.memlo[row] = 2.0, -1.0
    count = np.array([6 * memory_blocks])
    score = envelope_records(table, row, mem, count, p, 6, np.array([mean_inside]))[0]
    return float(score), float(table.eref[row[0]])


def test_envelope_record_scores_a_new_floor_of_peaks_as_a_fraction_of_the_range() -> None:
    score, ref = _envelope_call(True, history=128, memory_blocks=200)
    e = 1.0 / 3.0  # 1.0 above the earlier floors, range 3.0
    assert score == pytest.approx(e / (e + 0.1)) and ref == pytest.approx(score)


def test_envelope_record_waits_for_its_history_and_leaves_levels_to_mean_records() -> None:
    """Silent (and its reference untouched) with too few earlier runs, or a mean out of band."""
    assert _envelope_call(True, history=200, memory_blocks=200) == (0.0, 0.0)
    assert _envelope_call(False, history=128, memory_blocks=200) == (0.0, 0.0)


def test_suppression_lasts_longer_in_an_older_stream() -> None:
    """The novelty's suppression half-life grows with the stream's age (up to its maximum)."""
    model = AnomalyEngine(MODELS).model_of_name(BLOCK_MODEL)
    assert isinstance(model, BlockModel)
    model.post = dataclasses.replace(model.post, record_scale=0.0)

    def kept_after(spike_at: int, blocks_later: int = 400) -> float:
        """The suppression reference left `blocks_later` blocks after a spike, per unit of it."""
        table = BlockTable.for_model(model, capacity=1)
        row = np.array([table.allocate()])
        x = series(spike_at + 6 * blocks_later + 6, 12)
        x[spike_at] += 200.0
        peak = 0.0
        for i, v in enumerate(x):
            score_block_rows(model, table, row, np.array([v]))
            if i < spike_at + 6 * 4:
                peak = max(peak, float(table.ref[0]))
        return float(table.ref[0]) / peak

    young, old = kept_after(1200), kept_after(9000)
    p = model.post
    assert p.suppress_half_life_max > p.suppress_half_life
    assert young == pytest.approx(0.5 ** (400 / p.suppress_half_life), rel=0.05)
    assert old > young * 1.3


def test_scores_do_not_depend_on_a_large_offset() -> None:
    """A reading's offset (a latitude, a meter total) changes nothing: the float32 memory
    holds readings relative to the stream's first one."""
    x = 1e-5 * series(2000, 13)  # tiny changes, as in a GPS latitude
    at_zero = _block_scores(x)
    for offset in (52.52, 1000.0):
        np.testing.assert_allclose(_block_scores(x + offset), at_zero, atol=1e-6)


def test_records_switched_on_later_start_from_the_true_memory() -> None:
    """A stream scored without records, then by a model with them, raises no burst."""
    model = AnomalyEngine(MODELS).model_of_name(BLOCK_MODEL)
    assert isinstance(model, BlockModel)
    with_records = model.post
    table = BlockTable.for_model(model, capacity=1)
    row = np.array([table.allocate()])
    x = np.random.default_rng(14).normal(0, 1, 2300)
    model.post = dataclasses.replace(with_records, record_scale=0.0)
    for v in x[:2000]:
        score_block_rows(model, table, row, np.array([v]))
    model.post = with_records  # a new model version installed in place
    later = [score_block_rows(model, table, row, np.array([v]))[0] for v in x[2000:]]
    assert max(later) < 0.3


def _block_model_without_sustain(folder: Path) -> None:
    """The shipped block model with its sustained ring and event rule off (a version 3 layout)."""
    import onnx

    model = onnx.load(str(MODELS / BLOCK_MODEL / f"{BLOCK_MODEL}.onnx"))
    off = {"sustain_blocks": "0", "event_readings": "0", "envelope_blocks": "0"}
    off["version"] = "3-like"
    for entry in model.metadata_props:
        entry.value = off.get(entry.key, entry.value)
    (folder / BLOCK_MODEL).mkdir(parents=True)
    onnx.save(model, str(folder / BLOCK_MODEL / f"{BLOCK_MODEL}.onnx"))


def test_an_upgrade_that_adds_the_sustained_ring_keeps_the_memory(tmp_path: Path) -> None:
    """Same memory, block and coarse scale: memory and statistics carry over, the ring starts."""
    _block_model_without_sustain(tmp_path)
    engine = AnomalyEngine(tmp_path)
    engine.add_stream("pump", BLOCK_MODEL)
    engine.add_stream("meter", BLOCK_MODEL)
    for i, v in enumerate(series(1500, 4)):
        engine.step([("pump", T0 + timedelta(minutes=5 * i), float(v))])
    old_table = engine._models[BLOCK_MODEL].table
    assert isinstance(old_table, BlockTable) and old_table.sustain == 0
    row = engine._streams["pump"].row
    mem, count, mean = old_table.mem[row].copy(), old_table.count[row], old_table.mean[row].copy()

    new_onnx = (MODELS / BLOCK_MODEL / f"{BLOCK_MODEL}.onnx").read_bytes()
    (tmp_path / BLOCK_MODEL / f"{BLOCK_MODEL}.onnx").write_bytes(new_onnx)
    old_version, version, kept = engine.reload_model(BLOCK_MODEL)
    assert (old_version, kept) == ("3-like", True) and version != old_version

    table = engine._models[BLOCK_MODEL].table
    assert isinstance(table, BlockTable) and table.sustain > 0 and table is not old_table
    row = engine._streams["pump"].row
    assert np.array_equal(table.mem[row], mem) and table.count[row] == count
    assert np.array_equal(table.mean[row], mean)
    assert np.isnan(table.ring[row]).all() and not table.sseen[row].any()
    assert table.count[engine._streams["meter"].row] == 0  # a fresh stream stays fresh
    # The stream goes on where it was: no second warm-up, and it still scores.
    later = series(1800, 4)[1500:]
    got = [engine.step([("pump", T0, float(v))])[0][1] for v in later]
    assert table.count[row] == count + 300 and all(math.isfinite(g) for g in got)


def test_an_upgrade_of_another_coarse_scale_restarts_the_streams(tmp_path: Path) -> None:
    """Another coarse scale means another memory layout: the streams warm up again."""
    _block_model_without_sustain(tmp_path)
    engine = AnomalyEngine(tmp_path)
    engine.add_stream("pump", BLOCK_MODEL)
    for v in series(400, 5):
        engine.step([("pump", T0, float(v))])
    import onnx

    path = tmp_path / BLOCK_MODEL / f"{BLOCK_MODEL}.onnx"
    model = onnx.load(str(path))
    for entry in model.metadata_props:
        if entry.key == "coarse":
            entry.value = "2"
    onnx.save(model, str(path))
    _, _, kept = engine.reload_model(BLOCK_MODEL)
    table = engine._models[BLOCK_MODEL].table
    assert kept is False and table.count[engine._streams["pump"].row] == 0


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("sustain_weight", "nan", "must be finite"),
        ("sustain_weight", "inf", "must be finite"),
        ("sustain_sd_floor", "nan", "must be finite"),
        ("sustain_weight", "-0.5", "must be >= 0"),
        ("sustain_alpha", "0", "(0, 1]"),
        ("event_readings", "-1", "must be >= 0"),
        ("envelope_blocks", "-1", "envelope_blocks must be >= 0"),
        ("envelope_history", "0", "envelope_history >= 1"),
        ("envelope_half_life", "0", "envelope_half_life must be > 0"),
        ("envelope_half_life", "nan", "must be finite"),
        ("envelope_blocks", "300", "the memory holds too few runs"),
    ],
)
def test_a_model_with_broken_post_parameters_is_refused(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    """A non-finite or negative parameter would silence a stream for good: refused at load."""
    import onnx

    from cityedge.anomaly.model import load_model

    model = onnx.load(str(MODELS / BLOCK_MODEL / f"{BLOCK_MODEL}.onnx"))
    for entry in model.metadata_props:
        if entry.key == key:
            entry.value = value
    (tmp_path / BLOCK_MODEL).mkdir()
    onnx.save(model, str(tmp_path / BLOCK_MODEL / f"{BLOCK_MODEL}.onnx"))
    with pytest.raises(ValueError, match="metadata incomplete or invalid") as err:
        load_model(tmp_path, BLOCK_MODEL)
    assert message in str(err.value) and (key in str(err.value) or "must be" in str(err.value))
