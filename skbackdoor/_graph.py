"""Reading and cutting a model's layer graph: the one place that walks Keras' nodes.

Keras 3 keeps a functional model's graph in private attributes (``_keras_history`` on
each symbolic tensor, ``_inbound_nodes`` on each layer); :func:`walk_graph` is the only
code of skbackdoor that reads them. Everything else here is built on it: finding a
layer's output inside one particular graph, who consumes which tensor, cutting a model
in two (:func:`split_at`) and choosing the convolution a pruning defense works on.
"""

from . import _runtime  # noqa: F401  (TensorFlow's log level, before Keras)

import keras  # noqa: E402

__all__ = [
    "IDENTITY_AT_INFERENCE",
    "conv_layer_names",
    "default_prune_layer",
    "layer_output_in_graph",
    "model_input_shape",
    "model_n_classes",
    "producer",
    "prunable_conv_layers",
    "resolve_conv_layer",
    "split_at",
    "tensor_consumers",
    "walk_graph",
    "walk_layers",
]


# Layers that pass their input through unchanged at inference (dropout, noise, ...).
IDENTITY_AT_INFERENCE = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
    keras.layers.Identity,
)


# --------------------------------------------------------------------------- walking


def walk_graph(model):
    """Yield ``(tensor, operation, node)`` for every tensor of ``model``'s own graph.

    The walk starts at the model's outputs and goes back to its inputs; each symbolic
    tensor is visited once, with the operation (layer) and the node that produced it.
    A layer object can belong to several graphs (``load_badnet(input_scale=...)``
    re-threads the user's layers into a new model), so this follows the tensors of
    ``model`` itself rather than ``layer.output``.
    """
    seen = set()
    stack = list(model.outputs)
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        operation, node, _ = producer(tensor)
        yield tensor, operation, node
        stack.extend(node.input_tensors)


def producer(tensor):
    """``(operation, node, output_index)`` that produced a symbolic tensor."""
    operation, node_index, output_index = tensor._keras_history
    return operation, operation._inbound_nodes[node_index], output_index


def tensor_consumers(model):
    """Map ``id(tensor)`` to the nodes of ``model``'s graph that read that tensor."""
    consumers = {}
    for _, _, node in walk_graph(model):
        for source in node.input_tensors:
            users = consumers.setdefault(id(source), [])
            if all(user is not node for user in users):
                users.append(node)
    return consumers


def layer_output_in_graph(model, layer):
    """The symbolic output of ``layer`` inside ``model``'s own graph.

    Raises
    ------
    ValueError
        If the layer is used at several places of the graph (or nowhere).
    """
    found = {id(tensor): tensor for tensor, operation, _ in walk_graph(model) if operation is layer}
    if len(found) != 1:
        raise ValueError(
            f"Layer {layer.name!r} is used at {len(found)} places in the model's graph; "
            "cannot cut there."
        )
    return next(iter(found.values()))


def walk_layers(model):
    """Yield every layer of ``model``, descending into nested models (depth first)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from walk_layers(layer)


# --------------------------------------------------------------------------- inspecting


def model_input_shape(model):
    """Return the ``(height, width, channels)`` a single-input image model expects."""
    shape = model.inputs[0].shape if model.inputs else model.input_shape
    shape = tuple(shape)
    if len(shape) != 4:
        raise ValueError(
            f"Expected an image model with inputs of shape (batch, height, width, channels); "
            f"this model takes {shape}."
        )
    return tuple(None if s is None else int(s) for s in shape[1:])


def model_n_classes(model):
    """Return the number of classes of a classifier (the size of its last output axis)."""
    return int(model.outputs[0].shape[-1])


def conv_layer_names(model):
    """Names of the model's ``Conv2D`` layers, in graph order."""
    return [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def resolve_conv_layer(model, layer=None):
    """Return the ``Conv2D`` layer called ``layer`` (default: the last one).

    Raises a ``ValueError`` listing the valid names when the name is unknown or the
    layer is not a 2-D convolution.
    """
    names = conv_layer_names(model)
    if not names:
        raise ValueError("The model has no Conv2D layer to work on.")
    if layer is None:
        return model.get_layer(names[-1])
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a layer name (str) or None, got {type(layer).__name__}.")
    all_names = [each.name for each in model.layers]
    if layer not in all_names:
        raise ValueError(f"Unknown layer {layer!r}; the model's Conv2D layers are {names}.")
    if layer not in names:
        raise ValueError(
            f"Layer {layer!r} is a {type(model.get_layer(layer)).__name__}, not a Conv2D; "
            f"the model's Conv2D layers are {names}."
        )
    return model.get_layer(layer)


# --------------------------------------------------------------------------- cutting


def split_at(model, layer, *, tail=True):
    """Cut ``model`` after ``layer`` into ``head`` (inputs -> layer output) and ``tail``.

    ``tail`` maps the layer's output to the model's output, through every branch that
    consumes it (e.g. CSAW ``conv_3`` feeds both ``fc_1`` and ``conv_4``), so
    ``tail(head(x)) == model(x)``. Both share the model's layers and weights. A sweep that
    changes only the layer's output runs ``head`` once and ``tail`` per step.

    Raises
    ------
    ValueError
        If the layer name is unknown, or the layer is used at several places of the
        graph, or the rest of the model depends on more than the layer's output.
    """
    name = layer if isinstance(layer, str) else layer.name
    try:
        target = model.get_layer(name)
    except ValueError:
        raise ValueError(
            f"Unknown layer {name!r}; the model's layers are {[each.name for each in model.layers]}."
        ) from None
    cut = layer_output_in_graph(model, target)
    head = keras.Model(model.inputs, cut, name=f"{model.name}_head")
    if not tail:
        return head, None
    rest = _tail_after(model, cut)
    if rest is None:
        raise ValueError(
            f"The model's output depends on more than the output of {name!r} (a skip "
            f"connection around it?); cannot split there. Convolutions it can be split "
            f"after: {prunable_conv_layers(model)}."
        )
    return head, rest


def _tail_after(model, cut):
    """The model from ``cut`` to the outputs, or None if the outputs need more than ``cut``."""
    try:
        return keras.Model(cut, model.outputs, name=f"{model.name}_tail")
    except ValueError:
        return None


# --------------------------------------------------------------------------- choosing


def _why_not_prunable(model, layer):
    """Why Fine-Pruning cannot work on the ``Conv2D`` ``layer`` (None if it can)."""
    try:
        cut = layer_output_in_graph(model, layer)
    except ValueError as exc:
        return str(exc)
    rest = _tail_after(model, cut)
    if rest is None:
        return "the rest of the network also reads tensors from before it (a skip connection)"
    if not any(weight.name.endswith("kernel") for each in walk_layers(rest) for weight in each.weights):
        return (
            f"its {layer.filters} channels are the class scores (no Dense or convolution "
            "comes after it)"
        )
    return None


def prunable_conv_layers(model):
    """Names of the ``Conv2D`` layers a pruning defense can work on, in graph order.

    A convolution qualifies when the model can be split right after it (the rest of
    the network depends on its output only, see :func:`split_at`) and when its channels
    are not the class scores: some layer with a kernel (``Dense``, a convolution)
    still comes after it, so pruning a channel removes a feature, not a class.
    """
    return [
        name for name in conv_layer_names(model) if _why_not_prunable(model, model.get_layer(name)) is None
    ]


def default_prune_layer(model):
    """Name of the convolution pruned by default: the last one of :func:`prunable_conv_layers`.

    On the CSAW DeepID net this is ``conv_3`` (``conv_4`` feeds ``fc_2`` beside a skip
    from ``pool_3``, so the model cannot be cut after it); on a network-in-network net
    whose last convolution is a 1x1 class-score layer, the convolution before it.

    Raises
    ------
    ValueError
        If the model has no ``Conv2D`` layer, or none qualifies; the message says why
        for each convolution.

    Examples
    --------
    >>> from skbackdoor.models import csaw_deepid, default_prune_layer
    >>> default_prune_layer(csaw_deepid(n_classes=10))
    'conv_3'
    """
    names = conv_layer_names(model)
    if not names:
        nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
        hint = f" (its nested models {nested} are flattened by load_badnet)" if nested else ""
        raise ValueError(f"The model has no Conv2D layer to prune{hint}.")
    reasons = {name: _why_not_prunable(model, model.get_layer(name)) for name in names}
    usable = [name for name in names if reasons[name] is None]
    if not usable:
        why = "; ".join(f"{name}: {reason}" for name, reason in reasons.items())
        raise ValueError(f"No Conv2D layer of the model can be pruned ({why}).")
    return usable[-1]
