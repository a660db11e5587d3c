"""Recommender speed, as ratios against baselines measured in the same run:

1. Transformer training throughput (sequences/s, the real train step of shopsight.recommender) against the
   machine's own dense float32 matrix-multiply throughput: the achieved share of the measured FLOP/s, from an
   analytical FLOP count of one training step (forward x 3).
2. Full-catalogue evaluation time per 1,000 users: one matrix product per batch of users
   (shopsight.ranking.rank_targets) against scoring users one at a time (a loop of vector-matrix products).

    python bench/bench_recommender.py [--quick] [--items 5000] [--users 5000]

Shapes come from params.yaml's recommender section (the demo configuration). Random data: speed only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def matmul_flops(n: int, seconds: float) -> float:
    """Dense float32 matmul FLOP/s of this machine under TensorFlow (best of repeated n x n products)."""
    import tensorflow as tf

    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    mm = tf.function(lambda x, y: tf.matmul(x, y))
    mm(a, b).numpy()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        mm(a, b).numpy()
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def transformer_step_flops(p, vocab: int) -> float:
    """Multiply-adds x 2 of one training sequence (forward + backward ~ 3 x forward), full softmax."""
    d, w, depth, L = p.embedding_dim, p.transformer.width, p.transformer.depth, p.max_len
    per_position = depth * (8 * d * d + 4 * d * w + 4 * L * d) + 2 * d * d + 2 * d * vocab
    return 3.0 * L * per_position


def bench_training(p, vocab: int, steps: int) -> float:
    """Sequences per second of the real training step on random windows (after a warm-up step)."""
    import tensorflow as tf

    from shopsight.recommender import build_encoder, make_train_step, model_config

    encoder = build_encoder(model_config("transformer", vocab, p))
    step = make_train_step(encoder, p, np.log(np.full(vocab, 1.0 / vocab, dtype=np.float32)))
    rng = np.random.default_rng(0)
    x = tf.constant(rng.integers(1, vocab, size=(p.batch_size, p.max_len)), tf.int32)
    y = tf.constant(rng.integers(1, vocab, size=(p.batch_size, p.max_len)), tf.int32)
    c = y[:, -1]
    float(step(x, y, c))  # trace / compile
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step(x, y, c)
    float(loss)
    return steps * p.batch_size / (time.perf_counter() - t0)


def bench_trimming(p, sequences_dir: Path, batches: int, rounds: int = 2) -> tuple[float, float]:
    """Sequences/s of the real training step on real sequences (a `shopsight sequences` output, e.g. Amazon Toys from
    bench/realdata_recommender.py), the same length-bucketed batches fed at full max_len width vs trimmed to their
    width (what training does); the two alternate `rounds` times so machine load hits both alike. (full, trimmed)."""
    import tensorflow as tf

    from shopsight.recommender import build_encoder, length_batches, make_train_step, model_config
    from shopsight.sequences import load_sequences

    data = load_sequences(sequences_dir)
    p = p.model_copy(update={"max_len": data.train_inputs.shape[1]})
    encoder = build_encoder(model_config("transformer", data.vocab.size, p))
    step = make_train_step(encoder, p, np.zeros(data.vocab.size, np.float32))
    chosen = length_batches(data.train_inputs, p.batch_size, np.random.default_rng(0))[:batches]
    feeds = {mode: [(tf.constant(data.train_inputs[r, -w:] if mode == "trimmed" else data.train_inputs[r]),
                     tf.constant(data.train_targets[r, -w:] if mode == "trimmed" else data.train_targets[r]))
                    for r, w in chosen] for mode in ("full", "trimmed")}
    for mode in feeds:  # trace every shape first
        for x, y in feeds[mode]:
            step(x, y, y[:, -1])
    seconds = {"full": 0.0, "trimmed": 0.0}
    for _ in range(rounds):
        for mode in feeds:
            t0 = time.perf_counter()
            for x, y in feeds[mode]:
                loss = step(x, y, y[:, -1])
            float(loss)
            seconds[mode] += time.perf_counter() - t0
    n = rounds * sum(len(r) for r, _ in chosen)
    return n / seconds["full"], n / seconds["trimmed"]


def bench_evaluation(users: int, items: int, dim: int) -> tuple[float, float]:
    """Seconds per 1,000 users: batched matrix product vs a per-user loop (same ranks checked)."""
    from shopsight.ranking import embedding_scorer, rank_targets, ranks_from_scores

    rng = np.random.default_rng(1)
    uv = rng.normal(size=(users, dim)).astype(np.float32)
    table = rng.normal(size=(items + 1, dim)).astype(np.float32)
    targets = rng.integers(1, items + 1, size=users)
    t0 = time.perf_counter()
    batched = rank_targets(embedding_scorer(uv, table), targets)
    t_batched = time.perf_counter() - t0
    loop_users = min(users, 1000)
    t0 = time.perf_counter()
    looped = np.array([ranks_from_scores((table @ uv[u])[None, :], targets[u : u + 1])[0] for u in range(loop_users)])
    t_loop = time.perf_counter() - t0
    assert np.array_equal(looped, batched[:loop_users]), "batched and per-user ranks differ"
    return 1000 * t_batched / users, 1000 * t_loop / loop_users


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and users (about half a minute)")
    parser.add_argument("--items", type=int, default=None, help="catalogue size (default: the simulator's n_items)")
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--sequences", type=Path, default=None,
                        help="a real `shopsight sequences` output (e.g. <workdir>/Toys_and_Games/data/sequences of "
                             "bench/realdata_recommender.py): measure batch trimming on it and stop")
    args = parser.parse_args()

    from shopsight.config import load_params
    from shopsight.recommender import resolve_auto

    params = load_params(args.params)
    p = resolve_auto(params.recommender, None)  # random data: the dense ("auto") sizes
    items = args.items or params.data.synthetic.n_items
    users = args.users or (2000 if args.quick else 10000)
    steps = 5 if args.quick else 30
    if args.sequences:
        import os

        full, trimmed = bench_trimming(p, args.sequences, 10 if args.quick else 40)
        print(f"transformer training on {args.sequences} (loss {p.loss}, batch {p.batch_size}, length-bucketed batches): "
              f"{full:,.0f} sequences/s at full max_len width, {trimmed:,.0f} trimmed to each batch's longest history; "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"RATIO trimmed / full width: {trimmed / full:.2f}x")
        return

    flops = matmul_flops(1024, 2.0 if args.quick else 5.0)
    seq_per_s = bench_training(p, items + 1, steps)
    achieved = seq_per_s * transformer_step_flops(p, items + 1)
    print(f"machine dense matmul (1024^3, float32): {flops / 1e9:,.1f} GFLOP/s")
    print(f"transformer training (depth {p.transformer.depth}, heads {p.transformer.heads}, d {p.embedding_dim}, "
          f"width {p.transformer.width}, max_len {p.max_len}, batch {p.batch_size}, {items} items, loss {p.loss}, xla {p.xla}): "
          f"{seq_per_s:,.0f} sequences/s = {achieved / 1e9:,.2f} GFLOP/s")
    print(f"RATIO achieved / machine FLOP/s: {achieved / flops:.3f}")

    per_1k, loop_per_1k = bench_evaluation(users, items, p.embedding_dim)
    print(f"full-catalogue evaluation ({users} users x {items} items, d {p.embedding_dim}): {per_1k * 1000:.1f} ms per 1,000 users "
          f"(batched matrix product) vs {loop_per_1k * 1000:.1f} ms (per-user loop)")
    print(f"RATIO per-user loop / batched: {loop_per_1k / per_1k:.1f}x")


if __name__ == "__main__":
    main()
