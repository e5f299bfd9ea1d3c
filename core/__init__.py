"""ssmkit.core: SSM blocks with one interface, shared layers, scan orders, registry, optional deps."""

if __name__ != "ssmkit.core":
    raise ImportError(
        f"This folder is the subpackage `ssmkit.core`, imported here as `{__name__}`. "
        "Install ssmkit (`pip install -e .`) and write `import ssmkit.core` instead."
    )

from ssmkit.core.bimamba import BiMamba
from ssmkit.core.conv_s5 import ConvS5
from ssmkit.core.mamba import Mamba
from ssmkit.core.mamba2 import Mamba2
from ssmkit.core.norms import GatedRMSNorm, RMSNorm
from ssmkit.core.optim import param_groups
from ssmkit.core.optional import require
from ssmkit.core.registry import create_model, list_models, model_entry, register_model
from ssmkit.core.residual import ResidualBlock, SequenceBackbone
from ssmkit.core.s4d import S4D, S4DState
from ssmkit.core.s5 import S5, S5State
from ssmkit.core.ss2d import SS2D
from ssmkit.core.state import ConvSSMState, SSMState, StackState
from ssmkit.core.tri_mamba import TriOrientedMamba

__all__ = ["create_model", "list_models", "model_entry", "register_model", "require"]
__all__ += [
    "BiMamba",
    "ConvSSMState",
    "GatedRMSNorm",
    "Mamba",
    "Mamba2",
    "RMSNorm",
    "ResidualBlock",
    "SequenceBackbone",
    "SSMState",
    "StackState",
    "param_groups",
]
__all__ += ["ConvS5", "S4D", "S4DState", "S5", "S5State", "SS2D", "TriOrientedMamba"]
