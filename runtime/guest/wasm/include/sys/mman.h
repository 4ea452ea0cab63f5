/* Keepstack libc shim: <sys/mman.h>. Empty: the runtime is built with WASM_RT_USE_MMAP=0
 * (explicit bounds checks, no guard pages), so nothing from here is used. */
#ifndef KEEP_SYS_MMAN_H
#define KEEP_SYS_MMAN_H
#endif
