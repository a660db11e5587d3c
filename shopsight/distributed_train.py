"""Training across processes with tf.distribute.MultiWorkerMirroredStrategy: one process per worker, the cluster
read from TF_CONFIG, every gradient all-reduced so the workers hold the same weights after each step.

    TF_CONFIG='{"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}}' \\
        python -m shopsight.distributed_train mlp recommender --task propensity --out artifacts/multiworker
    (the same on host2 with "index": 1)

Two models, built by the same builders as single-process training: the propensity/churn MLP
(models/mlp.py: build_mlp_classifier) and the recommender's sequence encoders (shopsight.recommender.build_encoder:
GRU/LSTM, CNN, transformer) with the full-softmax next-item loss of shopsight.recommender.sequence_loss.
The loop is a custom one (`strategy.run` over a distributed tf.data pipeline): Keras 3's `Model.fit` under
MultiWorkerMirroredStrategy is not supported (keras-team/keras#20585). Each worker reads the whole training set
and tf.data gives it every n-th global batch element (AutoShardPolicy.DATA); the global batch is the per-worker
batch times the number of workers. Early stopping, calibration and the candidate choice stay with the
single-process stages (`shopsight train ...`): this module trains, it does not select.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shopsight.config import MLPParams, RecommenderParams

TF_CONFIG_ENV = "TF_CONFIG"


@dataclass
class FitResult:
    model: object  # the Keras model (for the recommender: the encoder)
    losses: list[float]  # mean training loss per epoch (the same on every worker: all-reduced)
    local_rows: list[int]  # training rows this worker read per epoch (its share of every global batch)
    workers: int
    worker_index: int


@functools.cache
def multi_worker_strategy():
    """MultiWorkerMirroredStrategy from $TF_CONFIG (ring all-reduce over gRPC, which works on CPUs); one per process,
    as TensorFlow allows, shared by every model the process trains.

    Raises a clear error when TF_CONFIG is missing or has no worker list: without it TensorFlow silently trains
    alone."""
    raw = os.environ.get(TF_CONFIG_ENV)
    if not raw:
        raise RuntimeError(
            f"${TF_CONFIG_ENV} is not set: multi-worker training needs the cluster, e.g. "
            '{"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}}'
        )
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        config["task"]["index"]
    except (ValueError, KeyError, TypeError) as exc:
        raise RuntimeError(f"${TF_CONFIG_ENV} must hold cluster.worker (a list of host:port) and task.index: {exc}") from exc
    if not workers:
        raise RuntimeError(f"${TF_CONFIG_ENV}: cluster.worker is empty")
    import tensorflow as tf

    options = tf.distribute.experimental.CommunicationOptions(implementation=tf.distribute.experimental.CommunicationImplementation.RING)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def _worker_index() -> int:
    return int(json.loads(os.environ[TF_CONFIG_ENV])["task"]["index"])


def _distributed_batches(strategy, arrays: tuple[np.ndarray, ...], global_batch: int, seed: int, epoch: int):
    """The epoch's global batches, each worker getting its part (every worker holds the same arrays and shuffles
    them with the same seed, so the parts never overlap)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(arrays).shuffle(len(arrays[0]), seed=seed + epoch, reshuffle_each_iteration=False)
    ds = ds.batch(global_batch, drop_remainder=True)  # equal steps on every worker: a collective waits for all
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(ds.with_options(options))


def _fit(strategy, model, optimizer, per_example_loss, arrays, per_worker_batch: int, epochs: int, seed: int, log=print) -> list[float]:
    """The custom loop: per replica, the loss averaged over the GLOBAL batch; the optimizer sums the replicas'
    gradients (an all-reduce), so every worker applies the same update."""
    import tensorflow as tf

    global_batch = per_worker_batch * strategy.num_replicas_in_sync
    if len(arrays[0]) < global_batch:
        raise ValueError(f"{len(arrays[0])} training rows: fewer than one global batch ({global_batch}); lower the batch size")

    def replica_step(*batch):
        with tf.GradientTape() as tape:
            loss = tf.nn.compute_average_loss(per_example_loss(model, *batch), global_batch_size=global_batch)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss, tf.shape(batch[0])[0]

    @tf.function
    def step(batch):
        loss, rows = strategy.run(replica_step, args=batch)
        local_rows = tf.add_n(strategy.experimental_local_results(rows))  # this worker's part of the global batch
        return strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None), local_rows

    losses, local_rows = [], []
    for epoch in range(epochs):
        total, steps, rows = 0.0, 0, 0
        for batch in _distributed_batches(strategy, arrays, global_batch, seed, epoch):
            loss, seen = step(batch)
            total, steps, rows = total + float(loss), steps + 1, rows + int(seen)
        losses.append(total / max(steps, 1))
        local_rows.append(rows)
        log(f"worker {_worker_index()} epoch {epoch + 1}: loss {losses[-1]:.5f} ({steps} global batches of {global_batch}, "
            f"{rows} rows here)")
    return losses, local_rows


def fit_binary_mlp_multiworker(x: np.ndarray, y: np.ndarray, cfg: MLPParams, name: str = "mlp", log=print) -> FitResult:
    """The task MLP (models/mlp.py, as shopsight.train.fit_binary_mlp builds it) fitted for cfg.epochs across the
    TF_CONFIG workers with binary cross-entropy; cfg.batch_size rows per worker per step."""
    import keras

    from models.mlp import build_mlp_classifier

    strategy = multi_worker_strategy()
    keras.utils.set_random_seed(cfg.seed)  # the same initial weights on every worker
    with strategy.scope():
        model = build_mlp_classifier(x, cfg.hidden_units, cfg.dropout, cfg.learning_rate, name=name)
        optimizer = keras.optimizers.Adam(cfg.learning_rate)
        optimizer.build(model.trainable_variables)
    bce = keras.losses.BinaryCrossentropy(reduction=None)

    def per_example(model, xb, yb):
        return bce(yb[:, None], model(xb, training=True))

    arrays = (np.asarray(x, np.float32), np.asarray(y, np.float32))
    losses, rows = _fit(strategy, model, optimizer, per_example, arrays, cfg.batch_size, cfg.epochs, cfg.seed, log)
    return FitResult(model, losses, rows, strategy.num_replicas_in_sync, _worker_index())


def fit_sequence_model_multiworker(inputs: np.ndarray, targets: np.ndarray, vocab_size: int, family: str, p: RecommenderParams,
                                   log=print) -> FitResult:
    """A recommender encoder (shopsight.recommender.build_encoder, any family) fitted for p.epochs across the
    TF_CONFIG workers with the full-softmax next-item loss over the real (non-padding) positions."""
    import keras
    import tensorflow as tf

    from shopsight.recommender import NEG_INF, build_encoder, item_table, model_config, targets_per_item
    from shopsight.sequences import PAD

    strategy = multi_worker_strategy()
    keras.utils.set_random_seed(p.seed)
    with strategy.scope():
        # the auto settings resolved from the data's density, as train_sequence_model does
        encoder = build_encoder(model_config(family, vocab_size, p, targets_per_item(targets, vocab_size)))
        optimizer = keras.optimizers.Adam(p.learning_rate)
        optimizer.build(encoder.trainable_variables)

    def per_example(model, xb, yb):
        # sequence_loss(loss="full") per sequence: the mean cross-entropy of its real positions (padding never a target)
        h = model(xb, training=True)
        logits = tf.einsum("bld,vd->blv", h, item_table(model)) + tf.one_hot(PAD, vocab_size, on_value=NEG_INF, off_value=0.0)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits)
        real = tf.cast(tf.not_equal(yb, PAD), tf.float32)
        return tf.reduce_sum(ce * real, axis=1) / tf.maximum(tf.reduce_sum(real, axis=1), 1.0)

    arrays = (np.asarray(inputs, np.int32), np.asarray(targets, np.int32))
    losses, rows = _fit(strategy, encoder, optimizer, per_example, arrays, p.batch_size, p.epochs, p.seed, log)
    return FitResult(encoder, losses, rows, strategy.num_replicas_in_sync, _worker_index())


def save_result(result: FitResult, out_dir: Path) -> None:
    """weights.npz (every weight array, in the model's order) and history.json (losses, rows read, workers)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / "weights.npz", *result.model.get_weights())
    (out_dir / "history.json").write_text(json.dumps(
        {"loss": result.losses, "local_rows": result.local_rows, "workers": result.workers, "worker_index": result.worker_index}
    ))


def _pipeline_mlp_data(task: str, params) -> tuple[np.ndarray, np.ndarray]:
    """The training rows of a user task's features file (data/features/<task>.parquet), as its models take them."""
    import pandas as pd

    from shopsight.features import feature_columns, model_input

    path = Path("data/features") / f"{task}.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `dvc repro` up to the {task} features stage first")
    frame = pd.read_parquet(path)
    train = frame[frame["split"] == "train"]
    return model_input(train, feature_columns(params.features.windows_days)), train["label"].to_numpy()


def main(argv: list[str] | None = None) -> None:
    from shopsight.config import load_params

    parser = argparse.ArgumentParser(prog="python -m shopsight.distributed_train", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", choices=["mlp", "recommender"], help="what to train, in turn (one strategy per process)")
    parser.add_argument("--task", default="propensity", choices=["propensity", "churn"], help="the MLP's task (features file, params section)")
    parser.add_argument("--family", default=None, help="recommender family (default: the first of recommender.models)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default=None,
                        help="an .npz with x, y (mlp) and/or inputs, targets, vocab_size (recommender) instead of the pipeline's files")
    parser.add_argument("--out", required=True, help="this worker's output folder: <out>/<model>/weights.npz and history.json")
    args = parser.parse_args(argv)
    params = load_params(Path(args.params))
    data = dict(np.load(args.data, allow_pickle=False)) if args.data else None
    for model in args.models:
        if model == "mlp":
            cfg = getattr(params, args.task).mlp
            x, y = (data["x"], data["y"]) if data else _pipeline_mlp_data(args.task, params)
            result = fit_binary_mlp_multiworker(x, y, cfg, name=f"{args.task}_mlp")
        else:
            rec = params.recommender
            family = args.family or rec.models[0]
            if data:
                inputs, targets, vocab_size = data["inputs"], data["targets"], int(data["vocab_size"])
            else:
                from shopsight.sequences import load_sequences

                seq = load_sequences()
                inputs, targets, vocab_size = seq.train_inputs, seq.train_targets, seq.vocab.size
            result = fit_sequence_model_multiworker(inputs, targets, vocab_size, family, rec)
        save_result(result, Path(args.out) / model)


if __name__ == "__main__":
    main()
