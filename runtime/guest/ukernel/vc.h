/* The #VC handler (vector 29): on SEV-SNP ring 3's store to the doorbell, which has no memory
 * behind it, raises #VC with the exit code NPF; the microkernel decodes the store and asks the
 * host for the write through the GHCB (doorbell.c). Nothing else is emulated. */
#ifndef KEEP_VC_H
#define KEEP_VC_H
#include <stdint.h>

/* What entry.S keep_vc_entry saves on IST1: gpr[i] is register i (rax 0 … r15 15; rsp's slot
 * is 0), then the vector, the error code and the CPU's interrupt frame. */
struct keep_vc_frame {
    uint64_t gpr[16];
    uint64_t vector, error_code, rip, cs, rflags, rsp, ss;
};
/* entry.S pushes 16 registers below what the stub and the CPU pushed. */
_Static_assert(__builtin_offsetof(struct keep_vc_frame, vector) == 16 * 8, "keep_vc_entry");
_Static_assert(__builtin_offsetof(struct keep_vc_frame, rip) == 18 * 8, "keep_vc_entry");

/* A decoded store: to gpa, of size bytes (4 or 8), of value; length is the instruction's. */
struct keep_vc_store {
    uint64_t gpa, value;
    uint32_t size, length;
};

/* Decodes the store at insn, reading only the bytes of the instruction, in order: an optional
 * REX prefix with only W (8 bytes) and B (r8-r15 base) set, then C7 /0 with ModRM mod 00 and a
 * base register other than rsp (SIB) and rbp (RIP-relative), then imm32 (sign-extended for 8
 * bytes): `movl/movq $imm32, (%reg)`, the only form of keep_hc.c's doorbell store (objdump;
 * tests/test_vc.py checks every doorbell store of a built runtime). Returns 0, or
 * KEEP_STOP_VC_INSTRUCTION for anything else. */
uint64_t keep_vc_decode(const volatile uint8_t *insn, const uint64_t gpr[16],
                        struct keep_vc_store *store);

/* The checks of a #VC, in order: exit code NPF (KEEP_STOP_VC_EXIT_CODE, expected 0x400, found
 * the code), from ring 3 (KEEP_STOP_VC_RING, expected 3, found CS), a store of the decoder's
 * form (KEEP_STOP_VC_INSTRUCTION, expected the RIP, found the first 8 bytes there, little-endian),
 * to the doorbell GPA (KEEP_STOP_VC_GPA, expected the doorbell, found the address). Returns 0
 * with the store, or the reason with *expected and *found. */
uint64_t keep_vc_check(const struct keep_vc_frame *frame, struct keep_vc_store *store,
                       uint64_t *expected, uint64_t *found);

/* Called by keep_vc_entry: checks, forwards the store (keep_doorbell) and advances RIP past it;
 * a failed check stops the keep (EXIT 125 with the reason, expected and found). */
void keep_vc_handle(struct keep_vc_frame *frame);

#endif
