/* keep_platform.h on a Linux host, with raw system calls and no libc ("hostcheck").
 *
 * Links with the very same runtime, WASI and wasm2c objects as the keep image, so that the
 * differential tests against wasmtime exercise the code that runs in the keep. Not part of any
 * keep image. */
#include <stddef.h>
#include <stdint.h>

#include "keep_platform.h"

#define SYS_read 0
#define SYS_write 1
#define SYS_mmap 9
#define SYS_clock_gettime 228
#define SYS_exit_group 231
#define SYS_prlimit64 302

#define HOSTCHECK_HEAP_SIZE (256ul << 20)
#define HOSTCHECK_STACK_DEFAULT (8ul << 20)

static long sys6(long n, long a, long b, long c, long d, long e, long f) {
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

static uintptr_t initial_sp;

void keep_platform_init(uintptr_t boot_arg, struct keep_platform_memory *memory) {
    initial_sp = boot_arg;
    /* PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE */
    long heap = sys6(SYS_mmap, 0, (long)HOSTCHECK_HEAP_SIZE, 3, 0x22 | 0x4000, -1, 0);
    if (heap < 0 && heap > -4096) {
        keep_platform_exit(125);
    }
    memory->heap_start = (uintptr_t)heap;
    memory->heap_end = (uintptr_t)heap + HOSTCHECK_HEAP_SIZE;
    uint64_t limits[2] = {HOSTCHECK_STACK_DEFAULT, HOSTCHECK_STACK_DEFAULT};
    if (sys6(SYS_prlimit64, 0, 3 /* RLIMIT_STACK */, 0, (long)limits, 0, 0) != 0 ||
        limits[0] > (1ul << 30)) {
        limits[0] = HOSTCHECK_STACK_DEFAULT;
    }
    /* The kernel grows the stack on demand up to the limit; leave room for argv/env above. */
    memory->stack_bottom = (boot_arg & ~0xffful) - (uintptr_t)limits[0] + (64ul << 10);
}

long keep_platform_console_write(int fd, const void *buf, size_t len) {
    size_t done = 0;
    while (done < len) {
        long n = sys6(SYS_write, fd, (long)((const char *)buf + done), (long)(len - done), 0, 0, 0);
        if (n == -4) { /* EINTR */
            continue;
        }
        if (n <= 0) {
            return done > 0 ? (long)done : n;
        }
        done += (size_t)n;
    }
    return (long)done;
}

long keep_platform_stdin_read(void *buf, size_t len) {
    for (;;) {
        long n = sys6(SYS_read, 0, (long)buf, (long)len, 0, 0, 0);
        if (n != -4) {
            return n;
        }
    }
}

/* argv and envp as the Linux kernel lays them out at the initial stack pointer. */
long keep_platform_launch_args(void *buf, size_t max) {
    const uintptr_t *sp = (const uintptr_t *)initial_sp;
    uint32_t argc = (uint32_t)sp[0];
    char *const *argv = (char *const *)(sp + 1);
    char *const *envp = argv + argc + 1;
    uint32_t envc = 0;
    while (envp[envc] != 0) {
        envc++;
    }
    uint8_t *out = buf;
    size_t used = 8;
    if (max < used) {
        return -7;
    }
    for (int i = 0; i < 4; i++) {
        out[i] = (uint8_t)(argc >> (8 * i));
        out[4 + i] = (uint8_t)(envc >> (8 * i));
    }
    for (uint32_t i = 0; i < argc + envc; i++) {
        const char *s = i < argc ? argv[i] : envp[i - argc];
        size_t j = 0;
        do {
            if (used >= max) {
                return -7;
            }
            out[used++] = (uint8_t)s[j];
        } while (s[j++] != 0);
    }
    return (long)used;
}

int keep_platform_clock(uint32_t clock_id, uint64_t *nanoseconds) {
    long ts[2];
    long r = sys6(SYS_clock_gettime, clock_id, (long)ts, 0, 0, 0, 0);
    if (r != 0) {
        return (int)r;
    }
    *nanoseconds = (uint64_t)ts[0] * 1000000000ull + (uint64_t)ts[1];
    return 0;
}

_Noreturn void keep_platform_exit(int status) {
    for (;;) {
        sys6(SYS_exit_group, status, 0, 0, 0, 0, 0);
    }
}

/* Linux entry: rsp points at argc; align the stack for the SysV call. */
__asm__(
    ".pushsection .text.keep_start,\"ax\",@progbits\n"
    ".globl _start\n"
    ".type _start,@function\n"
    "_start:\n"
    "  xor %ebp, %ebp\n"
    "  mov %rsp, %rdi\n"
    "  and $-16, %rsp\n"
    "  call keep_runtime_main\n"
    "  ud2\n"
    ".size _start, .-_start\n"
    ".popsection\n");
