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
    "conv_layer_names",
    "layer_output_in_graph",
    "model_input_shape",
    "model_n_classes",
    "resolve_conv_layer",
    "split_at",
    "tensor_consumers",
    "walk_graph",
    "walk_layers",
]


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
        operation, node_index, _ = tensor._keras_history
        node = operation._inbound_nodes[node_index]
        yield tensor, operation, node
        stack.extend(node.input_tensors)


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
    try:
        rest = keras.Model(cut, model.outputs, name=f"{model.name}_tail")
    except Exception as exc:
        raise ValueError(
            f"The model's output depends on more than the output of {name!r} (a skip "
            f"connection around it?); cannot split there: {exc}"
        ) from exc
    return head, rest
