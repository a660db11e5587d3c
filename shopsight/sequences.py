"""Item vocabulary and padded item sequences with the platform's time-based split, for next-item models.

Split (the same cutoffs as every other task, from `shopsight.features.plan_cutoffs`):
* train: every user's item sequence before the validation cutoff, cut into windows of `max_len + 1` items
  (input = items[:-1], target = items[1:]; left-padded with 0);
* valid / test: each user active before the cutoff T and again in [T, T + horizon): input = the last `max_len`
  items before T, target = the first item the user touched at or after T (what the simulator's ground truth
  describes). The vocabulary comes from the training events only; an unseen target stays unseen (a miss).

`recommender.protocol: leave_one_out` replaces the cutoffs with the papers' protocol (see build_leave_one_out).

Within a session, consecutive events on one item (view -> cart -> purchase) collapse into one step.
Everything is written as JSON / NPZ (no pickles) under data/sequences/.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shopsight import paths
from shopsight.config import FeatureParams, RecommenderParams
from shopsight.features import plan_cutoffs

PAD = 0  # index 0 of every item table is padding
PAD_TOKEN = "<pad>"
SEQUENCES_DIR = paths.DATA_DIR / "sequences"
VOCAB_FILE = "item_vocab.json"
DAY = pd.Timedelta(days=1)
ENCODE_IN_C_FROM = 512  # ids per ItemVocabulary.encode call above which the lookup is done in C (serving calls are smaller)


@dataclass(frozen=True)
class ItemVocabulary:
    """Item ids by index; index 0 is padding, 1.. are items ordered by training frequency (most frequent first)."""

    items: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {item: i for i, item in enumerate(self.items)})

    @property
    def size(self) -> int:
        """Rows of an item table, padding included."""
        return len(self.items)

    def index_of(self, item: str) -> int:
        """The item's index, or PAD for an unknown item."""
        return self._index.get(item, PAD)  # type: ignore[attr-defined]

    def encode(self, items) -> np.ndarray:
        """Item ids -> indices (PAD for an unknown id). Above a few hundred ids, one hash-table lookup in C (pandas'
        Index.get_indexer) instead of a dict lookup per id: 11.6M ids of a 10M-event shop took 21 s in Python."""
        if len(items) < ENCODE_IN_C_FROM or len(self._index) != len(self.items):  # type: ignore[attr-defined]
            return np.fromiter((self.index_of(str(i)) for i in items), dtype=np.int32, count=len(items))
        values = np.asarray(items, dtype=object)
        if pd.api.types.infer_dtype(values, skipna=False) != "string":
            values = values.astype(str).astype(object)
        found = self._lookup.get_indexer(values)
        return np.where(found < 0, PAD, found).astype(np.int32)

    @property
    def _lookup(self) -> pd.Index:
        lookup = self.__dict__.get("_pd_index")
        if lookup is None:
            lookup = pd.Index(self.items, dtype=object)
            object.__setattr__(self, "_pd_index", lookup)
        return lookup

    def decode(self, indices) -> list[str]:
        return [self.items[int(i)] for i in indices]

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"items": list(self.items[1:])}))

    @classmethod
    def load(cls, path: Path) -> "ItemVocabulary":
        return cls((PAD_TOKEN, *json.loads(Path(path).read_text())["items"]))

    @classmethod
    def from_counts(cls, counts: pd.Series) -> "ItemVocabulary":
        order = counts.sort_values(ascending=False, kind="stable")
        return cls((PAD_TOKEN, *order.index.astype(str)))


@dataclass
class EvalSplit:
    """One prediction cutoff: a row per user with the recent history, the next item and what they bought before."""

    cutoff: pd.Timestamp
    user_ids: np.ndarray  # (U,) str
    inputs: np.ndarray  # (U, max_len) int32, left-padded
    targets: np.ndarray  # (U,) int32; PAD when the next item is not in the vocabulary
    purchased_indptr: np.ndarray  # CSR over users of the item indices bought before the cutoff
    purchased_indices: np.ndarray
    popularity: np.ndarray  # (V,) event counts per item in the popularity window before the cutoff

    def purchased(self) -> tuple[np.ndarray, np.ndarray]:
        return self.purchased_indptr, self.purchased_indices

    def subset(self, rows: np.ndarray) -> "EvalSplit":
        indptr, indices = csr_rows(self.purchased_indptr, self.purchased_indices, rows)
        return EvalSplit(self.cutoff, self.user_ids[rows], self.inputs[rows], self.targets[rows], indptr, indices, self.popularity)


def csr_rows(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows `rows` (in that order) of a CSR list of lists (int64 indptr, int32 indices), without a loop over rows."""
    rows = np.asarray(rows, dtype=np.int64)
    lengths = (indptr[1:] - indptr[:-1])[rows]
    out_ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    take = np.repeat(indptr[:-1][rows] - out_ptr[:-1], lengths) + np.arange(out_ptr[-1], dtype=np.int64)
    return out_ptr, np.asarray(indices)[take].astype(np.int32)


@dataclass
class SequenceData:
    vocab: ItemVocabulary
    train_inputs: np.ndarray  # (S, max_len) int32
    train_targets: np.ndarray  # (S, max_len) int32, PAD where there is no target
    train_counts: np.ndarray  # (V,) how often each item is a training target (unigram for logQ / samplers)
    transitions: np.ndarray  # (T, 2) int32 consecutive (item, next item) pairs in training sequences
    valid: EvalSplit
    test: EvalSplit
    latest_popularity: np.ndarray  # (V,) counts in the popularity window before the end of the data (serving)
    max_len: int
    protocol: str = "time"  # time | leave_one_out (then each split's purchased_* lists are the user's earlier items)


def load_sequence_events(events_path: Path, event_types: list[str]) -> pd.DataFrame:
    """user_id, item_id, event_type, timestamp and session (the session id as an int64 code: equal codes for equal
    ids, -1 where the id is missing) of the chosen event types, ordered by user then time.

    Sessions are only compared with the previous row's (collapse_repeats), so they are never turned into Python
    strings (one per session: the largest column of a clickstream). Otherwise the same frame as a pandas read and
    stable sort, in less memory (peak RSS of `shopsight sequences` at 3M events
    1.04 -> 0.79 GiB, bench/bench_scale.py): Arrow sorts (stably) before the one conversion to pandas, the id
    columns are expanded from their dictionaries (rows share one Python string per distinct id), and Arrow's freed
    buffers go back to the system before the pandas work starts."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(
        events_path,
        columns=["user_id", "item_id", "event_type", "timestamp", "session_id"],
        filters=[("event_type", "in", list(event_types))],
    )
    order = user_time_order(table)
    if table.schema.pandas_metadata is not None:  # a file written from pandas: its dtypes (e.g. "string") as pandas reads them
        frame = table.take(order).to_pandas()
        frame["event_type"] = frame["event_type"].astype(str)
        sessions = frame.pop("session_id")
        frame["session"] = pd.factorize(sessions, use_na_sentinel=True)[0].astype(np.int64)
        return frame
    # convert first, then reorder the numpy columns (pointer copies): cheaper than Arrow's take of the string bytes.
    # One column at a time, each column's Arrow buffers released once converted: the table and the frame never both
    # hold every column.
    columns = {}
    for name in list(table.column_names):
        column = table.column(name)
        if name == "session_id":
            columns["session"] = dictionary_codes(column)[0][order]
        else:
            columns[name] = (shared_strings(column)[order] if name != "timestamp"
                             else column.to_pandas().take(order).reset_index(drop=True))
        table = table.drop_columns([name])
        del column
        pa.default_memory_pool().release_unused()
    del table
    frame = pd.DataFrame(columns, copy=False)
    frame["event_type"] = frame["event_type"].astype(str)
    return frame


def user_time_order(table) -> np.ndarray:
    """The stable order by (user_id, timestamp) of an Arrow table's rows, as Arrow's sort_indices gives it (user ids
    by their UTF-8 bytes, i.e. code points; nulls last; ties keep file order), but sorting integers: user ids are
    ranked once per distinct value, then one numpy lexsort (stable) of (rank, time). 4-8x faster than sorting the
    strings themselves (bench/bench_scale.py, sequences)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    users = pc.dictionary_encode(table.column("user_id")).combine_chunks()
    values = np.asarray(users.dictionary.to_pylist(), dtype=object)
    rank = np.empty(len(values) + 1, dtype=np.int64)
    rank[np.argsort(values, kind="stable")] = np.arange(len(values))
    rank[len(values)] = len(values)  # null ids sort last
    codes = users.indices.fill_null(len(values)).to_numpy(zero_copy_only=False).astype(np.int64)
    times = table.column("timestamp").combine_chunks()
    unit = pa.timestamp(times.type.unit) if pa.types.is_timestamp(times.type) else None
    stamps = (times.cast(unit) if unit is not None else times).cast(pa.int64()).to_numpy(zero_copy_only=False)
    return np.lexsort((stamps, rank[codes]))


def dictionary_codes(column) -> tuple[np.ndarray, "object"]:
    """An Arrow string column as (int64 codes: equal codes for equal values, -1 for null; the values by code)."""
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(column).combine_chunks()
    return encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary


def shared_strings(column) -> np.ndarray:
    """An Arrow string column as an object array holding one Python string per distinct value (None for null)."""
    codes, dictionary = dictionary_codes(column)
    if len(dictionary) == 0:
        return np.full(len(codes), None, dtype=object)
    values = np.asarray(dictionary.to_pylist(), dtype=object).take(np.maximum(codes, 0))
    values[codes < 0] = None
    return values


def _repeats(events: pd.DataFrame) -> np.ndarray:
    """True for an event on the same item as the user's previous event in the same session (a missing session id
    matches none). Sessions as load_sequence_events gives them (`session` codes) or as ids (`session_id`)."""
    if "session" in events.columns:
        codes = events["session"].to_numpy()
        same_session = pd.Series(np.r_[False, (codes[1:] == codes[:-1]) & (codes[1:] >= 0)], index=events.index)
    else:
        same_session = events["session_id"].eq(events["session_id"].shift()).fillna(False)
    same = (
        events["user_id"].eq(events["user_id"].shift())
        & same_session
        & events["item_id"].eq(events["item_id"].shift())
    )
    return same.fillna(False).astype(bool).to_numpy()


def collapse_repeats(events: pd.DataFrame) -> pd.DataFrame:
    """Drop an event on the same item as the user's previous event in the same session."""
    return events.loc[~_repeats(events)]


def time_protocol_frames(events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(events without their sessions, the collapsed events' user_id, item_id, timestamp): all the time protocol
    reads after collapsing repeats. The session column and the collapsed copy's unread
    columns are not kept (10M events, with the column-by-column conversion and session codes of
    load_sequence_events: peak RSS of the sequences build 1.93 -> 1.37 GiB)."""
    kept = ~_repeats(events)
    collapsed = events.loc[kept, ["user_id", "item_id", "timestamp"]]
    return events[["user_id", "item_id", "event_type", "timestamp"]], collapsed


def _user_runs(user_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) row of each user's run in a frame sorted by user."""
    if len(user_codes) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, user_codes[1:] != user_codes[:-1]])
    return starts, np.r_[starts[1:], len(user_codes)]


def _flat(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of item indices -> (all items in row order, int32; each row's length)."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    flat = np.concatenate(rows).astype(np.int32, copy=False) if len(rows) else np.zeros(0, np.int32)
    return flat, lengths


def left_pad(rows: list[np.ndarray], length: int) -> np.ndarray:
    """Rows of item indices -> (n, length) int32, keeping each row's last `length` items at the right."""
    return left_pad_flat(*_flat(rows), length)


def left_pad_flat(flat: np.ndarray, lengths: np.ndarray, length: int) -> np.ndarray:
    """left_pad of rows given as their concatenation and lengths: one scatter, no Python loop over rows."""
    out = np.zeros((len(lengths), length), dtype=np.int32)
    if length == 0 or len(flat) == 0:
        return out
    row = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    from_end = np.cumsum(lengths)[row] - np.arange(len(flat), dtype=np.int64) - 1  # 0 for a row's last item
    keep = from_end < length
    out[row[keep], length - 1 - from_end[keep]] = flat[keep]
    return out


WINDOW_BLOCK = 1 << 18  # windows gathered at a time (bounds the gather's index matrix: 8 bytes x (max_len + 1) each)


def training_windows(sequences: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut each sequence from its end into windows of max_len + 1 items: input = window[:-1], target = window[1:]."""
    return _windows_flat(*_flat(sequences), max_len)


def _windows_flat(flat: np.ndarray, lengths: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """training_windows of sequences given as their concatenation and lengths, vectorised: a sequence of n >= 2 items
    gives windows ending at n, n - max_len, ... (>= 2), each the max_len + 1 items before its end, left-padded."""
    lengths = np.asarray(lengths, dtype=np.int64)
    per_seq = np.where(lengths >= 2, (lengths - 2) // max_len + 1, 0)
    n_windows = int(per_seq.sum())
    seq = np.repeat(np.arange(len(lengths), dtype=np.int64), per_seq)
    nth = np.arange(n_windows, dtype=np.int64) - np.repeat(np.cumsum(per_seq) - per_seq, per_seq)  # 0 = the last window
    seq_start = (np.cumsum(lengths) - lengths)[seq]
    end = lengths[seq] - nth * max_len  # exclusive, within the sequence
    padded = np.zeros((n_windows, max_len + 1), dtype=np.int32)
    span = np.arange(-(max_len + 1), 0, dtype=np.int64)
    for b in range(0, n_windows, WINDOW_BLOCK):
        offsets = end[b : b + WINDOW_BLOCK, None] + span  # positions in the sequence, negative = padding
        gathered = flat[np.maximum(seq_start[b : b + WINDOW_BLOCK, None] + offsets, 0)] if len(flat) else 0
        padded[b : b + WINDOW_BLOCK] = np.where(offsets >= 0, gathered, PAD)
    inputs, targets = padded[:, :-1].copy(), padded[:, 1:].copy()
    targets[inputs == PAD] = PAD  # no target for a padding position
    return inputs, targets


def _popularity(events: pd.DataFrame, vocab: ItemVocabulary, end: pd.Timestamp, days: int) -> np.ndarray:
    stamps = events["timestamp"]
    window = ((stamps >= end - days * DAY) & (stamps < end)).to_numpy()
    counts = np.bincount(vocab.encode(events["item_id"].to_numpy()[window]), minlength=vocab.size).astype(np.float64)
    counts[PAD] = 0.0
    return counts


def _eval_split(events: pd.DataFrame, collapsed: pd.DataFrame, vocab: ItemVocabulary, cutoff: pd.Timestamp,
                horizon_days: int, params: RecommenderParams) -> EvalSplit:
    """The (history, next item) rows of the users active both before and after `cutoff`, sorted by user. Works on the
    two id columns as numpy arrays: selecting whole frames by boolean masks copied every column (10M events: a third
    of the stage's CPU)."""
    before = (collapsed["timestamp"] < cutoff).to_numpy()
    before_users, before_items = collapsed["user_id"].to_numpy()[before], collapsed["item_id"].to_numpy()[before]
    stamps, event_users = events["timestamp"], events["user_id"].to_numpy()
    after = ((stamps >= cutoff) & (stamps < cutoff + horizon_days * DAY)).to_numpy()
    after_users, after_items = event_users[after], events["item_id"].to_numpy()[after]
    first = ~pd.Index(after_users).duplicated(keep="first")  # rows are in time order within a user
    first_after = pd.Series(after_items[first], index=pd.Index(after_users[first], name="user_id"))
    users = pd.Index(pd.unique(before_users)).intersection(first_after.index).sort_values()
    in_users = users.get_indexer(before_users) >= 0
    codes = before_users[in_users]
    starts, ends = _user_runs(codes)
    items = vocab.encode(before_items[in_users])
    order = codes[starts] if len(starts) else np.array([], dtype=object)
    known = items != PAD
    row = np.repeat(np.arange(len(starts), dtype=np.int64), ends - starts)
    inputs = left_pad_flat(items[known], np.bincount(row[known], minlength=len(starts)), params.max_len)

    # each user's distinct purchased items before the cutoff, ascending, as CSR rows in the order of `order`
    bought = np.flatnonzero((stamps < cutoff).to_numpy())
    bought = bought[events["event_type"].to_numpy()[bought] == "purchase"]
    position = pd.Index(order).get_indexer(event_users[bought])
    item = vocab.encode(events["item_id"].to_numpy()[bought])
    keep = (position >= 0) & (item != PAD)
    pairs = np.unique(position[keep].astype(np.int64) * vocab.size + item[keep])  # sorted by (row, item), no duplicates
    indices = (pairs % vocab.size).astype(np.int32)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(pairs // vocab.size, minlength=len(order)))]).astype(np.int64)
    targets = vocab.encode(first_after.loc[order].to_numpy()) if len(order) else np.zeros(0, np.int32)
    return EvalSplit(
        cutoff=cutoff,
        user_ids=np.asarray(order, dtype=str),
        inputs=inputs,
        targets=targets,
        purchased_indptr=indptr,
        purchased_indices=indices,
        popularity=_popularity(events, vocab, cutoff, params.popularity_window_days),
    )


def training_ids(collapsed: pd.DataFrame, valid_cutoff: pd.Timestamp) -> pd.DataFrame:
    """user_id and item_id of the collapsed events before the validation cutoff (the training sequences' rows)."""
    before = (collapsed["timestamp"] < valid_cutoff).to_numpy()
    return pd.DataFrame({"user_id": collapsed["user_id"].to_numpy()[before], "item_id": collapsed["item_id"].to_numpy()[before]})


def user_sequences(train: pd.DataFrame, vocab: ItemVocabulary) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each user's items as vocabulary indices, from events sorted by user then time: (user ids, sequences)."""
    codes = train["user_id"].to_numpy()
    items = vocab.encode(train["item_id"].to_numpy())
    starts, ends = _user_runs(codes)
    return codes[starts], [items[s:e] for s, e in zip(starts, ends)]


def training_arrays(sequences: list[np.ndarray], vocab_size: int, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, targets, target counts per item, consecutive item pairs) of the training sequences."""
    flat, lengths = _flat(sequences)
    inputs, targets = _windows_flat(flat, lengths, max_len)
    transitions = _transitions(flat, lengths)
    train_counts = np.bincount(targets.ravel(), minlength=vocab_size).astype(np.float64)
    train_counts[PAD] = 0.0
    return inputs, targets, train_counts, transitions


def _transitions(flat: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(T, 2) int32 consecutive (item, next item) pairs within each sequence, in sequence order."""
    if len(flat) < 2:
        return np.zeros((0, 2), np.int32)
    within = np.ones(len(flat) - 1, dtype=bool)
    starts = np.cumsum(lengths) - lengths
    within[starts[(starts > 0) & (starts < len(flat))] - 1] = False  # the pair that crosses into the next sequence
    return np.stack([flat[:-1][within], flat[1:][within]], axis=1).astype(np.int32)


def build_sequences(events_path: Path, features: FeatureParams, params: RecommenderParams) -> SequenceData:
    """Vocabulary, training windows and the valid/test cutoffs' (history, next item) rows from canonical events."""
    events = load_sequence_events(events_path, params.event_types)
    if events.empty:
        raise ValueError(f"{events_path}: no events of types {params.event_types} (recommender.event_types in params.yaml)")
    if params.protocol == "leave_one_out":
        return build_leave_one_out(events, params, events_path)
    t_end = events["timestamp"].max()
    cutoffs = plan_cutoffs(t_end, features)
    valid_cutoff, test_cutoff = cutoffs["valid"][-1], cutoffs["test"][0]
    events, collapsed = time_protocol_frames(events)
    train = training_ids(collapsed, valid_cutoff)
    if train.empty:
        raise ValueError(
            f"{events_path}: no events before the validation cutoff {valid_cutoff.date()}; the data span is too short "
            "for features.horizon_days in params.yaml"
        )
    vocab = ItemVocabulary.from_counts(train["item_id"].value_counts())
    _, sequences = user_sequences(train, vocab)
    del train
    inputs, targets, train_counts, transitions = training_arrays(sequences, vocab.size, params.max_len)

    valid = _eval_split(events, collapsed, vocab, valid_cutoff, features.horizon_days, params)
    test = _eval_split(events, collapsed, vocab, test_cutoff, features.horizon_days, params)
    for name, split in (("valid", valid), ("test", test)):
        if len(split.targets) == 0:
            raise ValueError(f"{events_path}: no user is active both before and after the {name} cutoff {split.cutoff.date()}")
    latest = _popularity(events, vocab, t_end.ceil("D"), params.popularity_window_days)
    return SequenceData(vocab, inputs, targets, train_counts, transitions, valid, test, latest, params.max_len, "time")


def _csr(lists: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    uniq = [np.unique(x[x != PAD]).astype(np.int32) for x in lists]
    indptr = np.concatenate([[0], np.cumsum([len(x) for x in uniq])]).astype(np.int64)
    return indptr, (np.concatenate(uniq).astype(np.int32) if uniq else np.zeros(0, np.int32))


def build_leave_one_out(events: pd.DataFrame, params: RecommenderParams, source: Path | str = "events") -> SequenceData:
    """The papers' protocol (SASRec, S3-Rec, ICLRec): per user, in time order, the last item is the test target and
    the second to last the validation target; training sees the rest. Test inputs include the validation item.

    The catalogue is every item of the chosen event types (ranked in full); each split's exclusion list (the CSR
    `purchased_*` arrays) holds the user's earlier items, which evaluation never counts as recommendations.
    Popularity: training items for validation, training + validation items for test. Cutoffs are nominal (the
    last event's day and the day before): nothing in this protocol depends on time.
    """
    collapsed = collapse_repeats(events)
    codes = collapsed["user_id"].to_numpy()
    starts, ends = _user_runs(codes)
    users = codes[starts] if len(starts) else np.array([], dtype=object)
    raw = collapsed["item_id"].to_numpy()
    lengths = ends - starts
    train_mask = np.ones(len(collapsed), bool)
    for s, e in zip(starts, ends):
        train_mask[max(s, e - 2) : e] = False  # the last two of each user are held out
    counts = pd.Series(raw[train_mask]).value_counts().reindex(pd.unique(raw), fill_value=0)
    vocab = ItemVocabulary.from_counts(counts)  # the whole catalogue, most trained first
    items = vocab.encode(raw)
    sequences = [items[s : e - 2] for s, e in zip(starts, ends)]
    flat, seq_lengths = _flat(sequences)
    inputs, targets = _windows_flat(flat, seq_lengths, params.max_len)
    transitions = _transitions(flat, seq_lengths)
    train_counts = np.bincount(targets.ravel(), minlength=vocab.size).astype(np.float64)
    train_counts[PAD] = 0.0
    t_end = collapsed["timestamp"].max().floor("D") if len(collapsed) else pd.Timestamp("1970-01-01", tz="UTC")

    def split(held_out: int, min_len: int, cutoff: pd.Timestamp) -> EvalSplit:
        rows = np.flatnonzero(lengths >= min_len)
        hist = [items[starts[r] : ends[r] - held_out] for r in rows]
        target = np.array([items[ends[r] - held_out] for r in rows], dtype=np.int32)
        indptr, indices = _csr(hist)
        pop = np.bincount(np.concatenate(hist) if hist else np.zeros(0, np.int64), minlength=vocab.size).astype(np.float64)
        pop[PAD] = 0.0
        return EvalSplit(cutoff, np.asarray(users[rows], dtype=str), left_pad(hist, params.max_len), target, indptr, indices, pop)

    valid = split(2, 3, t_end - DAY)  # input: all but the last two items
    test = split(1, 2, t_end)  # input: all but the last item (the validation item included)
    for name, part in (("valid", valid), ("test", test)):
        if len(part.targets) == 0:
            raise ValueError(f"{source}: no user has enough items for a leave-one-out {name} row (needs 3 for valid, 2 for test)")
    latest = np.bincount(items, minlength=vocab.size).astype(np.float64)
    latest[PAD] = 0.0
    return SequenceData(vocab, inputs, targets, train_counts, transitions, valid, test, latest, params.max_len, "leave_one_out")


def save_sequences(data: SequenceData, out_dir: Path = SEQUENCES_DIR) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data.vocab.save(out_dir / VOCAB_FILE)
    np.savez_compressed(
        out_dir / "train.npz", inputs=data.train_inputs, targets=data.train_targets, counts=data.train_counts,
        transitions=data.transitions, latest_popularity=data.latest_popularity,
    )
    for name, split in (("valid", data.valid), ("test", data.test)):
        np.savez_compressed(
            out_dir / f"{name}.npz", user_ids=split.user_ids, inputs=split.inputs, targets=split.targets,
            purchased_indptr=split.purchased_indptr, purchased_indices=split.purchased_indices, popularity=split.popularity,
        )
    (out_dir / "summary.json").write_text(json.dumps(sequence_summary(data), indent=2))


def _load_split(path: Path, cutoff: str) -> EvalSplit:
    with np.load(path, allow_pickle=False) as z:
        return EvalSplit(pd.Timestamp(cutoff), z["user_ids"], z["inputs"], z["targets"], z["purchased_indptr"],
                         z["purchased_indices"], z["popularity"])


def load_sequences(out_dir: Path = SEQUENCES_DIR) -> SequenceData:
    out_dir = Path(out_dir)
    if not (out_dir / "train.npz").exists():
        raise FileNotFoundError(f"{out_dir}/train.npz not found: run `shopsight sequences` (or `dvc repro sequences`) first")
    summary = json.loads((out_dir / "summary.json").read_text())
    with np.load(out_dir / "train.npz", allow_pickle=False) as z:
        train = {k: z[k] for k in z.files}
    return SequenceData(
        vocab=ItemVocabulary.load(out_dir / VOCAB_FILE),
        train_inputs=train["inputs"],
        train_targets=train["targets"],
        train_counts=train["counts"],
        transitions=train["transitions"],
        valid=_load_split(out_dir / "valid.npz", summary["valid_cutoff"]),
        test=_load_split(out_dir / "test.npz", summary["test_cutoff"]),
        latest_popularity=train["latest_popularity"],
        max_len=int(summary["max_len"]),
        protocol=summary.get("protocol", "time"),
    )


def sequence_summary(data: SequenceData) -> dict:
    return {
        "items": data.vocab.size - 1,
        "max_len": data.max_len,
        "train_windows": int(len(data.train_inputs)),
        "train_targets": int((data.train_targets != PAD).sum()),
        "valid_cutoff": str(data.valid.cutoff),
        "valid_users": int(len(data.valid.targets)),
        "test_cutoff": str(data.test.cutoff),
        "test_users": int(len(data.test.targets)),
        "test_targets_unseen": int((data.test.targets == PAD).sum()),
        "protocol": data.protocol,
    }


BYTES_PER_EVENT = 145  # one-pass peak RSS per event of `shopsight sequences` (1.37 GiB at 10.2M; it was 190 before
# sessions became codes and the copies went: 5.37 GiB at 30.6M, 1.92 GiB at 10.2M)
MEMORY_SHARE = 0.6  # recommender.build_shards auto: a shard's build may take this share of the machine's memory (DVC
# runs the stages one at a time; the scale target is 16 GiB of 24)


def events_per_build_shard(total_memory: int | None = None) -> int:
    """The events one build shard may hold under auto: MEMORY_SHARE of the machine's memory (os.sysconf) at
    BYTES_PER_EVENT (about 106M events on a 24 GiB machine: 100M events build in one pass of ~13.5 GiB)."""
    import os

    if total_memory is None:
        try:
            total_memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total_memory = 16 * 2**30
    return max(1, int(total_memory * MEMORY_SHARE / BYTES_PER_EVENT))


def build_shard_count(events_path: Path, setting: int | str, total_memory: int | None = None) -> int:
    """recommender.build_shards as a number: auto = the events file's rows (its Parquet footer, nothing read) over
    events_per_build_shard(), rounded up: one pass while it fits, shards (each ~1.7x the CPU of one pass, measured)
    only where memory needs them."""
    if setting != "auto":
        return max(1, int(setting))
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(events_path).metadata.num_rows if Path(events_path).exists() else 0
    return max(1, -(-rows // events_per_build_shard(total_memory)))


def run_sequences(params) -> dict:
    """events.parquet -> data/sequences/ (the CLI command and the DVC stage `sequences`); with
    orchestration.dask.partition, built by user-hash shards on Dask (shopsight.shards), the same arrays."""
    n_shards = build_shard_count(paths.EVENTS, params.recommender.build_shards)
    if params.orchestration.dask.partition and params.recommender.protocol == "time":
        from shopsight.shards import build_sequences_on_dask

        data = build_sequences_on_dask(paths.EVENTS, params)
    elif n_shards > 1 and params.recommender.protocol == "time":
        from shopsight.shards import build_sequences_in_shards

        print(f"sequences: {n_shards} user-hash shards, one after another (recommender.build_shards)", flush=True)
        data = build_sequences_in_shards(paths.EVENTS, params, n_shards)
    else:
        data = build_sequences(paths.EVENTS, params.features, params.recommender)
    save_sequences(data)
    return sequence_summary(data)
