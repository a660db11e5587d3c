"""SASRec-style self-attention next-item model: causal attention, learned positions, shared item table."""

from __future__ import annotations

from models.sequence_common import embed_items, item_inputs, project


def _layers():
    import keras
    from keras import ops

    class RightAnchoredPositions(keras.layers.Layer):
        """Learned positions anchored at the right end: the most recent item is always row max_len - 1 of the table,
        whatever the width L <= max_len of the left-padded input, so a batch trimmed to its longest history and the
        max_len input give the same output (the same rows as the classic left-to-right table at width max_len)."""

        def __init__(self, max_len: int, dim: int, **kwargs):
            super().__init__(**kwargs)
            self.max_len, self.dim = max_len, dim

        def build(self, input_shape):
            self.embeddings = self.add_weight(shape=(self.max_len, self.dim), initializer="uniform", name="embeddings")

        def call(self, items):
            length = ops.shape(items)[1]
            return ops.take(self.embeddings, ops.arange(self.max_len - length, self.max_len), axis=0)[None]

        def compute_output_shape(self, input_shape):
            return (1, input_shape[1], self.dim)

    class CausalPaddingMask(keras.layers.Layer):
        """(batch, L, L) attention mask: query t may attend to key s when s <= t and s is a real item (or s == t,
        so no row is empty)."""

        def call(self, items):
            length = ops.shape(items)[1]
            steps = ops.arange(length)
            causal = ops.greater_equal(steps[:, None], steps[None, :])
            eye = ops.equal(steps[:, None], steps[None, :])
            valid = ops.not_equal(items, 0)
            return ops.logical_or(ops.logical_and(causal[None], valid[:, None, :]), eye[None])

        def compute_output_shape(self, input_shape):
            return (input_shape[0], input_shape[1], input_shape[1])

    return RightAnchoredPositions, CausalPaddingMask


def build_transformer_encoder(vocab_size: int, max_len: int, embedding_dim: int, depth: int, heads: int, width: int,
                              dropout: float, embedding_dropout: float = 0.0):
    """Items (batch, L <= max_len) -> (batch, L, embedding_dim); position t attends to real items at <= t."""
    import keras

    if embedding_dim % heads:
        raise ValueError(f"recommender.embedding_dim={embedding_dim} must be divisible by recommender.transformer.heads={heads}")
    positions_layer, mask_layer = _layers()
    items = item_inputs(max_len)
    x, mask, _ = embed_items(items, vocab_size, embedding_dim, 0.0)
    x = x * (embedding_dim**0.5)
    x = (x + positions_layer(max_len, embedding_dim, name="positions")(items)) * mask  # padding positions stay zero
    if embedding_dropout > 0:
        x = keras.layers.Dropout(embedding_dropout, name="input_dropout")(x)
    attention_mask = mask_layer(name="causal_padding_mask")(items)
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
