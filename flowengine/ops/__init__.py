"""Nodes: every operator behind one push/pull protocol (DESIGN §2).

    node.push(buf)        # push(None) = end of input: the node drains
    node.pull()           # -> AudioFrame | Packet | AGAIN | EOF

basic.py: the shared machinery (FlowNode) and identity, python and tap nodes;
adapters.py: processors, Encoder, Decoder, sources and sinks as nodes;
forkjoin.py: one input to several branches, joined by a reduce.
"""

from flowengine.ops.adapters import (
    ERROR_POLICIES, DecoderNode, EncoderNode, ProcessorNode, SinkNode, SourceNode,
    make_decoder_node, make_encoder_node, make_processor_node, make_sink_node, make_source_node,
)
from flowengine.ops.flownode import (
    ANY, FlowNode, IdentityNode, NodeStats, PythonNode, SinkHandle, TapNode,
    make_identity_node, make_python_node, make_tap_node,
)
from flowengine.ops.forkjoin import REDUCES, ForkJoinNode, make_fork_join_node

__all__ = [
    "ANY", "FlowNode", "NodeStats", "SinkHandle",
    "IdentityNode", "PythonNode", "TapNode",
    "ProcessorNode", "EncoderNode", "DecoderNode", "SourceNode", "SinkNode", "ERROR_POLICIES",
    "ForkJoinNode", "REDUCES",
    "make_identity_node", "make_python_node", "make_tap_node",
    "make_processor_node", "make_encoder_node", "make_decoder_node",
    "make_source_node", "make_sink_node", "make_fork_join_node",
]
