/* The doorbell from ring 0: every doorbell write of the microkernel (its own hypercalls, its
 * FAULT report, and ring 3's writes forwarded by the #VC handler) is a GHCB MMIO-write request. */
#ifndef KEEP_DOORBELL_H
#define KEEP_DOORBELL_H
#include <stdint.h>

/* A write of value (size 4 or 8 bytes) at the doorbell, as an SVM_VMGEXIT_MMIO_WRITE request
 * (SW_EXITINFO1 the doorbell GPA, SW_EXITINFO2 the size, the value in the GHCB's shared buffer,
 * SW_SCRATCH its GPA). Returns once the host answered with SW_EXITINFO1 = SW_EXITINFO2 = 0;
 * any other answer stops the keep (EXIT 125, KEEP_STOP_MMIO_EXITINFO1/2, expected 0, found).
 * Before the GHCB is registered only a stop or a FAULT report rings (value 1): the platform's
 * keep_platform_early_doorbell carries it instead (platform.c). */
void keep_doorbell(uint64_t value, uint32_t size);

#endif
