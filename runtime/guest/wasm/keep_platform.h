/* The few services the ring-3 runtime needs from below it.
 *
 * Two implementations, one per link target, with identical behaviour as seen by the runtime:
 *   keep_hc.c    — in the keep: hypercalls to the VMM (runtime/guest/ukernel/ABI.md), MMIO doorbell;
 *   hostcheck.c  — on a Linux host, for differential tests: raw Linux system calls, no libc.
 * Everything above this interface (wasm2c runtime, WASI, libc shim) is the same object code in
 * both. */
#ifndef KEEP_PLATFORM_H
#define KEEP_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

struct keep_platform_memory {
    uintptr_t heap_start;   /* private RAM for the allocator; contents undefined */
    uintptr_t heap_end;
};

/* Called once from the entry point with the entry's boot argument (the keep_user_info block in
 * the keep, the initial stack pointer on Linux). Fills in the memory the runtime may use. */
void keep_platform_init(uintptr_t boot_arg, struct keep_platform_memory *memory);

/* Write all of buf to fd 1 or 2; returns bytes written or a negative errno. */
long keep_platform_console_write(int fd, const void *buf, size_t len);

/* Read up to len bytes of stdin; 0 at end of file, negative errno on error. */
long keep_platform_stdin_read(void *buf, size_t len);

/* The launch arguments as one blob: u32 argc, u32 envc, then argc+envc NUL-terminated strings.
 * Returns the blob's length, or a negative errno (-7 E2BIG when it does not fit in max). */
long keep_platform_launch_args(void *buf, size_t max);

/* Nanoseconds of clock 0 (realtime) or 1 (monotonic); host time, untrusted. Negative errno on
 * failure. */
int keep_platform_clock(uint32_t clock_id, uint64_t *nanoseconds);

/* The preopened trees' transfer blob as the host sends it (untrusted; keep_trees.c checks it):
 * copies up to len bytes from position into buf and sets *total to the blob's length (0: no
 * trees). Returns the bytes copied or a negative errno. */
long keep_platform_trees_read(void *buf, size_t len, uint64_t position, uint64_t *total);

/* Hand [position, position + len) of the result blob (total bytes in all) to the host: the
 * :rw trees as the application left them (keep_fs.c, fs_hand_back). 0 or a negative errno. */
long keep_platform_result_write(const void *buf, size_t len, uint64_t position, uint64_t total);

/* The 64-byte REPORT_DATA this keep attested, from private memory; NULL where nothing was
 * attested (the hostcheck build). */
const uint8_t *keep_platform_attested_report_data(void);

/* The range wasm2c's linear memory lives in: KEEP_LINEAR_RESERVE bytes, none accessible; 0 if
 * there is none. Then make [base, base + size) accessible (size only grows, whole 4 KiB pages):
 * 0, or -1 when refused. An access to the range beyond it ends the application as the trap
 * "out of bounds memory access". (keep_linear.c is their only caller.) */
uintptr_t keep_platform_linear_reserve(void);
int keep_platform_linear_map(uintptr_t base, size_t size);

/* End the keep (or process) with this status. */
_Noreturn void keep_platform_exit(int status);

#endif
