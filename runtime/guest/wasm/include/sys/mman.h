/* Keepstack libc shim: <sys/mman.h>. What wasm2c's runtime calls for its linear memory
 * (WASM_RT_USE_MMAP, keep_rt_config.h), implemented on the platform's reserved range by
 * keep_linear.c; nothing else uses them. */
#ifndef KEEP_SYS_MMAN_H
#define KEEP_SYS_MMAN_H
#include <stddef.h>

#define PROT_NONE 0
#define PROT_READ 1
#define PROT_WRITE 2
#define MAP_PRIVATE 0x02
#define MAP_ANONYMOUS 0x20
#define MAP_FAILED ((void *)-1)

void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset);
int mprotect(void *addr, size_t length, int prot);
int munmap(void *addr, size_t length);
#endif
