import pytest

from nncompress.errors import ScopeError
from nncompress.graph import Graph, Node
from nncompress.scopes import IgnoredScope


def _graph():
    g = Graph()
    for name, kind in [
        ("Net/Conv2d[conv1]/conv2d_0", "Convolution"),
        ("Net/ReLU[relu]/relu_0", "Relu"),
        ("Net/Linear[fc]/linear_0", "MatMul"),
    ]:
        g.add_node(Node(name=name, op_type=name.rsplit("/", 1)[1][:-2], kind=kind))
    return g


def test_names_patterns_and_types_match():
    g = _graph()
    scope = IgnoredScope(names=["Net/ReLU[relu]/relu_0"], patterns=[r".*conv1.*"], types=["MatMul"])
    assert scope.matches(g.nodes) == {n.name for n in g.nodes}


def test_nncf_style_scopes_are_converted():
    scope = IgnoredScope.from_nncf_scopes(["{re}.*fc.*", "Net/ReLU[relu]/relu_0"])
    assert scope.patterns == [".*fc.*"] and scope.names == ["Net/ReLU[relu]/relu_0"]
    assert scope.matches(_graph().nodes) == {"Net/Linear[fc]/linear_0", "Net/ReLU[relu]/relu_0"}


def test_unmatched_entry_is_an_error_with_suggestion():
    with pytest.raises(
        ScopeError, match=r"name 'Net/ReLU\[relu\]/relu_1'.*Did you mean 'Net/ReLU\[relu\]/relu_0'"
    ):
        IgnoredScope(names=["Net/ReLU[relu]/relu_1"]).matches(_graph().nodes)
    with pytest.raises(ScopeError, match="type 'Softmax'"):
        IgnoredScope(types=["Softmax"]).matches(_graph().nodes)


def test_unmatched_entry_allowed_without_validation():
    assert IgnoredScope(patterns=["nothing"], validate=False).matches(_graph().nodes) == set()


def test_bad_regex_is_named():
    with pytest.raises(ScopeError, match=r"pattern '\(' is not a valid regular expression"):
        IgnoredScope(patterns=["("]).matches(_graph().nodes)
