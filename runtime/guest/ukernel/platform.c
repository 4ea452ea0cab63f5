/* The platform layer: the instructions the simulated platform cannot execute, and nothing else.
 * Chosen at build time (so it is in the launch digest): -DKEEP_PLATFORM_SNP for SEV-SNP
 * hardware; otherwise the simulated platform of this machine's software KVM, where each
 * instruction is replaced by the MMIO doorbell exit that the VMM serves the same way. */
#include "cbit.h"
#include "ghcb.h"
#include "hypercall.h"
#include "keep_abi.h"
#include "pvalidate.h"

#ifdef KEEP_PLATFORM_SNP
void keep_platform_vmgexit(uint64_t ghcb_gpa) {
    __asm__ volatile("wrmsr" ::"c"(KEEP_GHCB_MSR), "a"((uint32_t)ghcb_gpa),
                     "d"((uint32_t)(ghcb_gpa >> 32)));
    __asm__ volatile("rep; vmmcall" ::: "memory"); /* VMGEXIT */
}

uint64_t keep_platform_ghcb_msr(uint64_t value) {
    uint32_t lo, hi;
    __asm__ volatile("wrmsr" ::"c"(KEEP_GHCB_MSR), "a"((uint32_t)value),
                     "d"((uint32_t)(value >> 32)));
    __asm__ volatile("rep; vmmcall" ::: "memory"); /* VMGEXIT */
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(KEEP_GHCB_MSR));
    return (uint64_t)hi << 32 | lo;
}

void keep_platform_early_doorbell(void) {
    /* No GHCB to carry an MMIO request yet (doorbell.c): the host learns that the keep
     * stopped, not why, and never resumes it. */
    keep_platform_ghcb_msr(KEEP_GHCB_MSR_TERM_REQ);
    keep_halt();
}

uint64_t keep_platform_pvalidate(uint64_t va, uint32_t page_size, uint32_t validate) {
    uint32_t rc;
    uint8_t unchanged;
    /* PVALIDATE (F2 0F 01 FF): rAX the page, ECX its size, EDX validate; EAX the return
     * code, CF=1 when the RMP entry was not changed. Spelled in bytes as Linux does. */
    __asm__ volatile(".byte 0xF2, 0x0F, 0x01, 0xFF\n\tsetc %1"
                     : "=a"(rc), "=q"(unchanged)
                     : "a"(va), "c"(page_size), "d"(validate)
                     : "memory", "cc");
    return (uint64_t)unchanged << 32 | rc;
}

const volatile uint8_t *keep_platform_cpuid_table(void) {
    return (const volatile uint8_t *)KEEP_CPUID_GPA; /* filled by the VMM, checked by the PSP */
}
#else
void keep_platform_vmgexit(uint64_t ghcb_gpa) {
    /* The VMM reads the GHCB at the plan's GHCB GPA, which is ghcb_gpa: WRMSR has no effect here. */
    (void)ghcb_gpa;
    *(volatile uint32_t *)KEEP_DOORBELL_GPA = KEEP_DOORBELL_VMGEXIT;
}

uint64_t keep_platform_ghcb_msr(uint64_t value) {
    /* One 64-bit MMIO write is WRMSR and VMGEXIT, one 64-bit MMIO read is RDMSR: the VMM
     * holds the MSR's value between them, as the CPU does. */
    volatile uint64_t *msr = (volatile uint64_t *)(KEEP_DOORBELL_GPA + KEEP_DOORBELL_MSR_OFFSET);
    *msr = value;
    return *msr;
}

void keep_platform_early_doorbell(void) {
    /* The stand-in's plain doorbell store, which the VMM serves as a hypercall: the stop's
     * reason reaches it. */
    *(volatile uint32_t *)KEEP_DOORBELL_GPA = KEEP_DOORBELL_RING;
}

uint64_t keep_platform_pvalidate(uint64_t va, uint32_t page_size, uint32_t validate) {
    /* The same pair for PVALIDATE: the VMM's RMP model answers EAX and CF (ABI.md). The VA is
     * the GPA (identity mapped) and page-aligned, so bits 11:0 carry ECX and EDX. */
    volatile uint64_t *port =
        (volatile uint64_t *)(KEEP_DOORBELL_GPA + KEEP_DOORBELL_PVALIDATE_OFFSET);
    *port = (va & ~0xFFFull) | (page_size & 1) | (uint64_t)(validate & 1) << 1;
    return *port;
}

const volatile uint8_t *keep_platform_cpuid_table(void) {
    return 0; /* the simulated launch fills no CPUID page, and its tables carry no C-bit */
}
#endif
