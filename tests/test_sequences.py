"""Item vocabulary, training windows and the time-based (history -> next item) split."""

import numpy as np
import pandas as pd
import pytest

from shopsight.config import FeatureParams, RecommenderParams
from shopsight.sequences import (
    PAD,
    ItemVocabulary,
    build_sequences,
    collapse_repeats,
    left_pad,
    load_sequences,
    save_sequences,
    training_windows,
)
from tests.conftest import make_events

FEATURES = FeatureParams(windows_days=[7], horizon_days=7, cutoff_step_days=7, n_train_cutoffs=1)
# Data ends at 2026-03-01 00:00 -> test cutoff 2026-02-22, valid cutoff 2026-02-15.


@pytest.fixture()
def events_path(tmp_path):
    rows = [
        # u1: trains on a,b,c; views d before the test cutoff; first item after the test cutoff is e
        ("u1", "a", "view", "2026-02-01T10:00:00"),
        ("u1", "b", "view", "2026-02-01T10:01:00"),
        ("u1", "b", "cart", "2026-02-01T10:02:00"),  # same session, same item: collapses
        ("u1", "b", "purchase", "2026-02-01T10:03:00"),
        ("u1", "c", "view", "2026-02-03T10:00:00"),
        ("u1", "d", "view", "2026-02-17T10:00:00"),
        ("u1", "e", "view", "2026-02-23T10:00:00"),
        ("u1", "a", "view", "2026-02-24T10:00:00"),
        # u2: active before both cutoffs, next item after the valid cutoff is a, after the test cutoff is c
        ("u2", "a", "view", "2026-02-02T09:00:00"),
        ("u2", "c", "view", "2026-02-02T09:01:00"),
        ("u2", "a", "view", "2026-02-16T09:00:00"),
        ("u2", "c", "view", "2026-02-25T09:00:00"),
        # u3: never comes back after the test cutoff -> not a test row
        ("u3", "a", "view", "2026-02-04T09:00:00"),
        ("u3", "b", "view", "2026-02-04T09:01:00"),
        ("u3", "z", "view", "2026-02-16T09:00:00"),  # z is never seen before the valid cutoff
        ("u4", "a", "view", "2026-03-01T00:00:00"),
    ]
    path = tmp_path / "events.parquet"
    make_events(rows).to_parquet(path, index=False)
    return path


def test_vocabulary_orders_by_frequency_and_maps_unknown_to_padding(tmp_path):
    vocab = ItemVocabulary.from_counts(pd.Series({"x": 1, "y": 5, "z": 3}))
    assert vocab.items == ("<pad>", "y", "z", "x")
    assert vocab.encode(["y", "nope", "x"]).tolist() == [1, PAD, 3]
    vocab.save(tmp_path / "v.json")
    assert ItemVocabulary.load(tmp_path / "v.json") == vocab


def test_left_pad_keeps_the_most_recent_items_at_the_right():
    out = left_pad([np.array([1, 2, 3, 4]), np.array([5]), np.array([], dtype=np.int32)], 3)
    assert out.tolist() == [[2, 3, 4], [0, 0, 5], [0, 0, 0]]


def test_training_windows_cover_every_transition_once_and_mask_padding():
    seq = np.arange(1, 9, dtype=np.int32)  # 8 items -> 7 transitions
    inputs, targets = training_windows([seq, np.array([3], np.int32)], max_len=3)
    pairs = {(int(i), int(t)) for x, y in zip(inputs, targets) for i, t in zip(x, y) if t != PAD}
    assert pairs == {(k, k + 1) for k in range(1, 8)}
    assert sum(int((y != PAD).sum()) for y in targets) == 7  # no transition twice, the 1-item sequence adds none
    assert (inputs == PAD).any() and np.all(targets[inputs == PAD] == PAD)  # the short window is padded


def test_collapse_repeats_only_within_a_session():
    ev = make_events([
        ("u", "a", "view", "2026-01-01T10:00:00"), ("u", "a", "cart", "2026-01-01T10:01:00"),
        ("u", "a", "view", "2026-01-02T10:00:00"),  # a new session: kept
    ])
    assert collapse_repeats(ev.sort_values("timestamp"))["item_id"].tolist() == ["a", "a"]


def test_split_uses_only_the_past_as_input_and_the_first_later_item_as_target(events_path, tmp_path):
    params = RecommenderParams(max_len=4, popularity_window_days=30)
    data = build_sequences(events_path, FEATURES, params)
    assert str(data.valid.cutoff.date()) == "2026-02-15" and str(data.test.cutoff.date()) == "2026-02-22"
    v = data.vocab
    assert "z" not in v.items and "d" not in v.items  # vocabulary from training events only

    test = data.test
    assert test.user_ids.tolist() == ["u1", "u2"]  # u3 never came back, u4 has no history before the cutoff
    u1 = v.decode(test.inputs[0][test.inputs[0] != PAD])
    assert u1 == ["a", "b", "c"]  # d (unknown) dropped, e (after the cutoff) never an input
    assert test.targets.tolist() == [PAD, v.index_of("c")]  # e is not in the vocabulary: a certain miss
    bought = test.purchased_indices[test.purchased_indptr[0] : test.purchased_indptr[1]]
    assert v.decode(bought) == ["b"]

    valid = data.valid
    assert valid.user_ids.tolist() == ["u1", "u2", "u3"]
    assert valid.targets.tolist() == [PAD, v.index_of("a"), PAD]  # d and z were never seen in training

    # training targets come only from events before the validation cutoff
    train_items = {v.items[t] for t in data.train_targets.ravel() if t != PAD}
    assert train_items == {"b", "c"}  # u1 a->b->c, u2 a->c, u3 a->b; z and d come after the cutoff
    save_sequences(data, tmp_path / "seq")
    again = load_sequences(tmp_path / "seq")
    assert np.array_equal(again.test.inputs, test.inputs) and again.vocab == v
    assert again.test.cutoff == test.cutoff


def test_test_split_targets_stay_inside_data_that_ends_mid_day(events_path, tmp_path):
    """The data ends at 16:00 on its last day (as a Taobao file does in UTC): the test window [T, T + horizon) must
    end by the last event, so the test cutoff moves back to the last whole day, not forward past the data."""
    events = pd.read_parquet(events_path)
    late = make_events([("u2", "b", "view", "2026-03-02T16:00:00")])
    path = tmp_path / "late.parquet"
    pd.concat([events, late], ignore_index=True).to_parquet(path, index=False)
    data = build_sequences(path, FEATURES, RecommenderParams(max_len=4, popularity_window_days=30))
    t_end = pd.Timestamp("2026-03-02T16:00:00", tz="UTC")
    assert data.test.cutoff + pd.Timedelta(days=FEATURES.horizon_days) <= t_end
    assert data.test.cutoff == pd.Timestamp("2026-02-23", tz="UTC") and data.valid.cutoff == pd.Timestamp("2026-02-16", tz="UTC")


def test_too_little_data_names_the_params(tmp_path):
    path = tmp_path / "e.parquet"
    make_events([("u", "a", "view", "2026-02-27T10:00:00"), ("u", "b", "view", "2026-02-28T10:00:00")]).to_parquet(path, index=False)
    with pytest.raises(ValueError, match="horizon_days"):
        build_sequences(path, FEATURES, RecommenderParams())


def _loo_events():
    # u1: a b c d e (e test, d valid); u2: c a (too short for valid, test target a); u3: b b c (repeat in one session collapses)
    rows = [("u1", i, "purchase", f"2026-01-0{d}T00:00:00") for d, i in enumerate("abcde", start=1)]
    rows += [("u2", "c", "purchase", "2026-01-04T00:00:00"), ("u2", "a", "purchase", "2026-01-05T00:00:00")]
    rows += [("u3", "b", "purchase", "2026-01-03T00:00:00"), ("u3", "c", "purchase", "2026-01-04T00:00:00"),
             ("u3", "f", "purchase", "2026-01-05T00:00:00")]
    return make_events(rows)


def test_leave_one_out_last_item_test_second_to_last_valid_history_excluded(tmp_path):
    from shopsight.sequences import build_leave_one_out, load_sequence_events

    path = tmp_path / "events.parquet"
    _loo_events().to_parquet(path, index=False)
    params = RecommenderParams(max_len=4, protocol="leave_one_out", event_types=["purchase"])
    data = build_sequences(path, FEATURES, params)  # the features' horizon plays no part
    assert data.protocol == "leave_one_out"
    v = data.vocab
    assert set(v.items[1:]) == set("abcdef")  # the whole catalogue, held-out items included
    # validation: users with >= 3 items; input = all but the last two, target = the second to last
    assert list(data.valid.user_ids) == ["u1", "u3"]
    assert v.decode(data.valid.targets) == ["d", "c"]
    assert [v.decode(r[r != PAD]) for r in data.valid.inputs] == [["a", "b", "c"], ["b"]]
    # test: every user with >= 2 items; input includes the validation item; target = the last item
    assert list(data.test.user_ids) == ["u1", "u2", "u3"]
    assert v.decode(data.test.targets) == ["e", "a", "f"]
    assert [v.decode(r[r != PAD]) for r in data.test.inputs] == [["a", "b", "c", "d"], ["c"], ["b", "c"]]
    # the exclusion lists are the user's earlier items (never the target)
    indptr, idx = data.test.purchased()
    assert [sorted(v.decode(idx[indptr[r]:indptr[r + 1]])) for r in range(3)] == [["a", "b", "c", "d"], ["c"], ["b", "c"]]
    # training never sees a held-out item of its user: u1 trains on a b c only, u3 on b only (no window), u2 nothing
    assert [v.decode(r[r != PAD]) for r in data.train_inputs] == [["a", "b"]]
    assert [v.decode(r[r != PAD]) for r in data.train_targets] == [["b", "c"]]
    assert sorted(map(tuple, data.transitions.tolist())) == sorted(
        [(v.index_of("a"), v.index_of("b")), (v.index_of("b"), v.index_of("c"))])
    # round trip keeps the protocol
    save_sequences(data, tmp_path / "seq")
    again = load_sequences(tmp_path / "seq")
    assert again.protocol == "leave_one_out" and np.array_equal(again.test.targets, data.test.targets)
    direct = build_leave_one_out(load_sequence_events(path, ["purchase"]), params)
    assert np.array_equal(direct.valid.targets, data.valid.targets)


def test_leave_one_out_needs_users_with_enough_items(tmp_path):
    path = tmp_path / "events.parquet"
    make_events([("u1", "a", "purchase", "2026-01-01T00:00:00"), ("u1", "b", "purchase", "2026-01-02T00:00:00")]).to_parquet(path, index=False)
    with pytest.raises(ValueError, match="leave-one-out valid"):
        build_sequences(path, FEATURES, RecommenderParams(protocol="leave_one_out", event_types=["purchase"]))


def test_user_time_order_is_arrows_stable_sort_by_user_then_time():
    """Ranked user ids + one numpy lexsort give Arrow's sort_indices order: UTF-8 (code point) order of the ids,
    nulls last, equal (user, time) rows in file order."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from shopsight.sequences import user_time_order

    rng = np.random.default_rng(5)
    ids = ["u10", "u2", "U3", "é1", "z", "", "u10x", None]
    n = 5000
    users = [ids[i] for i in rng.integers(0, len(ids), n)]
    times = pd.Series(pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 50, n), unit="s"))  # many ties
    table = pa.table({"user_id": pa.array(users, pa.string()), "timestamp": pa.array(times)})
    expected = pc.sort_indices(table, sort_keys=[("user_id", "ascending"), ("timestamp", "ascending")]).to_numpy()
    np.testing.assert_array_equal(user_time_order(table), expected)
