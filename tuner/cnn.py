"""The convolutional family (``[model] family = "cnn"``): every CNN ``suggest_*`` call lives here, next to the network.

A CNN is ``n_blocks`` blocks of one convolution (``kernel_size``, "same" padding), optional batch
normalisation, ReLU and 2x2 pooling, then a dense head: the feature maps flattened (or averaged per
map), dropout before each dense layer, an optional hidden layer of ``dense_units`` and the softmax.
The first block has ``filters`` filters; each further block twice as many (``filter_growth =
"double"``, as in Keras' MNIST convnet: 32 then 64) or the same.

Every export takes rows of pixels, whatever the family (tuner.data flattens images; predict feeds
rows): the network's first layer turns each row back into the data's recorded (height, width,
channels), so export, predict, latency and everything else after the model is the MLP's code.
Only "same" padding is offered, so the kernel size never shrinks a map and only the pooling does:
a space whose deepest network pools a side below one pixel is refused before the first trial.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tuner.errors import ConfigError
from tuner.studyfile import TRAINING_PARAMETERS, Choice, Fixed, ParamSpec

if TYPE_CHECKING:
    import keras
    import optuna

__all__ = ["ARCHITECTURE_PARAMETERS", "suggest_cnn_hyperparameters", "build_cnn", "block_filters", "check_space_fits_images"]

# The CNN's own parameters, drawn in this order before the training parameters every family shares.
ARCHITECTURE_PARAMETERS = ("n_blocks", "filters", "filter_growth", "kernel_size", "batch_norm", "pooling", "head", "dense_units", "dropout")
_POOL = 2  # every block halves both sides (rounding down), as Keras' MaxPooling2D() does by default


def suggest_cnn_hyperparameters(trial: optuna.trial.BaseTrial, space: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """Draw one CNN configuration. Every parameter is drawn in every trial: none depends on another."""
    from tuner.model import suggest_parameter

    return {name: suggest_parameter(trial, name, space[name]) for name in (*ARCHITECTURE_PARAMETERS, *TRAINING_PARAMETERS)}


def block_filters(params: Mapping[str, Any]) -> list[int]:
    """Filters of each block: the first block's ``filters``, doubled per block or kept."""
    factor = 2 if params["filter_growth"] == "double" else 1
    return [int(params["filters"]) * factor**index for index in range(int(params["n_blocks"]))]


def check_space_fits_images(space: Mapping[str, ParamSpec], image_shape: tuple[int, int, int] | None, *, source: str, data: str) -> None:
    """Refuse, in one line, data without an image shape or a space whose deepest network pools its images away."""
    if image_shape is None:
        raise ConfigError(
            f"{source}: [model] family = 'cnn' needs images, but {data} holds rows without an image shape"
            " (a table, or an .npz of flat rows); use family = 'mlp', or save images as (N, height, width[, channels])"
        )
    deepest = _largest(space["n_blocks"])
    fitting = _blocks_that_fit(image_shape)
    if deepest > fitting:
        height, width, _ = image_shape
        raise ConfigError(
            f"{source}: space.n_blocks: {deepest} blocks of 2x2 pooling need images of at least {_POOL**deepest}x{_POOL**deepest}"
            f" pixels, but {data} holds {height}x{width} images (at most {fitting} blocks fit); lower n_blocks"
        )


def build_cnn(
    params: Mapping[str, Any], *, input_dim: int, image_shape: tuple[int, int, int] | None, n_classes: int, regularizer: Any
) -> keras.Model:
    """The uncompiled network of ``params``, taking rows of ``input_dim`` pixels (tuner.model compiles it)."""
    import keras

    if image_shape is None or image_shape[0] * image_shape[1] * image_shape[2] != input_dim:
        raise ConfigError(f"a convolutional model needs the data's image shape; got {image_shape} for rows of {input_dim} pixels")
    fitting = _blocks_that_fit(image_shape)
    if params["n_blocks"] > fitting:
        raise ConfigError(
            f"{params['n_blocks']} blocks of 2x2 pooling do not fit {image_shape[0]}x{image_shape[1]} images (at most {fitting})"
        )
    inputs = keras.Input(shape=(input_dim,), name="pixels")
    x = keras.layers.Reshape(image_shape, name="image")(inputs)
    pooling = keras.layers.MaxPooling2D if params["pooling"] == "max" else keras.layers.AveragePooling2D
    for index, filters in enumerate(block_filters(params), start=1):
        # With batch normalisation the convolution's bias is redundant (the normalisation's offset replaces
        # it) and the ReLU comes after the normalisation, as in Ioffe & Szegedy 2015.
        x = keras.layers.Conv2D(
            filters,
            params["kernel_size"],
            padding="same",
            use_bias=not params["batch_norm"],
            activation=None if params["batch_norm"] else "relu",
            kernel_regularizer=regularizer,
            name=f"conv_{index}",
        )(x)
        if params["batch_norm"]:
            x = keras.layers.BatchNormalization(name=f"batch_norm_{index}")(x)
            x = keras.layers.Activation("relu", name=f"relu_{index}")(x)
        x = pooling(_POOL, name=f"pool_{index}")(x)
    x = (keras.layers.Flatten if params["head"] == "flatten" else keras.layers.GlobalAveragePooling2D)(name="features")(x)
    if params["dense_units"] > 0:
        if params["dropout"] > 0:
            x = keras.layers.Dropout(params["dropout"], name="features_dropout")(x)
        x = keras.layers.Dense(params["dense_units"], activation="relu", kernel_regularizer=regularizer, name="dense")(x)
    if params["dropout"] > 0:
        x = keras.layers.Dropout(params["dropout"], name="dropout")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", kernel_regularizer=regularizer, name="classes")(x)
    return keras.Model(inputs, outputs, name="cnn")


def _blocks_that_fit(image_shape: tuple[int, int, int]) -> int:
    """How many 2x2 poolings the smaller side survives with at least one pixel left."""
    side, blocks = min(image_shape[0], image_shape[1]), 0
    while side >= _POOL:
        side, blocks = side // _POOL, blocks + 1
    return blocks


def _largest(spec: ParamSpec) -> int:
    if isinstance(spec, Fixed):
        return int(spec.value)
    if isinstance(spec, Choice):
        return int(max(spec.choices))
    return int(spec.high)
