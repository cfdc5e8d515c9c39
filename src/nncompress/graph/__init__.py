"""The backend-neutral graph every algorithm works on (numpy only, no framework imports)."""

from nncompress.graph.graph import Edge, Graph, Node, TensorInfo, WeightInfo

__all__ = ["Edge", "Graph", "Node", "TensorInfo", "WeightInfo"]
