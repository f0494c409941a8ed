"""Validated, frozen configuration: hardware, deploy configs and traces.

Everything downstream receives these dataclasses; nothing downstream parses strings again.
"""

from sllmsim.config.deploy import AutoScalingConfig, BackendConfig, DeployConfig, PlacementConfig, load_deploy_config
from sllmsim.config.hardware import GPU_TYPES, ClusterSpec, GpuType, NodeSpec, load_hardware
from sllmsim.errors import ConfigError

__all__ = [
    "AutoScalingConfig",
    "BackendConfig",
    "ClusterSpec",
    "ConfigError",
    "DeployConfig",
    "GPU_TYPES",
    "GpuType",
    "NodeSpec",
    "PlacementConfig",
    "load_deploy_config",
    "load_hardware",
]
