"""SASRec-style self-attention next-item model: causal attention, learned positions, shared item table."""

from __future__ import annotations

from models.sequence_common import embed_items, item_inputs, project


def build_transformer_encoder(vocab_size: int, max_len: int, embedding_dim: int, depth: int, heads: int, width: int,
                              dropout: float, embedding_dropout: float = 0.0):
    """Items (batch, max_len) -> (batch, max_len, embedding_dim); position t attends to real items at <= t."""
    import keras
    from keras import ops

    if embedding_dim % heads:
        raise ValueError(f"recommender.embedding_dim={embedding_dim} must be divisible by recommender.transformer.heads={heads}")
    items = item_inputs(max_len)
    x, mask, _ = embed_items(items, vocab_size, embedding_dim, 0.0)
    x = x * (embedding_dim**0.5)
    positions = keras.layers.Embedding(max_len, embedding_dim, name="positions")(ops.arange(max_len)[None, :])
    x = (x + positions) * mask  # padding positions stay zero
    if embedding_dropout > 0:
        x = keras.layers.Dropout(embedding_dropout, name="input_dropout")(x)
    # Query t may attend to key s when s <= t and s is a real item (or s == t, so no row is empty).
    valid = ops.not_equal(items, 0)
    causal = ops.greater_equal(ops.arange(max_len)[:, None], ops.arange(max_len)[None, :])
    eye = ops.equal(ops.arange(max_len)[:, None], ops.arange(max_len)[None, :])
    attention_mask = ops.logical_or(ops.logical_and(causal[None], valid[:, None, :]), eye[None])
    for b in range(depth):
        q = keras.layers.LayerNormalization(epsilon=1e-6, name=f"block{b}_norm_attention")(x)
        a = keras.layers.MultiHeadAttention(heads, embedding_dim // heads, dropout=dropout, name=f"block{b}_attention")(
            q, q, attention_mask=attention_mask
        )
        x = x + keras.layers.Dropout(dropout, name=f"block{b}_attention_dropout")(a)
        f = keras.layers.LayerNormalization(epsilon=1e-6, name=f"block{b}_norm_ffn")(x)
        f = keras.layers.Dense(width, activation="gelu", name=f"block{b}_ffn_in")(f)
        f = keras.layers.Dense(embedding_dim, name=f"block{b}_ffn_out")(f)
        x = (x + keras.layers.Dropout(dropout, name=f"block{b}_ffn_dropout")(f)) * mask
    x = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")(x)
    return keras.Model(items, project(x, embedding_dim), name="sasrec")
