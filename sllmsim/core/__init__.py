"""The scheduler core shared by the simulator and live mode.

Pure code over a snapshot of the cluster: it never reads a clock, sleeps, or imports simpy, torch or
an HTTP library. The runtimes (``sllmsim.sim`` and ``live``) build snapshots and apply decisions.

Importing this package imports every module that defines a built-in policy, so that they are all in
:mod:`sllmsim.core.registry` before anyone looks a name up (see that module).
"""

from sllmsim.core.autoscale import AutoscalePolicy, ScalingContext, ScalingDecision, decide_scaling
from sllmsim.core.estimate import startup_estimate_s
from sllmsim.core.placement import PlacementOption, PlacementPolicy, make_placement_policy, place
from sllmsim.core.serverlessllm import ServerlessLLMPlacement
from sllmsim.core.snapshot import ClusterView, ModelView, NodeView, Tier

__all__ = [
    "AutoscalePolicy",
    "ClusterView",
    "ModelView",
    "NodeView",
    "PlacementOption",
    "PlacementPolicy",
    "ScalingContext",
    "ScalingDecision",
    "ServerlessLLMPlacement",
    "Tier",
    "decide_scaling",
    "make_placement_policy",
    "place",
    "startup_estimate_s",
]
