"""Tiny Keras models several test modules build (kept here so each file stays about one room)."""

from __future__ import annotations

import numpy as np


def separable(relu6: bool):
    """Conv -> BN -> ReLU -> depthwise -> BN -> ReLU -> conv -> GAP -> dense, reparametrized
    so the depthwise BN's output channels span 1000x and the next conv undoes it (the same
    float function for ReLU): folded, the depthwise kernel's channel ranges are 1000x apart."""
    import keras

    keras.utils.set_random_seed(1)
    act = (lambda: keras.layers.ReLU(6.0)) if relu6 else keras.layers.ReLU
    inputs = keras.Input((12, 12, 3), name="input")
    h = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    h = act()(keras.layers.BatchNormalization()(h))
    h = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(h)
    h = act()(keras.layers.BatchNormalization(name="dw_bn")(h))
    h = keras.layers.Conv2D(16, 1, use_bias=False, name="pw")(h)
    h = act()(keras.layers.BatchNormalization()(h))
    model = keras.Model(inputs, keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(h)))
    spread = np.geomspace(0.03, 30.0, 8).astype(np.float32)
    bn = model.get_layer("dw_bn")
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([gamma * spread, beta * spread, mean, var])
    pw = model.get_layer("pw")
    pw.set_weights([pw.get_weights()[0] / spread.reshape(1, 1, -1, 1)])
    return model
