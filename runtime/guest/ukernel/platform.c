/* The platform layer: the instructions the simulated platform cannot execute, and nothing else.
 * Chosen at build time (so it is in the launch digest): -DKEEP_PLATFORM_SNP for SEV-SNP
 * hardware; otherwise the simulated platform of this machine's software KVM, where each
 * instruction is replaced by the MMIO doorbell exit that the VMM serves the same way. */
#include "ghcb.h"
#include "keep_abi.h"

#define MSR_AMD64_SEV_ES_GHCB 0xC0010130u

#ifdef KEEP_PLATFORM_SNP
void keep_platform_vmgexit(uint64_t ghcb_gpa) {
    __asm__ volatile("wrmsr" ::"c"(MSR_AMD64_SEV_ES_GHCB), "a"((uint32_t)ghcb_gpa),
                     "d"((uint32_t)(ghcb_gpa >> 32)));
    __asm__ volatile("rep; vmmcall" ::: "memory"); /* VMGEXIT */
}
#else
void keep_platform_vmgexit(uint64_t ghcb_gpa) {
    /* The VMM reads the GHCB at the plan's GHCB GPA, which is ghcb_gpa: WRMSR has no effect here. */
    (void)ghcb_gpa;
    *(volatile uint32_t *)KEEP_DOORBELL_GPA = KEEP_DOORBELL_VMGEXIT;
}
#endif
