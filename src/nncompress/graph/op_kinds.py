"""Normalized op kinds ("metatypes") shared by every backend.

Names follow OpenVINO's opset where one exists, because the per-device hardware rules are
written in those names. Each backend maps its own ops onto these kinds (torch: its tracer's
table; ONNX and OpenVINO: their graph builders). Unknown ops get ``UNKNOWN`` and are left in
float with a warning.
"""

from __future__ import annotations

# graph boundary
INPUT = "Parameter"
OUTPUT = "Result"
CONSTANT = "Constant"
UNKNOWN = "Unknown"

# weighted ops
CONVOLUTION = "Convolution"
DEPTHWISE_CONVOLUTION = "DepthWiseConvolution"
GROUP_CONVOLUTION = "GroupConvolution"
CONVOLUTION_TRANSPOSE = "ConvolutionBackpropData"
MATMUL = "MatMul"
EMBEDDING = "Embedding"
EMBEDDING_BAG = "EmbeddingBag"
LSTM = "LSTMSequence"
GRU = "GRUSequence"
RNN = "RNNSequence"

# elementwise binary
ADD = "Add"
SUBTRACT = "Subtract"
MULTIPLY = "Multiply"
DIVIDE = "Divide"
POWER = "Power"
MAXIMUM = "Maximum"
MINIMUM = "Minimum"
FLOOR_MOD = "FloorMod"
LESS = "Less"
LESS_EQUAL = "LessEqual"
GREATER = "Greater"
GREATER_EQUAL = "GreaterEqual"
EQUAL = "Equal"
NOT_EQUAL = "NotEqual"
LOGICAL_AND = "LogicalAnd"
LOGICAL_OR = "LogicalOr"
LOGICAL_XOR = "LogicalXor"
LOGICAL_NOT = "LogicalNot"

# pooling and reductions
AVG_POOL = "AvgPool"
MAX_POOL = "MaxPool"
ADAPTIVE_AVG_POOL = "AvgPool"  # same rules as AvgPool
REDUCE_MEAN = "ReduceMean"
REDUCE_MAX = "ReduceMax"
REDUCE_MIN = "ReduceMin"
REDUCE_SUM = "ReduceSum"
REDUCE_L2 = "ReduceL2"
NORMALIZE_L2 = "NormalizeL2"

# normalization
BATCH_NORM = "BatchNormInference"
LAYER_NORM = "MVN"
GROUP_NORM = "GroupNormalization"
INSTANCE_NORM = "InstanceNormalization"

# activations
RELU = "Relu"
RELU6 = "Clamp"
CLAMP = "Clamp"
LEAKY_RELU = "PRelu"
PRELU = "PRelu"
ELU = "Elu"
GELU = "Gelu"
SIGMOID = "Sigmoid"
HSIGMOID = "HSigmoid"
HSWISH = "HSwish"
SWISH = "Swish"
MISH = "Mish"
TANH = "Tanh"
SOFTMAX = "Softmax"
LOG_SOFTMAX = "LogSoftmax"
EXP = "Exp"
LOG = "Log"
SQRT = "Sqrt"
ABS = "Abs"
NEGATIVE = "Negative"
ERF = "Erf"

# attention
SCALED_DOT_PRODUCT_ATTENTION = "ScaledDotProductAttention"

# data movement (quantization-agnostic: a quantizer may move through them)
RESHAPE = "Reshape"
FLATTEN = "Flatten"
SQUEEZE = "Squeeze"
UNSQUEEZE = "Unsqueeze"
TRANSPOSE = "Transpose"
SPLIT = "Split"
VARIADIC_SPLIT = "VariadicSplit"
CROP = "Crop"
TILE = "Tile"
STRIDED_SLICE = "StridedSlice"
SLICE = "Slice"
GATHER = "Gather"
SHUFFLE_CHANNELS = "ShuffleChannels"
BROADCAST = "Broadcast"
PAD = "Pad"
CONVERT_LIKE = "ConvertLike"
CONVERT = "Convert"
CONCAT = "Concat"
INTERPOLATE = "Interpolate"
DROPOUT = "Dropout"
IDENTITY = "Identity"
SHAPE_OF = "ShapeOf"

WEIGHTED_KINDS = frozenset(
    {
        CONVOLUTION,
        DEPTHWISE_CONVOLUTION,
        GROUP_CONVOLUTION,
        CONVOLUTION_TRANSPOSE,
        MATMUL,
        EMBEDDING,
        EMBEDDING_BAG,
        LSTM,
        GRU,
        RNN,
    }
)
CONVOLUTION_KINDS = frozenset({CONVOLUTION, DEPTHWISE_CONVOLUTION, GROUP_CONVOLUTION, CONVOLUTION_TRANSPOSE})
ELEMENTWISE_KINDS = frozenset({ADD, SUBTRACT, MULTIPLY, DIVIDE, MAXIMUM, MINIMUM, POWER, FLOOR_MOD})
# ops through which a quantizer may be moved upward without changing what it quantizes
# (they only move, select or take the maximum of values)
PASS_THROUGH_KINDS = frozenset(
    {
        MAX_POOL,
        REDUCE_MAX,
        RESHAPE,
        FLATTEN,
        SQUEEZE,
        UNSQUEEZE,
        TRANSPOSE,
        SPLIT,
        VARIADIC_SPLIT,
        CROP,
        TILE,
        STRIDED_SLICE,
        SLICE,
        SHUFFLE_CHANNELS,
        BROADCAST,
        PAD,
        CONVERT_LIKE,
        DROPOUT,
        IDENTITY,
    }
)
# ops whose output is shape information or an index, never quantized
SHAPE_KINDS = frozenset({SHAPE_OF})
