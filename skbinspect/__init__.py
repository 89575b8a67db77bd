"""skbinspect: where did my packets go?  tun/tap rings, drop reasons, per-CPU drop statistics and the
kernel's kfree_skb trace, read with drgn from a live kernel, a vmcore, or a QEMU guest."""

__version__ = "0.1.0"

from skbinspect.errors import DebugInfoError, SkbinspectError, TargetError  # noqa: E402
from skbinspect.target.opener import Target, open_target, target_from_program  # noqa: E402

__all__ = [
    "__version__",
    "DebugInfoError",
    "SkbinspectError",
    "Target",
    "TargetError",
    "open_target",
    "target_from_program",
]
