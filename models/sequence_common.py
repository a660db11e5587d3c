"""Pieces shared by the sequence models: the item table used for both input and output, and the padding mask.

Every sequence model maps left-padded item indices (batch, max_len) to one vector per position
(batch, max_len, embedding_dim) that sees only that position and earlier ones; the score of item i after
position t is the dot product of that vector with row i of the shared item table.
"""

from __future__ import annotations

ITEM_TABLE = "item_embedding"


def item_inputs(max_len: int):
    """Left-padded item indices of any width up to max_len: training trims a batch to its longest history (the
    last L columns), serving and evaluation pass max_len; every family gives the same output for both."""
    import keras

    del max_len  # the width is free; positional tables are sized by max_len in the families that have them
    return keras.Input(shape=(None,), dtype="int32", name="items")


def embed_items(items, vocab_size: int, embedding_dim: int, dropout: float):
    """(embedded items with padding zeroed, float mask (batch, len, 1), the shared item-table layer)."""
    import keras
    from keras import ops

    table = keras.layers.Embedding(vocab_size, embedding_dim, name=ITEM_TABLE)
    mask = ops.expand_dims(ops.cast(ops.not_equal(items, 0), "float32"), -1)
    x = table(items) * mask
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="item_dropout")(x)
    return x, mask, table


def project(x, embedding_dim: int):
    """The per-position output in the item table's space (its bias acts as a learned per-item prior)."""
    import keras

    return keras.layers.Dense(embedding_dim, name="to_item_space")(x)
