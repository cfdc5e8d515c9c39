"""``create_compressed_model``: NNCF 2.x's entry point for compression-aware training of torch models.

::

    config = NNCFConfig.from_json("resnet18_int8.json")
    config = register_default_init_args(config, train_loader)
    ctrl, model = create_compressed_model(model, config)
    # ... train ``model`` with your own loop and optimizer, adding ctrl.loss() ...
    ctrl.export_model("resnet18_int8.xml")

Steps: example inputs from ``input_info`` (or from ``dummy_forward_fn``) -> one trace of the
model -> the model is wrapped in place (its class becomes a subclass of both the user's class
and :class:`~nncompress.torch.nncf_network.NNCFNetwork`) -> each section of ``compression``
goes to its builder from the registry (:mod:`nncompress.torch.algorithms`), which inserts and
initializes its modules -> BatchNorm adaptation -> the controller (a composite one for several
algorithms). With ``compression_state`` (from ``ctrl.get_compression_state()``) the saved
modifications are rebuilt and nothing is initialized: load the saved ``state_dict`` next.

The given model object is modified and returned, as NNCF does (deep-copy it first to keep the
original). If anything fails, the model is unwrapped again before the error propagates.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nncompress.config.effective import get_param
from nncompress.config.nncf_config import NNCFConfig
from nncompress.errors import CompressionStateError, ConfigError, TracingError
from nncompress.graph import Edge, Graph, Node, TensorInfo
from nncompress.quantization.spec import TargetPoint, TargetType
from nncompress.torch.algorithms.base import BuildContext, PTCompressionAlgorithmController
from nncompress.torch.algorithms.composite import PTCompositeCompressionAlgorithmController
from nncompress.torch.algorithms.registry import get_algorithm_builder
from nncompress.torch.initialization import (
    BNAdaptationInitArgs,
    is_main_process,
    model_device,
    run_bn_adaptation,
)
from nncompress.torch.nncf_network import NNCFNetwork, unwrap_model, wrap_model
from nncompress.torch.tracing import trace

__all__ = ["create_compressed_model", "create_dummy_inputs", "nncf_model_input"]

logger = logging.getLogger("nncompress")

_DTYPES = {
    "float": torch.float32,
    "float32": torch.float32,
    "float16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "double": torch.float64,
    "float64": torch.float64,
    "long": torch.int64,
    "int64": torch.int64,
    "int": torch.int32,
    "int32": torch.int32,
    "short": torch.int16,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}


def nncf_model_input(tensor: torch.Tensor) -> torch.Tensor:
    """NNCF marks model inputs with this inside ``dummy_forward_fn`` / ``wrap_inputs_fn``; our
    tracer finds every tensor argument by itself, so it returns ``tensor`` unchanged."""
    return tensor


def _filled(shape: list[int], dtype: torch.dtype, filler: str, generator: torch.Generator) -> torch.Tensor:
    if filler == "zeros":
        return torch.zeros(shape, dtype=dtype)
    if filler == "ones":
        return torch.ones(shape, dtype=dtype)
    if dtype.is_floating_point:
        return torch.rand(shape, generator=generator).to(dtype)
    # integer inputs are usually indices (token ids): 0/1 are valid for any embedding
    return torch.randint(0, 2, shape, generator=generator).to(dtype)


def create_dummy_inputs(config: NNCFConfig, device: torch.device | str = "cpu") -> tuple[tuple, dict]:
    """``(args, kwargs)`` made from the config's ``input_info``: entries with a ``keyword`` are
    keyword arguments, the others positional, in order. ``filler`` ``random`` draws from a fixed
    seed (uniform [0, 1) for floats, {0, 1} for integers), so traces are reproducible."""
    generator = torch.Generator().manual_seed(0)
    args, kwargs = [], {}
    for i, info in enumerate(config.input_infos()):
        dtype = _DTYPES.get(info["type"])
        if dtype is None:
            raise ConfigError([(f"input_info[{i}].type", f"unknown tensor type '{info['type']}'")])
        tensor = _filled(info["sample_size"], dtype, info["filler"], generator).to(device)
        if info["keyword"]:
            kwargs[info["keyword"]] = tensor
        else:
            args.append(tensor)
    return tuple(args), kwargs


class _InputsCaptured(BaseException):
    """Stops ``dummy_forward_fn`` at the model call (a BaseException so ``except Exception``
    inside the user's function does not swallow it)."""


def _capture_inputs(model: nn.Module, dummy_forward_fn: Callable[[nn.Module], Any]) -> tuple[tuple, dict]:
    """The arguments of the first call of ``model`` inside ``dummy_forward_fn(model)``; the model's
    forward itself does not run (so nothing in the model changes)."""
    captured: dict[str, Any] = {}
    previous = model.__dict__.get("forward")

    def recorder(*args: Any, **kwargs: Any) -> Any:
        captured["args"], captured["kwargs"] = args, kwargs
        raise _InputsCaptured

    model.__dict__["forward"] = recorder
    try:
        dummy_forward_fn(model)
    except _InputsCaptured:
        pass
    finally:
        if previous is None:
            model.__dict__.pop("forward", None)
        else:
            model.__dict__["forward"] = previous
    if "args" not in captured:
        raise TracingError(
            f"dummy_forward_fn never called the model ({type(model).__name__}): it must run model(...) once"
        )
    return tuple(captured["args"]), dict(captured["kwargs"])


def _example_inputs(
    model: nn.Module,
    config: NNCFConfig,
    dummy_forward_fn: Callable[[nn.Module], Any] | None,
    wrap_inputs_fn: Callable[[tuple, dict], tuple[tuple, dict]] | None,
) -> tuple[tuple, dict]:
    if dummy_forward_fn is not None:
        args, kwargs = _capture_inputs(model, dummy_forward_fn)
    else:
        args, kwargs = create_dummy_inputs(config, model_device(model))
        if not args and not kwargs:
            raise ConfigError(
                [
                    (
                        "input_info",
                        "no inputs are described: give 'sample_size' entries, or pass dummy_forward_fn",
                    )
                ]
            )
    if wrap_inputs_fn is not None:
        wrapped = wrap_inputs_fn(args, kwargs)
        if not (isinstance(wrapped, tuple) and len(wrapped) == 2):
            raise TypeError("wrap_inputs_fn(args, kwargs) must return (args, kwargs)")
        args, kwargs = tuple(wrapped[0]), dict(wrapped[1])
    return args, kwargs


def _check_state(compression_state: Any, names: list[str]) -> dict[str, Any]:
    key = PTCompressionAlgorithmController.BUILDER_STATE
    if not isinstance(compression_state, Mapping) or not isinstance(compression_state.get(key), Mapping):
        raise CompressionStateError(
            f"a compression state is a dict with a '{key}' dict (from ctrl.get_compression_state()), got "
            f"{type(compression_state).__name__}"
            + (f" with keys {sorted(compression_state)}" if isinstance(compression_state, Mapping) else "")
        )
    builder_states = compression_state[key]
    missing = [n for n in names if n not in builder_states]
    extra = [n for n in builder_states if n not in names]
    if missing or extra:
        raise CompressionStateError(
            f"the compression state was saved for algorithms {sorted(builder_states)}, but the config applies "
            f"{names}"
            + (f"; missing: {missing}" if missing else "")
            + (f"; not configured: {extra}" if extra else "")
        )
    return dict(builder_states)


def create_compressed_model(
    model: nn.Module,
    config: NNCFConfig | Mapping[str, Any],
    compression_state: Mapping[str, Any] | None = None,
    dummy_forward_fn: Callable[[nn.Module], Any] | None = None,
    wrap_inputs_fn: Callable[[tuple, dict], tuple[tuple, dict]] | None = None,
    wrap_outputs_fn: Callable[[Any], Any] | None = None,
    dump_graphs: bool = True,
) -> tuple[Any, nn.Module]:
    """Apply the algorithms of ``config["compression"]`` to ``model``; return ``(controller, model)``.

    ``model`` is modified in place and returned: it stays an instance of its class (and of
    ``NNCFNetwork``), trains in any loop with any optimizer (quantizer scales are parameters),
    saves and loads its ``state_dict``, deep-copies, and has a ``model.nncf`` view.

    - Inputs for tracing come from ``config["input_info"]``, or from the first call of the model
      inside ``dummy_forward_fn(model)`` (its arguments are recorded; the call itself is not
      run). ``wrap_inputs_fn(args, kwargs)`` is applied to those inputs once; NNCF needs it to mark
      inputs nested in containers, our tracer finds them itself, so an identity is fine.
      ``wrap_outputs_fn`` is accepted for compatibility and not needed (outputs are traced too).
    - ``compression_state`` (``ctrl.get_compression_state()``) rebuilds the same modifications
      without any initialization; a state that does not fit the model raises
      ``CompressionStateError`` naming what does not match.
    - ``dump_graphs`` writes ``original_graph.dot`` and ``compressed_graph.dot`` (and ``.svg`` if
      Graphviz ``dot`` is installed) into the config's ``log_dir``; nothing is written when the
      config has no ``log_dir``. Only the main process writes in distributed runs.

    A config without ``compression`` gives a wrapped model and a controller with no algorithms.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"create_compressed_model expects a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, NNCFNetwork):
        raise TypeError(f"{type(model).__name__} is already compressed (it is an NNCFNetwork)")
    if not isinstance(config, NNCFConfig):
        config = NNCFConfig.from_dict(config)
    del wrap_outputs_fn  # outputs are found by tracing
    if "bootstrapNAS" in config:
        # NNCF trains such a config through its separate NAS API; building a plain model from it would
        # silently ignore the whole search
        raise ConfigError(
            [("bootstrapNAS", "neural architecture search (bootstrapNAS) is not supported by nncompress")]
        )
    sections = config.algorithm_sections()
    builders = [get_algorithm_builder(s["algorithm"])(config, s) for s in sections]
    builders.sort(key=lambda b: b.priority)  # stable: config order among equal priorities
    names = [b.algorithm_name for b in builders]
    if len(set(names)) != len(names):
        raise ConfigError([("compression", f"an algorithm is configured twice: {names}")])
    if compression_state is not None:
        states = _check_state(compression_state, names)
        for builder in builders:
            builder.load_state(states[builder.algorithm_name])

    args, kwargs = _example_inputs(model, config, dummy_forward_fn, wrap_inputs_fn)
    graph = trace(model, args, keyword_inputs=kwargs or None)
    context = BuildContext(config=config, graph=graph, example_args=args, example_kwargs=kwargs)
    wrap_model(model, graph)
    try:
        for builder in builders:
            builder.apply_to(model, context)
        if compression_state is None:
            _adapt_batchnorm(model, config, max((b.bn_adaptation_samples() for b in builders), default=0))
        controllers = [b.build_controller(model, context) for b in builders]
        if len(controllers) == 1:
            ctrl: Any = controllers[0]
        else:
            ctrl = PTCompositeCompressionAlgorithmController(model, context, controllers)
        if compression_state is not None and compression_state.get(ctrl.CONTROLLER_STATE):
            ctrl.load_state(compression_state[ctrl.CONTROLLER_STATE])
    except BaseException:
        unwrap_model(model, inplace=True)
        raise
    if dump_graphs and is_main_process():
        log_dir = get_param(config, "log_dir")
        if log_dir:
            dump_model_graphs(model, Path(log_dir))
        else:
            logger.debug("dump_graphs: the config has no log_dir; no graph files written")
    return ctrl, model


def _adapt_batchnorm(model: nn.Module, config: NNCFConfig, num_samples: int) -> None:
    if num_samples <= 0:
        return
    if not config.has_extra_struct(BNAdaptationInitArgs):
        logger.info(
            "BatchNorm adaptation skipped: no BNAdaptationInitArgs registered with the config "
            "(register_default_init_args(config, train_loader) registers them)"
        )
        return
    run_bn_adaptation(model, config.get_extra_struct(BNAdaptationInitArgs), num_samples)


# ---------------------------------------------------------------------------------------------
# Graph dumps
# ---------------------------------------------------------------------------------------------


def compressed_graph(graph: Graph, manager: Any) -> tuple[Graph, dict[str, str]]:
    """``graph`` with a node for every hook of ``manager`` (quantizers, masks...) on the tensor it
    modifies, and the colours to highlight them with."""
    result = Graph(graph.name)
    for node in graph.nodes:
        result.add_node(node)
    chains: dict[TargetPoint, list[str]] = {}
    highlight: dict[str, str] = {}
    for i, (target, hook) in enumerate(manager.items()):
        kind = type(hook).__name__
        desc = hook.extra_repr() if isinstance(hook, nn.Module) else ""
        name = f"{kind}#{i} {target}" + (f"\\n{desc}" if desc else "")
        result.add_node(Node(name, kind, kind))
        chains.setdefault(target, []).append(name)
        highlight[name] = "lightblue"

    def through(names: list[str], src: str, port: int, tensor: TensorInfo) -> tuple[str, int]:
        for name in names:
            result.add_edge(Edge(src, port, name, 0, tensor))
            src, port = name, 0
        return src, port

    out_ends: dict[tuple[str, int], tuple[str, int]] = {}
    for e in graph.edges:
        key = (e.src, e.src_port)
        if key not in out_ends:
            out_ends[key] = through(
                chains.get(TargetPoint(TargetType.OUTPUT, e.src, e.src_port), []), *key, e.tensor
            )
        src, port = through(
            chains.get(TargetPoint(TargetType.INPUT, e.dst, e.dst_port), []), *out_ends[key], e.tensor
        )
        result.add_edge(Edge(src, port, e.dst, e.dst_port, e.tensor))
    for target, names in chains.items():
        if target.type is not TargetType.WEIGHT or target.node not in graph:
            continue
        info = graph.node(target.node).weights.get(target.port)
        weight_name = f"weight {info.name if info else target}"
        result.add_node(Node(weight_name, "Constant", "Constant"))
        tensor = TensorInfo(tuple(info.shape), info.dtype) if info else TensorInfo()
        src, port = through(names, weight_name, 0, tensor)
        result.add_edge(Edge(src, port, target.node, target.port, tensor))
    return result, highlight


def dump_model_graphs(model: nn.Module, log_dir: Path) -> list[Path]:
    """Write ``original_graph.dot`` and ``compressed_graph.dot`` (plus ``.svg`` with Graphviz)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    graph = model.nncf.graph
    compressed, highlight = compressed_graph(graph, model.nncf.hook_manager)
    written = []
    for name, text in (
        ("original_graph", graph.to_dot()),
        ("compressed_graph", compressed.to_dot(highlight)),
    ):
        path = log_dir / f"{name}.dot"
        path.write_text(text, encoding="utf-8")
        written.append(path)
        dot = shutil.which("dot")
        if dot is not None:
            svg = path.with_suffix(".svg")
            done = subprocess.run([dot, "-Tsvg", str(path), "-o", str(svg)], capture_output=True, timeout=120)
            if done.returncode == 0:
                written.append(svg)
            else:
                logger.warning(
                    "Graphviz could not render %s: %s", path, done.stderr.decode(errors="replace")[:500]
                )
    return written
