"""The pruning sweep: accuracy of a network with 0, 1, ..., all channels of a layer pruned.

What :class:`~skbackdoor.FinePruner` measures to choose how many channels to prune
(and what its ``pruning_sweep`` reports), without re-running the network once per
channel.

Layout
------
- Graph reading: :func:`~skbackdoor._graph.tensor_consumers` (the one graph walk)
  maps each tensor to the layers that read it;
  :func:`_keeps_channels_apart` says whether a layer commutes with a channel mask;
  :func:`_find_linear_readers` follows such layers to the ``Dense``/``Conv2D``
  layers that read the pruned channels (the "frontier").
- :class:`_Frontier`: one such linear layer, whose pre-activation is updated one
  channel's contribution at a time.
- :class:`_PruningSweep`: ``cache(X)`` runs the network up to the cached tensors
  once and returns a :class:`_SweepCache` (plus the channel sums, for the ranking);
  ``accuracy_curve(cache, y, order, rows=...)`` prunes channel after channel on the
  cached rows it is given.
- :func:`_naive_pruning_curve`: the reference it must match (tests, benchmark).

How it works: layers that act on each channel separately and keep a dead channel
dead (pooling, ReLU, dropout, flatten, ...) are folded into the cached part; when
the layers that read the cached tensor next are linear, pruning one more channel
subtracts that channel's contribution from their pre-activations instead of
recomputing them, and only the layers after those run once per pruning step.
Otherwise (e.g. a ``BatchNormalization`` after the convolution) every step runs
everything after the cached tensor on the masked tensor. In both cases the masked
quantity is the convolution's output, exactly what
:func:`~skbackdoor.models.prune_channels` zeroes. When that linear layer is the
classifier's ``Dense`` output (a small CNN's last convolution), nothing runs after it:
all the steps are a few eager operations on every channel at once (when the outputs of
all steps are no larger than the cached inputs), with no compiled loop to trace (tracing
it cost about as much as running it, cold, as every ``fit`` runs it).
"""

import numpy as np

from . import _runtime  # noqa: F401  (TensorFlow's log level, before Keras)

import keras

from ._base import progress_bar
from ._graph import IDENTITY_AT_INFERENCE, tensor_consumers
from .models import (
    DEFAULT_BATCH_SIZE,
    copy_model,
    forward_batches,
    iter_batches,
    prune_channels,
    resolve_conv_layer,
    split_at,
)

__all__ = ["_PruningSweep", "_SweepCache", "_naive_pruning_curve"]


_SPATIAL = (
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.ZeroPadding2D,
    keras.layers.Cropping2D,
    keras.layers.UpSampling2D,
)
_ELEMENTWISE = (
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.PReLU,
)


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _keeps_channels_apart(layer, tensor, n_channels):
    """Whether ``layer(x * mask) == layer(x) * mask`` for any channel mask.

    True for layers that treat each channel on its own and map a zero channel to zero,
    when ``tensor`` still has the channels on its last axis (of length a multiple of
    ``n_channels``, channel ``i % n_channels`` at index ``i``).
    """
    rank, last = len(tensor.shape), tensor.shape[-1]
    if isinstance(layer, IDENTITY_AT_INFERENCE):
        return True
    if isinstance(layer, keras.layers.Flatten):
        return rank == 2 or (_channels_last(layer) and last == n_channels)
    if isinstance(layer, _SPATIAL):
        return rank == 4 and last == n_channels and _channels_last(layer)
    if isinstance(layer, _ELEMENTWISE):
        if isinstance(layer, keras.layers.Activation) and getattr(
            layer.activation, "__name__", ""
        ) in ("softmax", "log_softmax"):
            return False
        probe = np.zeros((1,) + tuple(1 if s is None else s for s in tensor.shape[1:]), "float32")
        return bool(np.all(np.asarray(layer(probe)) == 0))
    return False


class _Frontier:
    """A linear layer reading a cached tensor, whose pre-activation is updated per channel.

    ``source`` is the index of the cached tensor it reads; channel ``c`` of that tensor
    sits at the indices ``i`` of its last axis with ``i % n_channels == c``.
    """

    def __init__(self, layer, source, source_shape, n_channels):
        self.layer = layer
        self.source = source
        self.n_channels = n_channels
        self.is_conv = isinstance(layer, keras.layers.Conv2D)
        self.output_shape = tuple(int(s) for s in layer.compute_output_shape((None,) + source_shape)[1:])
        kernel = np.asarray(layer.kernel, dtype=np.float32)
        if self.is_conv:
            self.kernel = kernel
        else:
            self.repeats = source_shape[-1] // n_channels
            # Rows i of the kernel belong to channel i % n_channels: (C, repeats, units).
            self.kernel = kernel
            self.channel_kernels = np.ascontiguousarray(
                kernel.reshape(self.repeats, n_channels, -1).transpose(1, 0, 2)
            )

    def channel_blocks(self, cached):
        """Dense readers: the cached rows as ``(C, rows * positions, repeats)`` blocks."""
        blocks = cached.reshape(-1, self.repeats, self.n_channels)
        return np.ascontiguousarray(blocks.transpose(2, 0, 1))

    def contribution(self, source, blocks, channel):
        """Pre-activation part (no bias) of one channel, in float64."""
        import tensorflow as tf

        if self.is_conv:
            layer = self.layer
            out = tf.nn.conv2d(
                tf.gather(source, [channel], axis=-1),
                tf.gather(self.kernel, [channel], axis=2),
                (1,) + tuple(layer.strides) + (1,),
                layer.padding.upper(),
                dilations=tuple(layer.dilation_rate),
            )
        else:
            out = tf.matmul(tf.gather(blocks, channel), tf.gather(self.channel_kernels, channel))
            out = tf.reshape(out, (-1,) + self.output_shape)
        return tf.cast(out, tf.float64)


def _is_linear_reader(layer, tensor, n_channels):
    if getattr(layer, "quantization_mode", None) is not None or getattr(layer, "lora_enabled", False):
        return False
    if type(layer) is keras.layers.Dense:
        return tensor.shape[-1] % n_channels == 0
    if type(layer) is keras.layers.Conv2D:
        strides, dilation = tuple(layer.strides), tuple(layer.dilation_rate)
        return (
            len(tensor.shape) == 4
            and tensor.shape[-1] == n_channels
            and layer.groups == 1
            and _channels_last(layer)
            and layer.padding in ("valid", "same")
            and (strides == (1, 1) or dilation == (1, 1))
        )
    return False


def _find_linear_readers(tensor, consumers, output_ids, n_channels, found):
    """Follow channel-wise layers from ``tensor`` to the linear layers that read them.

    Appends ``(input tensor, node)`` pairs to ``found``; returns False when some path
    reaches anything else (the model's output, a merge, a non-linear layer).
    """
    readers = consumers.get(id(tensor), [])
    if id(tensor) in output_ids or not readers:
        return False
    for node in readers:
        if len(node.input_tensors) != 1:
            return False
        if _is_linear_reader(node.operation, tensor, n_channels):
            found.append((tensor, node))
        elif not (
            _keeps_channels_apart(node.operation, tensor, n_channels)
            and _find_linear_readers(node.outputs[0], consumers, output_ids, n_channels, found)
        ):
            return False
    return True


class _SweepCache:
    """What a :class:`_PruningSweep` keeps of a set of images.

    ``tensors``: the cached tensors, one row per image; ``channel_sums``: each
    channel's sum over the images and positions of the pruned convolution's output;
    ``channel_means``: the same per image and position (the activation ranking).
    """

    def __init__(self, tensors, channel_sums, n_positions):
        self.tensors = tensors
        self.channel_sums = channel_sums
        self.n_images = len(tensors[0])
        self.channel_means = (channel_sums / n_positions).astype(np.float64)


class _PruningSweep:
    """Accuracy of ``model`` with 0, 1, ..., all channels of ``layer`` pruned.

    ``cache`` runs the network up to the cached tensors once; ``accuracy_curve`` then
    prunes channel after channel (see the module docstring), several pruning steps per
    compiled call. Building it does not change ``model``.
    """

    def __init__(self, model, layer, *, incremental=True):
        conv = resolve_conv_layer(model, layer)
        self.n_channels = int(conv.filters)
        self.n_classes = int(model.outputs[0].shape[-1])
        head, _ = split_at(model, conv.name)
        conv_output = head.outputs[0]
        self.positions_per_image = int(np.prod(conv_output.shape[1:-1]))
        consumers = tensor_consumers(model)
        output_ids = {id(t) for t in model.outputs}

        self.frontier, rest = None, None
        self._identity_rest = False
        found = []
        if incremental and _find_linear_readers(
            conv_output, consumers, output_ids, self.n_channels, found
        ):
            sources = list({id(t): t for t, _ in found}.values())
            source_index = {id(t): i for i, t in enumerate(sources)}
            frontier_outputs = [node.outputs[0] for _, node in found]
            if len(found) == 1 and id(frontier_outputs[0]) in output_ids:
                # The linear layer is the classifier's last layer: nothing comes after it.
                rest, self._identity_rest = frontier_outputs[0], True
            else:
                try:
                    rest = keras.Model(frontier_outputs, model.outputs)
                except Exception:  # another path leads into the rest of the graph
                    rest = None
            if rest is not None:
                self.frontier = [
                    _Frontier(node.operation, source_index[id(t)], tuple(t.shape[1:]), self.n_channels)
                    for t, node in found
                ]
        if rest is None:
            # Run everything after the longest chain of channel-wise layers at each step.
            cached = conv_output
            while id(cached) not in output_ids:
                readers = consumers.get(id(cached), [])
                if len(readers) != 1 or not _keeps_channels_apart(
                    readers[0].operation, cached, self.n_channels
                ):
                    break
                cached = readers[0].outputs[0]
            sources = [cached]
            rest = keras.Model(cached, model.outputs)
        self.source_shapes = [tuple(t.shape[1:]) for t in sources]
        self._rest = rest
        self.rest_input_shapes = (
            [tuple(rest.shape[1:])] if self._identity_rest else [tuple(t.shape[1:]) for t in rest.inputs]
        )
        self._head = keras.Model(model.inputs, [conv_output] + sources)
        self._functions = {}

    # ---- running

    def cache(self, X, *, batch_size=DEFAULT_BATCH_SIZE, progress=None):
        """Run the network up to the cached tensors once.

        Returns the :class:`_SweepCache` of ``X`` (to give to :meth:`accuracy_curve`)
        and the sum of each channel of the convolution's output over all images and
        positions (also its ``channel_sums``).
        """
        run = self._compiled("head", self._head_function)
        sums = np.zeros(self.n_channels, dtype=np.float64)
        chunks = []
        for rows in iter_batches(len(X), batch_size):
            batch_sums, cached = run(np.asarray(X[rows], dtype=np.float32))
            sums += np.asarray(batch_sums, dtype=np.float64)
            chunks.append([np.asarray(part) for part in cached])
            if progress is not None:
                progress(rows.stop - rows.start)
        tensors = [np.concatenate(parts) for parts in zip(*chunks)]
        cache = _SweepCache(tensors, sums, len(X) * self.positions_per_image)
        return cache, sums

    def accuracy_curve(self, cache, y, order, *, rows=None, verbose=0, floats_per_call=1 << 22):
        """Accuracy against ``y`` with ``order[:k]`` pruned, for ``k = 0 .. n_channels``.

        ``y`` holds one label per cached image; ``rows`` (default: all) selects the
        images, and their labels, that the curve is measured on. One compiled call
        runs all the pruning steps for a block of rows; blocks hold about
        ``floats_per_call`` values at the rest's inputs and outputs.
        """
        import tensorflow as tf

        y = np.asarray(y, dtype=np.int64)
        if len(y) != cache.n_images:
            raise ValueError(f"y has {len(y)} labels but the cache holds {cache.n_images} images.")
        rows = np.arange(len(y)) if rows is None else np.asarray(rows, dtype=np.int64)
        n, n_steps = len(rows), self.n_channels + 1
        if n == 0:
            raise ValueError("The pruning sweep needs at least one image.")
        order = np.asarray(order, dtype=np.int32)
        width = self.n_classes + sum(int(np.prod(shape)) for shape in self.rest_input_shapes)
        # A Dense output layer reading the channels: all steps at once, while their outputs
        # are not larger than the cached inputs (not for many classes and channels).
        source_size = sum(int(np.prod(shape)) for shape in self.source_shapes)
        dense_output = (
            self._identity_rest and not self.frontier[0].is_conv and n_steps * self.n_classes <= source_size
        )
        if dense_output:  # the inputs' channel blocks, float64 sums and outputs of every step
            width = source_size + 4 * n_steps * self.n_classes
        rows_per_block = int(min(n, max(1, floats_per_call // width)))
        if dense_output:
            sweep = None
        elif self.frontier is None:
            sweep = self._compiled("masked", self._masked_sweep_function)
        else:
            sweep = self._compiled("incremental", self._incremental_sweep_function)
        # The steps run from every channel pruned back to none, putting one channel
        # back at a time (the last entry is never put back): the pre-activations are
        # then sums over the kept channels, as in the pruned network, and exactly zero
        # when all are pruned.
        channels = tf.constant(np.concatenate([order[::-1], order[:1]]))
        correct = np.zeros(n_steps, dtype=np.int64)
        with progress_bar(n, verbose=verbose, desc=f"pruning sweep ({n_steps} steps)") as update:
            for block in iter_batches(n, rows_per_block):
                block_rows = rows[block]
                parts = [tensor[block_rows] for tensor in cache.tensors]
                if dense_output:
                    correct += self._dense_output_counts(parts[0], channels, y[block_rows])
                    if update is not None:
                        update(len(block_rows))
                    continue
                sources = [tf.constant(part) for part in parts]
                extra = []
                if self.frontier is not None:
                    extra = [
                        [
                            tf.zeros((0, 0, 0), tf.float32)
                            if reader.is_conv
                            else tf.constant(reader.channel_blocks(parts[reader.source]))
                            for reader in self.frontier
                        ]
                    ]
                correct += np.asarray(sweep(sources, *extra, channels, tf.constant(y[block_rows])))
                if update is not None:
                    update(len(block_rows))
        return correct[::-1] / n

    def _dense_output_counts(self, source, channels, labels):
        """Correct predictions per step when the one frontier layer is the ``Dense`` output.

        The steps of the compiled loop (pre-activations summed in float64 over the channels
        put back, in that order; bias and activation in float32), for all steps at once.
        """
        import tensorflow as tf

        (reader,) = self.frontier
        blocks = tf.transpose(tf.reshape(source, (len(source), reader.repeats, self.n_channels)), (2, 0, 1))
        contributions = tf.cast(tf.matmul(blocks, reader.channel_kernels), tf.float64)  # (C, rows, units)
        put_back = tf.math.cumsum(tf.gather(contributions, channels[:-1]), axis=0)  # the last is never put back
        pre_activations = tf.concat([tf.zeros_like(put_back[:1]), put_back], axis=0)  # (steps, rows, units)
        predicted = tf.argmax(_activate(reader.layer, tf.cast(pre_activations, tf.float32)), axis=-1)
        return np.asarray(tf.reduce_sum(tf.cast(predicted == labels, tf.int64), axis=1))

    def _compiled(self, name, build):
        """Build each compiled function once per sweep, so repeated calls skip tracing."""
        if name not in self._functions:
            self._functions[name] = build()
        return self._functions[name]

    def _head_function(self):
        import tensorflow as tf

        head = self._head
        spec = tf.TensorSpec((None,) + tuple(head.inputs[0].shape[1:]), tf.float32)

        @_quiet_tf_function(input_signature=[spec])
        def run(batch):
            conv_output, *cached = head(batch, training=False)
            return tf.reduce_sum(conv_output, axis=[0, 1, 2]), cached

        return run

    def _source_specs(self):
        import tensorflow as tf

        return [tf.TensorSpec((None,) + shape, tf.float32) for shape in self.source_shapes]

    def _active_channels(self, sources):
        """``(rows, C)``: whether a channel is non-zero anywhere in a row's cached tensors.

        Putting back a channel that is zero in a row leaves that row's inputs to the
        rest of the network unchanged, so its prediction is not recomputed.
        """
        import tensorflow as tf

        active = None
        for source in sources:
            blocks = tf.reshape(source, [tf.shape(source)[0], -1, self.n_channels])
            nonzero = tf.reduce_any(blocks != 0, axis=1)
            active = nonzero if active is None else active | nonzero
        return active

    def _sweep_loop(self, sources, channels, labels, initial_state, step_inputs, next_state):
        """Correct predictions per step, re-running the rest only on the rows that change.

        ``step_inputs(state, rows)`` gives the rest's inputs for those rows at a step;
        ``next_state(state, channel)`` puts a channel back.
        """
        import tensorflow as tf

        n_steps = tf.shape(channels)[0]
        n_rows = tf.shape(labels)[0]
        active = self._active_channels(sources)

        def body(step, counts, predicted, *state):
            changed = tf.cond(
                step == 0,
                lambda: tf.ones([n_rows], tf.bool),
                lambda: tf.gather(active, channels[tf.maximum(step - 1, 0)], axis=1),
            )
            rows = tf.where(changed)
            inputs = step_inputs(state, rows[:, 0])
            if self._identity_rest:
                (outputs,) = inputs
            else:
                outputs = self._rest(inputs if len(inputs) > 1 else inputs[0], training=False)
            predicted = tf.tensor_scatter_nd_update(predicted, rows, tf.argmax(outputs, axis=-1))
            counts = counts.write(step, tf.reduce_sum(tf.cast(predicted == labels, tf.int64)))
            return (step + 1, counts, predicted, *next_state(state, channels[step]))

        _, counts, *_ = tf.while_loop(
            lambda step, *_: step < n_steps,
            body,
            (
                0,
                tf.TensorArray(tf.int64, size=n_steps),
                tf.zeros([n_rows], tf.int64),
                *initial_state,
            ),
        )
        return counts.stack()

    def _masked_sweep_function(self):
        import tensorflow as tf

        (shape,) = self.source_shapes
        repeats = shape[-1] // self.n_channels

        @_quiet_tf_function(
            input_signature=[
                self._source_specs(),
                tf.TensorSpec((None,), tf.int32),
                tf.TensorSpec((None,), tf.int64),
            ]
        )
        def sweep(sources, channels, labels):
            (source,) = sources

            def step_inputs(state, rows):
                (keep,) = state
                return [tf.gather(source, rows) * tf.tile(keep, [repeats])]

            def next_state(state, channel):
                (keep,) = state
                return [tf.tensor_scatter_nd_update(keep, [[channel]], [1.0])]

            start = [tf.zeros((self.n_channels,), tf.float32)]
            return self._sweep_loop(sources, channels, labels, start, step_inputs, next_state)

        return sweep

    def _incremental_sweep_function(self):
        import tensorflow as tf

        frontier = self.frontier
        block_specs = [
            tf.TensorSpec((0, 0, 0) if part.is_conv else (self.n_channels, None, part.repeats), tf.float32)
            for part in frontier
        ]

        @_quiet_tf_function(
            input_signature=[
                self._source_specs(),
                block_specs,
                tf.TensorSpec((None,), tf.int32),
                tf.TensorSpec((None,), tf.int64),
            ]
        )
        def sweep(sources, blocks, channels, labels):
            n_rows = tf.shape(labels)[0]

            def step_inputs(state, rows):
                return [
                    _activate(part.layer, tf.cast(tf.gather(pre_activation, rows), tf.float32))
                    for part, pre_activation in zip(frontier, state)
                ]

            def next_state(state, channel):
                return [
                    pre_activation + part.contribution(sources[part.source], block, channel)
                    for part, block, pre_activation in zip(frontier, blocks, state)
                ]

            start = [
                tf.zeros(tf.concat([[n_rows], part.output_shape], 0), tf.float64) for part in frontier
            ]
            return self._sweep_loop(sources, channels, labels, start, step_inputs, next_state)

        return sweep


def _quiet_tf_function(input_signature):
    """``tf.function`` without autograph, and without TensorFlow's retracing warning.

    Every fit builds its own sweep for its own copy of the model, so tracing the same
    Python code again is expected, not the mistake the warning is about. Plain
    ``tf.while_loop`` without autograph keeps that tracing cheap.
    """
    import tensorflow as tf

    def decorate(function):
        compiled = tf.function(function, input_signature=input_signature, autograph=False)
        if hasattr(compiled, "_omit_frequent_tracing_warning"):
            compiled._omit_frequent_tracing_warning = True
        return compiled

    return decorate


def _activate(layer, pre_activation):
    if layer.use_bias:
        pre_activation = pre_activation + layer.bias
    return layer.activation(pre_activation)


def _naive_pruning_curve(model, layer, X, y, order, *, batch_size=DEFAULT_BATCH_SIZE):
    """Reference sweep: prune one more channel of a copy and re-run the whole network.

    What :class:`_PruningSweep` replaces; kept for tests and the benchmark.
    """
    pruned = copy_model(model)
    y = np.asarray(y)
    accuracy = [np.mean(np.argmax(forward_batches(pruned, X, batch_size=batch_size), axis=1) == y)]
    for channel in order:
        prune_channels(pruned, layer, [channel])
        accuracy.append(np.mean(np.argmax(forward_batches(pruned, X, batch_size=batch_size), axis=1) == y))
    return np.asarray(accuracy)
