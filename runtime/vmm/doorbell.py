"""What an access at the doorbell means, however it reaches the VMM.

The doorbell (``plan.abi.doorbell``) has no memory behind it. A keep rings it with a 32-bit write
of ``DOORBELL_RING`` (a hypercall is waiting in the hypercall page); on the simulated platform of
ABI version 4 the microkernel also writes ``DOORBELL_VMGEXIT`` in place of VMGEXIT. The access
arrives as a plain MMIO exit (``runtime.vmm.vcpu``: ring 3 on the simulated platform, and every
MMIO-write request KVM forwards on SEV-SNP) or as a GHCB MMIO request the simulated platform's
VMM serves itself (``runtime.vmm.ghcb``, the microkernel's own doorbell writes). Both paths end
here, so the keep is served the same whichever way it knocked. The doorbell is never read.
"""

from __future__ import annotations

from collections.abc import Callable

from runtime.vmm.errors import GuestError
from toolchain.measure.abi import DOORBELL_RING, DOORBELL_VMGEXIT

#: The doorbell handler: returns None to resume the guest, or the keep's exit status.
DoorbellHandler = Callable[[], "int | None"]


def doorbell_access(
    length: int,
    value: int | None,
    on_doorbell: DoorbellHandler,
    on_vmgexit: DoorbellHandler | None = None,
) -> int | None:
    """Serve one access of ``length`` bytes at the doorbell: ``value`` written, or None for a
    read. ``on_vmgexit`` serves the value ``DOORBELL_VMGEXIT`` (None: refused, as from a GHCB
    request, which must not nest a VMGEXIT). Returns what the handler returns."""
    if value is None:
        raise GuestError(
            f"read of {length} bytes from the doorbell (the ABI only ever writes it)",
            hint="a bad pointer in the guest",
        )
    if length == 4 and value == DOORBELL_VMGEXIT and on_vmgexit is not None:
        return on_vmgexit()
    if length != 4 or value != DOORBELL_RING:
        raise GuestError(
            f"doorbell written with {length} bytes of value {value:#x} "
            f"(the ABI rings it with the 32-bit value {DOORBELL_RING})"
        )
    return on_doorbell()
