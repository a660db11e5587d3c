"""GRU4Rec-style recurrent next-item models (GRU or LSTM) over item sequences."""

from __future__ import annotations

from models.sequence_common import embed_items, item_inputs, project


def build_rnn_encoder(vocab_size: int, max_len: int, embedding_dim: int, units: int, dropout: float, cell: str = "gru"):
    """Items (batch, max_len) -> (batch, max_len, embedding_dim); padding steps are masked (state passes through)."""
    import keras
    from keras import ops

    if cell not in ("gru", "lstm"):
        raise ValueError(f"unknown recurrent cell {cell!r}: use gru or lstm")
    items = item_inputs(max_len)
    x, _, _ = embed_items(items, vocab_size, embedding_dim, dropout)
    layer = keras.layers.GRU if cell == "gru" else keras.layers.LSTM
    h = layer(units, return_sequences=True, name=cell)(x, mask=ops.not_equal(items, 0))
    return keras.Model(items, project(h, embedding_dim), name=f"{cell}4rec")
