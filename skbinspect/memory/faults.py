"""What a read of kernel memory can raise when the memory is not there or not what it should be.

A vmcore may leave pages out (filtered or truncated: a page makedumpfile excluded is a
:class:`drgn.FaultError` "could not read memory from kdump: Excluded page"), a live kernel frees objects
under us, and a
crashed kernel's memory may hold garbage: a pointer into nowhere (:class:`drgn.FaultError`), a length
or address that does not fit (:class:`ValueError`, :class:`OverflowError`).  Readers catch
:data:`READ_FAULTS` where they read one object and turn it into a note about that object.
"""

from __future__ import annotations

import drgn

__all__ = ["READ_FAULTS"]

READ_FAULTS = (drgn.FaultError, ValueError, OverflowError)
