/* The GHCB (GHCB specification v2, AMD pub. 56421; Linux arch/x86/include/asm/svm.h struct ghcb)
 * and the NAE events the microkernel makes: SNP Guest Request, Page State Change. */
#ifndef KEEP_GHCB_H
#define KEEP_GHCB_H
#include <stdint.h>

#define KEEP_GHCB_SW_EXIT_CODE 0x390
#define KEEP_GHCB_SW_EXIT_INFO_1 0x398
#define KEEP_GHCB_SW_EXIT_INFO_2 0x3A0
#define KEEP_GHCB_SW_SCRATCH 0x3A8
#define KEEP_GHCB_VALID_BITMAP 0x3F0 /* bit n: the qword at offset 8n is valid */

#define KEEP_GHCB_PROTOCOL_VERSION 0xFFA
#define KEEP_GHCB_USAGE 0xFFC /* 0: the standard layout */
#define KEEP_GHCB_VERSION 2
#define KEEP_SVM_VMGEXIT_GUEST_REQUEST 0x80000011u
#define KEEP_SVM_VMGEXIT_MMIO_WRITE 0x80000002u
#define KEEP_SVM_EXIT_NPF 0x400u /* the #VC error code of an MMIO access */

/* One NAE event through the GHCB: SW_EXITCODE, SW_EXITINFO1/2 and (when not 0) SW_SCRATCH, each
 * marked valid, protocol version 2, usage 0; then the exit. The host's answer is in the GHCB. */
void keep_ghcb_exit(uint64_t exit_code, uint64_t info1, uint64_t info2, uint64_t scratch);

/* SNP Guest Request through the GHCB: request and response pages are shared GPAs. Returns the
 * host's SW_EXITINFO2 (0: the firmware answered; else its error, the VMM's in bits 63:32). */
uint64_t keep_ghcb_guest_request(uint64_t request_gpa, uint64_t response_gpa);

/* Page State Change with the descriptor at descriptor_gpa (SW_SCRATCH; the GHCB's shared
 * buffer). Returns the host's SW_EXITINFO2 (0: served); the host advances the header. */
uint64_t keep_ghcb_psc(uint64_t descriptor_gpa);

/* Before the first GHCB or hypercall page use: register the GHCB's GPA and make the GHCB page,
 * the hypercall page and the data buffer shared, through the GHCB MSR protocol. A host answer
 * other than the one required stops the keep (EXIT 125, KEEP_STOP_GHCB_REG_* / KEEP_STOP_PSC_*). */
void keep_ghcb_setup(void);

/* The platform layer (platform.c): the only code that differs between the simulated platform
 * and SEV-SNP, chosen at build time. Exit to the host with the GHCB at ghcb_gpa. */
void keep_platform_vmgexit(uint64_t ghcb_gpa);
/* One GHCB MSR protocol exchange: WRMSR value to MSR 0xC0010130, VMGEXIT, RDMSR the answer. */
uint64_t keep_platform_ghcb_msr(uint64_t value);
/* A doorbell write before the GHCB is registered (only a stop or FAULT report comes then): on
 * SNP the MSR protocol's termination request, and halt; simulated: the plain doorbell store. */
void keep_platform_early_doorbell(void);
/* Whether the host accepted the GHCB's registration (doorbell writes go through it since). */
int keep_ghcb_registered(void);

#endif
