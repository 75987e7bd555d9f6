"""Custom Keras layers the zoo needs. Imports Keras at module level: import it lazily.

`FusedLSTM` exists because Keras 3's LSTM converts to a TFLite WHILE loop (slow, and its int8
conversion crashed here), while devices want the fused UNIDIRECTIONAL_SEQUENCE_LSTM kernel.
The TFLite converter fuses any function carrying `api_implements="lstm_*"` with tf_keras'
`standard_lstm` signature, so this layer runs exactly that function on the TensorFlow backend.
Registered as `toolkit>FusedLSTM`: `toolkit.core.modelio` imports this module before loading.
"""

from __future__ import annotations

import uuid
from typing import Any

import keras


@keras.saving.register_keras_serializable(package="toolkit")
class FusedLSTM(keras.layers.Layer):
    """An LSTM (sigmoid gates, tanh cell) whose TFLite conversion is the fused LSTM op.

    Weights and math match `keras.layers.LSTM(units)` (gate order i, f, c, o; unit forget
    bias). Returns the last step, or every step with `return_sequences=True`.
    """

    tflite_fused = True  # toolkit.convert.tflite converts such models on the fusing path

    def __init__(self, units: int, return_sequences: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = int(units)
        self.return_sequences = bool(return_sequences)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        units = self.units

        def forget_bias_one(shape: Any, dtype: Any = None) -> Any:
            ops = keras.ops
            parts = [ops.zeros((units,)), ops.ones((units,)), ops.zeros((2 * units,))]
            return ops.cast(ops.concatenate(parts), dtype or "float32")

        self.kernel = self.add_weight(
            name="kernel", shape=(int(input_shape[-1]), 4 * units), initializer="glorot_uniform"
        )
        self.recurrent_kernel = self.add_weight(
            name="recurrent_kernel", shape=(units, 4 * units), initializer="orthogonal"
        )
        self.bias = self.add_weight(name="bias", shape=(4 * units,), initializer=forget_bias_one)

    def call(self, inputs: Any) -> Any:
        import tensorflow as tf
        from tf_keras.src.layers.rnn import gru_lstm_utils
        from tf_keras.src.layers.rnn.lstm import standard_lstm

        # A fresh api name per trace: Grappler's implementation selector swaps functions that
        # share one, which fed a batch-32 trace's loop to a batch-4 call here.
        fn = gru_lstm_utils.generate_defun_backend(
            f"lstm_{uuid.uuid4().hex}",
            "CPU",
            standard_lstm,
            {"time_major": False, "go_backwards": False},
        )
        zeros = tf.zeros((tf.shape(inputs)[0], self.units), inputs.dtype)
        last, sequence, _, _, _ = fn(
            inputs=inputs,
            init_h=zeros,
            init_c=zeros,
            kernel=tf.convert_to_tensor(self.kernel),
            recurrent_kernel=tf.convert_to_tensor(self.recurrent_kernel),
            bias=tf.convert_to_tensor(self.bias),
            mask=None,
            time_major=False,
            go_backwards=False,
            sequence_lengths=None,
            zero_output_for_mask=False,
            return_sequences=self.return_sequences,
        )
        return sequence if self.return_sequences else last

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        if self.return_sequences:
            return (input_shape[0], input_shape[1], self.units)
        return (input_shape[0], self.units)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "return_sequences": self.return_sequences,
        }


@keras.saving.register_keras_serializable(package="toolkit")
class BoxDecode(keras.layers.Layer):
    """Per-cell distances (left, top, right, bottom, in cells) -> xyxy boxes in input pixels.

    The anchor-free detector's decode lives in the graph so its `boxes` output is in pixels
    (what a device draws) with its own int8 scale: a multiply by the stride and a constant
    grid of cell centres, two ops every runtime quantizes well. NMS stays in the runner.
    """

    def __init__(self, stride: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stride = int(stride)

    def call(self, distances: Any) -> Any:
        ops = keras.ops
        rows, cols = distances.shape[1], distances.shape[2]
        ys, xs = ops.meshgrid(ops.arange(rows, dtype="float32"), ops.arange(cols, dtype="float32"),
                              indexing="ij")  # fmt: skip
        cx, cy = (xs + 0.5) * self.stride, (ys + 0.5) * self.stride
        centres = ops.stack([cx, cy, cx, cy], axis=-1)[None]
        sign = ops.convert_to_tensor([-1.0, -1.0, 1.0, 1.0])
        return centres + sign * distances * float(self.stride)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "stride": self.stride}
