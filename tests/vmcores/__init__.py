"""The real-kernel lab: Debian kernels booted in QEMU, scenarios, vmcores and their ground truth.

Build it with ``python -m tests.vmcores build``; see ``tests/vmcores/README.md``.
"""
