/* The wasm linear memory: the mmap/mprotect/munmap that wasm2c's runtime calls
 * (WASM_RT_USE_MMAP with WASM_RT_MEMCHECK_GUARD_PAGES, keep_rt_config.h), on the range the
 * platform reserves (keep_platform.h: in the keep the page tables' not-present range at
 * KEEP_LINEAR_BASE, on Linux a PROT_NONE mapping). wasm2c reserves the whole 8 GiB once and
 * makes [0, size) accessible at instantiation and on every memory.grow; nothing else is ever
 * accessible, so an access past the memory's size faults, and the platform turns that fault into
 * the trap "out of bounds memory access" (ring 0's linear.c, hostcheck.c's SIGSEGV handler).
 *
 * The backing RAM comes from the top of the heap in whole 2 MiB chunks (KEEP_LINEAR_CHUNK;
 * chunk k lies k + 1 chunks below the heap's end rounded down to a chunk, as the microkernel maps
 * it): the allocator's region ends below the lowest chunk in use (keep_heap_cede_top), and a grow
 * that would need a chunk the allocator uses, or more than keep_linear_limit, fails as wasm says
 * (memory.grow returns -1). The limit leaves KEEP_RUNTIME_HEAP_RESERVE bytes of the heap to the
 * runtime: toolchain.measure.keep.linear_memory_limit computes the same for the nil backend and
 * for keep build's check. */
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "keep_abi.h"
#include "keep_platform.h"
#include "keep_runtime.h"

static uintptr_t heap_floor; /* below it: the runtime's own reserve */
static uintptr_t chunk_top;  /* the heap's end rounded down to a chunk */
static uintptr_t reserved;   /* the reserved range, 0 until wasm2c asks for it */
static size_t accessible;    /* linear memory [0, accessible) is mapped (and was zeroed) */

uintptr_t keep_linear_init(uintptr_t heap_start, uintptr_t heap_end) {
    chunk_top = heap_end & ~(uintptr_t)(KEEP_LINEAR_CHUNK - 1);
    heap_floor = heap_start + KEEP_RUNTIME_HEAP_RESERVE;
    return chunk_top > heap_start ? chunk_top : heap_start;
}

/* Whole chunks between the runtime's reserve and the top, at most the 4 GiB index space. */
static size_t keep_linear_limit(void) {
    size_t room = chunk_top > heap_floor ? (chunk_top - heap_floor) / KEEP_LINEAR_CHUNK : 0;
    return room * KEEP_LINEAR_CHUNK < KEEP_LINEAR_MAX ? room * KEEP_LINEAR_CHUNK : KEEP_LINEAR_MAX;
}

/* wasm2c's reservation: one memory, the whole KEEP_LINEAR_RESERVE, nothing accessible yet. A
 * second memory has no range left and fails (wasm2c then aborts: "keep: aborted ..."). */
void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset) {
    (void)flags;
    if (addr != NULL || length != KEEP_LINEAR_RESERVE || prot != PROT_NONE || fd != -1 ||
        offset != 0 || reserved != 0) {
        return MAP_FAILED;
    }
    reserved = keep_platform_linear_reserve();
    return reserved != 0 ? (void *)reserved : MAP_FAILED;
}

/* Make [addr, addr + length) accessible and zero: only right after what already is. */
int mprotect(void *addr, size_t length, int prot) {
    uintptr_t at = (uintptr_t)addr;
    if (reserved == 0 || prot != (PROT_READ | PROT_WRITE) || at != reserved + accessible ||
        length > keep_linear_limit() - accessible) {
        return -1;
    }
    size_t size = accessible + length;
    size_t chunks = (size + KEEP_LINEAR_CHUNK - 1) / KEEP_LINEAR_CHUNK;
    if (!keep_heap_cede_top(chunk_top - chunks * KEEP_LINEAR_CHUNK) ||
        keep_platform_linear_map(reserved, size) != 0) {
        return -1;
    }
    memset(addr, 0, length); /* heap RAM: its contents are undefined */
    accessible = size;
    return 0;
}

/* Only when an instance is freed, which never happens before the keep ends. */
int munmap(void *addr, size_t length) {
    (void)addr;
    (void)length;
    return -1;
}

/* wasm2c prints this before it aborts; abort's own line says what happened (libc.c). */
void perror(const char *message) { (void)message; }
