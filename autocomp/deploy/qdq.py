"""QDQ nodes written into an exported floating-point graph, from each quantized layer's `OnnxForm`.

For a layer ``name`` (its weight is the initializer ``name.weight``, read by a Conv, a Gemm, or a
Transpose before a MatMul):
* weights: the initializer becomes int8 integers and a DequantizeLinear with one scale per output
  channel (axis 0); a BatchNormalization that alone reads the Conv's output is folded into those
  scales and the bias first (``scale x gamma / sqrt(var + eps)``, exact: BatchNorm scales whole output
  channels), so ONNX Runtime sees DequantizeLinear -> Conv -> (Relu ->) QuantizeLinear and runs an
  int8 convolution;
* inputs: QuantizeLinear -> DequantizeLinear on the layer's data input, with the learned step as the
  scale and zero point 0 (uint8 for unsigned inputs, int8 for signed ones); ranges narrower than
  8 bits are clipped first, so the rounding is exactly the fake-quant module's.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from autocomp.deploy.onnx_export import OnnxForm
from autocomp.errors import ConfigError


def insert_qdq(model_bytes: bytes, forms: dict[str, OnnxForm]) -> bytes:
    """The ONNX model ``model_bytes`` with every layer of ``forms`` in QDQ form."""
    model = onnx.load_from_string(model_bytes)
    graph = _Graph(model.graph)
    for name, form in forms.items():
        consumer, data_index = graph.layer_node(name)
        if form.weight_integers is not None and form.weight_scales is not None:
            integers = form.weight_integers.numpy().astype(np.int8)
            scales = form.weight_scales.numpy().astype(np.float32)
            if consumer.op_type == "Conv":
                integers, scales = graph.fold_batchnorm(consumer, integers, scales)
            graph.dequantized_weight(consumer, f"{name}.weight", integers, scales)
        if form.input_step is not None:
            graph.quantized_input(consumer, data_index, name, form.input_step, (form.input_low, form.input_high))
    return graph.finish(model).SerializeToString()


class _Graph:
    """An ONNX graph being edited: new nodes go just before the node that reads them, so the order stays topological."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.nodes = list(graph.node)  # held, so that each node keeps its id
        self.initializers = {init.name: init for init in graph.initializer}
        self.before: dict[int, list[onnx.NodeProto]] = {}
        self.removed: set[int] = set()

    def readers(self, tensor: str) -> list[onnx.NodeProto]:
        return [node for node in self.nodes if tensor in node.input and id(node) not in self.removed]

    def layer_node(self, name: str) -> tuple[onnx.NodeProto, int]:
        """The node computing layer ``name`` from its weight, and the index of its data input there."""
        for node in self.readers(f"{name}.weight"):
            if node.op_type in ("Conv", "Gemm") and node.input[1] == f"{name}.weight":
                return node, 0
            if node.op_type == "Transpose":
                matmuls = [n for n in self.readers(node.output[0]) if n.op_type == "MatMul"]
                if len(matmuls) == 1:
                    return matmuls[0], list(matmuls[0].input).index(node.output[0]) ^ 1
        raise ConfigError(
            f"layer {name!r} is not a Conv, Gemm or MatMul of its weight in the ONNX graph; it has no QDQ form."
        )

    def constant(self, tensor: str) -> np.ndarray:
        """The value of an initializer, or of an Identity of one."""
        if tensor in self.initializers:
            return numpy_helper.to_array(self.initializers[tensor])
        producer = next(node for node in self.nodes if tensor in node.output)
        return self.constant(producer.input[0])

    def add_initializer(self, array: np.ndarray, name: str) -> str:
        self.initializers[name] = numpy_helper.from_array(array, name)
        return name

    def insert(self, reader: onnx.NodeProto, node: onnx.NodeProto) -> None:
        self.before.setdefault(id(reader), []).append(node)

    def fold_batchnorm(
        self, conv: onnx.NodeProto, integers: np.ndarray, scales: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fold a BatchNormalization that alone reads ``conv``'s output into its bias and its weight's per-channel
        ``scales`` (returned with the weight's ``integers``: int8, whose signs absorb negative factors, or float)."""
        readers = self.readers(conv.output[0])
        if len(readers) != 1 or readers[0].op_type != "BatchNormalization" or conv.output[0] in self._outputs():
            return integers, scales
        norm = readers[0]
        epsilon = next((a.f for a in norm.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (self.constant(t).astype(np.float64) for t in norm.input[1:5])
        factor = gamma / np.sqrt(var + epsilon)
        bias = self.constant(conv.input[2]).astype(np.float64) if len(conv.input) > 2 else np.zeros_like(mean)
        name = conv.input[1]
        folded_bias = self.add_initializer(((bias - mean) * factor + beta).astype(np.float32), f"{name}.folded_bias")
        if len(conv.input) > 2:
            conv.input[2] = folded_bias
        else:
            conv.input.append(folded_bias)
        conv.output[0] = norm.output[0]
        self.removed.add(id(norm))
        if integers.dtype != np.int8:  # floating-point weights: the factor goes in whole
            return integers, (scales * factor).astype(np.float32)
        sign = np.where(factor < 0, -1, 1).astype(np.int8)
        shape = (-1,) + (1,) * (integers.ndim - 1)
        return integers * sign.reshape(shape), (scales * np.abs(factor)).astype(np.float32)

    def dequantized_weight(self, reader: onnx.NodeProto, weight: str, integers: np.ndarray, scales: np.ndarray) -> None:
        """Replace the float initializer ``weight`` by int8 integers and a per-output-channel DequantizeLinear."""
        self.initializers.pop(weight, None)
        inputs = [
            self.add_initializer(integers, f"{weight}.int8"),
            self.add_initializer(scales, f"{weight}.scale"),
            self.add_initializer(np.zeros(scales.shape, np.int8), f"{weight}.zero_point"),
        ]
        self.insert(
            reader, helper.make_node("DequantizeLinear", inputs, [weight], f"{weight}/DequantizeLinear", axis=0)
        )

    def quantized_input(
        self, reader: onnx.NodeProto, index: int, name: str, step: float, integers: tuple[int, int]
    ) -> None:
        """QuantizeLinear -> DequantizeLinear with scale ``step`` on ``reader``'s input ``index``, rounded to the
        ``integers`` (low, high) range (clipped first when it is narrower than 8 bits)."""
        signed = integers[0] < 0
        tensor, prefix = reader.input[index], f"{name}.input"
        if integers not in ((-128, 127), (0, 255)):
            low = self.add_initializer(np.array(integers[0] * step, np.float32), f"{prefix}.clip_low")
            high = self.add_initializer(np.array(integers[1] * step, np.float32), f"{prefix}.clip_high")
            self.insert(reader, helper.make_node("Clip", [tensor, low, high], [f"{prefix}.clipped"], f"{prefix}/Clip"))
            tensor = f"{prefix}.clipped"
        scale = self.add_initializer(np.array(step, np.float32), f"{prefix}.scale")
        zero = self.add_initializer(np.array(0, np.int8 if signed else np.uint8), f"{prefix}.zero_point")
        quantized, dequantized = f"{prefix}.quantized", f"{prefix}.dequantized"
        self.insert(reader, helper.make_node("QuantizeLinear", [tensor, scale, zero], [quantized], f"{prefix}/Q"))
        self.insert(
            reader, helper.make_node("DequantizeLinear", [quantized, scale, zero], [dequantized], f"{prefix}/DQ")
        )
        reader.input[index] = dequantized

    def _outputs(self) -> set[str]:
        return {output.name for output in self.graph.output}

    def finish(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """The edited model: nodes in order with the inserted ones, initializers replaced, shapes checked."""
        nodes = []
        for node in self.nodes:
            nodes.extend(self.before.get(id(node), []))
            if id(node) not in self.removed:
                nodes.append(node)
        copies = [onnx.NodeProto.FromString(node.SerializeToString()) for node in nodes]
        del self.graph.node[:]
        self.graph.node.extend(copies)
        del self.graph.initializer[:]
        used = {tensor for node in nodes for tensor in node.input}
        self.graph.initializer.extend(init for name, init in self.initializers.items() if name in used)
        onnx.checker.check_model(model)
        return model


def fold_batchnorms(model_bytes: bytes) -> tuple[bytes, dict[str, str]]:
    """The floating-point ONNX model ``model_bytes`` with every BatchNormalization that alone reads a Conv's output
    folded into that Conv's weight and bias, and the data input tensor of every Conv and Gemm by layer name (the name
    of its weight, less ``.weight``)."""
    model = onnx.load_from_string(model_bytes)
    graph = _Graph(model.graph)
    inputs = {}
    for node in list(graph.nodes):
        if node.op_type not in ("Conv", "Gemm") or not node.input[1].endswith(".weight"):
            continue
        inputs[node.input[1].removesuffix(".weight")] = node.input[0]
        if node.op_type == "Conv" and node.input[1] in graph.initializers:
            weight = graph.constant(node.input[1])
            ones = np.ones(weight.shape[0], np.float32)
            folded, factor = graph.fold_batchnorm(node, weight, ones)
            graph.initializers[node.input[1]] = numpy_helper.from_array(
                (folded * factor.reshape((-1,) + (1,) * (weight.ndim - 1))).astype(np.float32), node.input[1]
            )
    return graph.finish(model).SerializeToString(), inputs


def weight_scales(model_bytes: bytes) -> dict[str, np.ndarray]:
    """Each weight's per-channel scales in a QDQ model (the DequantizeLinear whose output is ``name.weight``)."""
    model = onnx.load_from_string(model_bytes)
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    return {
        node.output[0]: values[node.input[1]]
        for node in model.graph.node
        if node.op_type == "DequantizeLinear" and node.input[0] in values and node.input[0].endswith(".int8")
    }
