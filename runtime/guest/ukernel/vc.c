/* The #VC handler: ring 3's doorbell store, decoded and forwarded through the GHCB. Only the one
 * instruction form keep_hc.c compiles to is accepted; every other #VC ends the keep naming what
 * it found (vc.h). Small on purpose: an instruction emulator in ring 0 is attack surface. */
#include "vc.h"

#include "doorbell.h"
#include "ghcb.h"
#include "hypercall.h"
#include "keep_abi.h"

#define REX_W 0x08u
#define REX_B 0x01u
#define MOV_RM_IMM32 0xC7u
#define RM_SIB 4u
#define RM_RIP 5u

uint64_t keep_vc_decode(const volatile uint8_t *insn, const uint64_t gpr[16],
                        struct keep_vc_store *store) {
    uint32_t at = 0, rex = 0, first = insn[0];
    if ((first & 0xF0u) == 0x40u) {
        rex = first;
        at++;
        if ((rex & ~(REX_W | REX_B) & 0x0Fu) != 0) {
            return KEEP_STOP_VC_INSTRUCTION; /* R or X: no such operand in this form */
        }
    }
    if (insn[at++] != MOV_RM_IMM32) {
        return KEEP_STOP_VC_INSTRUCTION;
    }
    uint32_t modrm = insn[at++];
    uint32_t mod = modrm >> 6, reg = (modrm >> 3) & 7u, rm = modrm & 7u;
    if (mod != 0 || reg != 0 || rm == RM_SIB || rm == RM_RIP) {
        return KEEP_STOP_VC_INSTRUCTION;
    }
    uint32_t imm = 0;
    for (uint32_t i = 0; i < 4; i++) {
        imm |= (uint32_t)insn[at++] << (8 * i);
    }
    store->gpa = gpr[rm | ((rex & REX_B) << 3)];
    store->size = (rex & REX_W) != 0 ? 8 : 4;
    store->value = (rex & REX_W) != 0 ? (uint64_t)(int64_t)(int32_t)imm : imm;
    store->length = at;
    return 0;
}

/* Up to 8 bytes at rip, for the stop's "found": only from rip's own page, which is mapped (the
 * CPU fetched the instruction from it); the next one may not be. */
static uint64_t bytes_at(uint64_t rip) {
    const volatile uint8_t *insn = (const volatile uint8_t *)rip;
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < 8 && (rip + i) / KEEP_PAGE_SIZE == rip / KEEP_PAGE_SIZE; i++) {
        bytes |= (uint64_t)insn[i] << (8 * i);
    }
    return bytes;
}

uint64_t keep_vc_check(const struct keep_vc_frame *frame, struct keep_vc_store *store,
                       uint64_t *expected, uint64_t *found) {
    if (frame->error_code != KEEP_SVM_EXIT_NPF) {
        *expected = KEEP_SVM_EXIT_NPF;
        *found = frame->error_code;
        return KEEP_STOP_VC_EXIT_CODE;
    }
    if ((frame->cs & 3u) != 3u) {
        *expected = 3;
        *found = frame->cs;
        return KEEP_STOP_VC_RING;
    }
    if (keep_vc_decode((const volatile uint8_t *)frame->rip, frame->gpr, store) != 0) {
        *expected = frame->rip;
        *found = bytes_at(frame->rip);
        return KEEP_STOP_VC_INSTRUCTION;
    }
    if (store->gpa != KEEP_DOORBELL_GPA) { /* identity mapped: the address is the GPA */
        *expected = KEEP_DOORBELL_GPA;
        *found = store->gpa;
        return KEEP_STOP_VC_GPA;
    }
    return 0;
}

void keep_vc_handle(struct keep_vc_frame *frame) {
    struct keep_vc_store store;
    uint64_t expected = 0, found = 0;
    uint64_t reason = keep_vc_check(frame, &store, &expected, &found);
    if (reason != 0) {
        keep_stop(KEEP_EXIT_ATTEST_FAILED, reason, expected, found);
    }
    keep_doorbell(store.value, store.size);
    frame->rip += store.length;
}
