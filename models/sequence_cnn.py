"""Caser-style convolutional next-item model: horizontal and vertical convolutions over the recent items.

Caser looks at the last `window` items: horizontal filters of every height 1..window slide over them (union-
level patterns, max-pooled), vertical filters take weighted sums of them (point-level patterns). Here both
are applied causally at every position (the window ending at that position), so the model trains on every
step of a sequence like the recurrent and attention models.
"""

from __future__ import annotations

from models.sequence_common import embed_items, item_inputs, project


def build_cnn_encoder(vocab_size: int, max_len: int, embedding_dim: int, window: int, horizontal_filters: int,
                      vertical_filters: int, dropout: float, embedding_dropout: float = 0.0):
    """Items (batch, L <= max_len) -> (batch, L, embedding_dim), each position from the `window` items ending there."""
    import keras

    items = item_inputs(max_len)
    x, mask, _ = embed_items(items, vocab_size, embedding_dim, embedding_dropout)
    pooled = []
    for h in range(1, window + 1):
        conv = keras.layers.Conv1D(horizontal_filters, h, padding="causal", activation="relu", name=f"horizontal_{h}")(x)
        conv = conv * mask  # padding columns give 0 like the zero padding below: trimmed and max_len inputs agree
        span = window - h + 1  # conv outputs that fit inside the window ending here
        if span > 1:
            conv = keras.layers.ZeroPadding1D((span - 1, 0), name=f"pad_{h}")(conv)  # ReLU >= 0: zeros never win the max
            conv = keras.layers.MaxPooling1D(span, strides=1, name=f"max_over_window_{h}")(conv)
        pooled.append(conv)
    # Vertical filters: weighted sums of the window's embeddings, as a (window x 1) 2-D convolution over (time, dim).
    grid = keras.layers.Reshape((-1, embedding_dim, 1), name="as_grid")(x)
    grid = keras.layers.ZeroPadding2D(((window - 1, 0), (0, 0)), name="pad_vertical")(grid)
    vertical = keras.layers.Conv2D(vertical_filters, (window, 1), name="vertical")(grid)
    vertical = keras.layers.Reshape((-1, embedding_dim * vertical_filters), name="vertical_flat")(vertical)
    z = keras.layers.Concatenate(name="caser_features")([*pooled, vertical])
    if dropout > 0:
        z = keras.layers.Dropout(dropout, name="caser_dropout")(z)
    z = keras.layers.Dense(embedding_dim, activation="relu", name="caser_hidden")(z)
    return keras.Model(items, project(z, embedding_dim), name="caser")
