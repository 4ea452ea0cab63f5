/* keep_linear.c's mmap/mprotect as wasm2c's runtime uses them, on hostcheck: one reservation,
 * grown only in place, never over memory the allocator hands out, never past the heap; then an
 * access past the end is the trap. One character per answer: '0' done, 'r' refused. */
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "keep_abi.h"
#include "keep_platform.h"
#include "keep_runtime.h"

#define MIB (1ul << 20)
#define RW (PROT_READ | PROT_WRITE)

static char answer(int ok) { return ok ? '0' : 'r'; }

int keep_app_run(void) {
    char out[16];
    int n = 0;
    uint8_t *base = mmap(NULL, KEEP_LINEAR_RESERVE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    out[n++] = answer(base != MAP_FAILED);
    out[n++] = answer(mmap(NULL, KEEP_LINEAR_RESERVE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
                           0) != MAP_FAILED); /* one memory */
    out[n++] = answer(mprotect(base + 65536, 65536, RW) == 0); /* not right after the end */
    out[n++] = answer(mprotect(base, 65536, RW) == 0);
    base[65535] = 1;
    void *big = malloc(200 * MIB); /* the allocator now reaches into where the chunks would go */
    out[n++] = answer(big != NULL);
    out[n++] = answer(mprotect(base + 65536, 100 * MIB, RW) == 0);
    free(big);
    out[n++] = answer(mprotect(base + 65536, 100 * MIB, RW) == 0);
    out[n++] = answer(malloc(200 * MIB) != NULL); /* and now the chunks are the linear memory's */
    out[n++] = answer(mprotect(base + 65536 + 100 * MIB, 200 * MIB, RW) == 0); /* past the heap */
    out[n++] = answer(base[100 * MIB + 65535] == 0 && base[65535] == 1); /* zeroed, kept */
    out[n++] = '\n';
    keep_platform_console_write(1, out, (size_t)n);
    return base[100 * MIB + 65536]; /* one byte past the end */
}
