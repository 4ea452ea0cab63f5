/* Internal interface between the parts of the ring-3 runtime (glue, WASI, libc shim). */
#ifndef KEEP_RUNTIME_H
#define KEEP_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keep_abi.h" /* KEEP_TRAP_EXIT_STATUS (the microkernel ends stack overflows with it too),
                       * KEEP_FATAL_EXIT_STATUS (the runtime itself cannot go on) */
/* End the application as the trap "call stack exhausted" (hostcheck's SIGSEGV handler). */
_Noreturn void keep_stack_exhausted(void);

/* End the application as the trap "out of bounds memory access" (hostcheck's SIGSEGV handler). */
_Noreturn void keep_out_of_bounds(void);

void keep_heap_init(uintptr_t start, uintptr_t end);
/* End the allocator's region at new_end (for the linear memory's chunks above it): false, and
 * nothing changed, when it already hands out memory there. */
bool keep_heap_cede_top(uintptr_t new_end);
/* Where the linear memory's chunks start (keep_linear.c): returns the end of the allocator's
 * region, the heap's end rounded down to a chunk. */
uintptr_t keep_linear_init(uintptr_t heap_start, uintptr_t heap_end);

/* The application's own end (proc_exit, or _start returning): hand the :rw trees back, exit. */
_Noreturn void keep_app_exit(int status);

/* Print "keep: <message>" on stderr and end with KEEP_FATAL_EXIT_STATUS. */
_Noreturn void keep_fatal(const char *message);

/* Write a NUL-terminated string to fd 1 or 2. */
void keep_write_str(int fd, const char *s);

/* Load the launch arguments (call once, before the application runs). */
void keep_wasi_init(void);
void keep_fs_init(void); /* wasi_fs.c: the preopened directories, after keep_trees_init */

/* Instantiate and run the application's _start (generated per application: entry.c).
 * Returns its exit status (0 when _start returns). */
int keep_app_run(void);

#endif
