/* Host harness for runtime/guest/ukernel/vc.c (tests/test_vc.py): the #VC handler's decoder and
 * checks, with keep_doorbell and keep_stop replaced by recorders. One command a line:
 *   D INSN REG VALUE               -> OK gpa value size length | ERR reason
 *   H INSN REG VALUE CODE CS AT    -> FWD value size advance status | STOP status reason expected found
 * INSN: the instruction bytes (placed at offset AT, two bytes, of a page); REG: one byte, the
 * register holding VALUE (8 bytes, big-endian; every other register holds 0xdead0000 + its
 * number); CODE, CS: 8 bytes each, the #VC's error code and the interrupted CS. */
#include "harness_io.h"
#include "keep_abi.h"
#include "vc.h"

static uint8_t data[MAX_FIELD];
static uint8_t pages[2 * KEEP_PAGE_SIZE] __attribute__((aligned(KEEP_PAGE_SIZE)));
static void *jump[5];
static uint64_t stopped[4], forwarded[2];

void keep_doorbell(uint64_t value, uint32_t size) {
    forwarded[0] = value;
    forwarded[1] = size;
}

__attribute__((noreturn)) void keep_stop(uint64_t status, uint64_t reason, uint64_t expected,
                                         uint64_t found) {
    stopped[0] = status;
    stopped[1] = reason;
    stopped[2] = expected;
    stopped[3] = found;
    __builtin_longjmp(jump, 1);
}

static uint64_t u64(const uint8_t **at) {
    uint8_t bytes[8] = {0};
    size_t n = field(at, bytes);
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        x = x << 8 | bytes[i];
    }
    return x;
}

static void put_words(const uint64_t *words, int n) {
    for (int i = 0; i < n; i++) {
        put(" ", 1);
        put_u64(words[i]);
    }
}

static void handle(struct keep_vc_frame *frame, const uint8_t **at, uint8_t *insn) {
    frame->error_code = u64(at);
    frame->cs = u64(at);
    frame->rip = (uint64_t)insn;
    uint64_t rip = frame->rip;
    if (__builtin_setjmp(jump) == 0) {
        keep_vc_handle(frame);
        uint64_t fwd[3] = {forwarded[0], forwarded[1], frame->rip - rip};
        put_str("FWD");
        put_words(fwd, 3);
    } else {
        put_str("STOP");
        put_words(stopped, 4);
    }
}

static void harness_line(const uint8_t *at) {
    uint8_t op = *at++;
    size_t n = field(&at, data);
    uint8_t reg[1] = {0};
    field(&at, reg);
    struct keep_vc_frame frame = {{0}, 0, 0, 0, 0, 0, 0, 0};
    for (uint32_t i = 0; i < 16; i++) {
        frame.gpr[i] = 0xdead0000u + i;
    }
    frame.gpr[reg[0] & 15] = u64(&at);
    /* The bytes at AT (read after CODE and CS), the rest of both pages a poison byte. */
    const uint8_t *rest = at;
    u64(&rest);
    u64(&rest);
    uint64_t offset = op == 'H' ? u64(&rest) : 0;
    for (size_t i = 0; i < sizeof pages; i++) {
        pages[i] = 0xCC;
    }
    uint8_t *insn = pages + offset;
    for (size_t i = 0; i < n; i++) {
        insn[i] = data[i];
    }
    if (op == 'D') {
        struct keep_vc_store store;
        uint64_t reason = keep_vc_decode(insn, frame.gpr, &store);
        if (reason != 0) {
            put_str("ERR");
            put_words(&reason, 1);
            return;
        }
        uint64_t words[4] = {store.gpa, store.value, store.size, store.length};
        put_str("OK");
        put_words(words, 4);
        return;
    }
    handle(&frame, &at, insn);
}
