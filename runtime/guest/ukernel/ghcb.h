/* The GHCB (GHCB specification v2, AMD pub. 56421; Linux arch/x86/include/asm/svm.h struct ghcb)
 * and the one NAE event the microkernel makes: SNP Guest Request. */
#ifndef KEEP_GHCB_H
#define KEEP_GHCB_H
#include <stdint.h>

#define KEEP_GHCB_SW_EXIT_CODE 0x390
#define KEEP_GHCB_SW_EXIT_INFO_1 0x398
#define KEEP_GHCB_SW_EXIT_INFO_2 0x3A0
#define KEEP_GHCB_VALID_BITMAP 0x3F0 /* bit n: the qword at offset 8n is valid */
#define KEEP_GHCB_PROTOCOL_VERSION 0xFFA
#define KEEP_GHCB_USAGE 0xFFC /* 0: the standard layout */
#define KEEP_GHCB_VERSION 2
#define KEEP_SVM_VMGEXIT_GUEST_REQUEST 0x80000011u

/* SNP Guest Request through the GHCB: request and response pages are shared GPAs. Returns the
 * host's SW_EXITINFO2 (0: the firmware answered; else its error, the VMM's in bits 63:32). */
uint64_t keep_ghcb_guest_request(uint64_t request_gpa, uint64_t response_gpa);

/* The platform layer (platform.c): the only code that differs between the simulated platform
 * and SEV-SNP, chosen at build time. Exit to the host with the GHCB at ghcb_gpa. */
void keep_platform_vmgexit(uint64_t ghcb_gpa);

#endif
