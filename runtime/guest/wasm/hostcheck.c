/* keep_platform.h on a Linux host, with raw system calls and no libc ("hostcheck").
 *
 * Links with the very same runtime, WASI and wasm2c objects as the keep image, so that the
 * differential tests against wasmtime exercise the code that runs in the keep. Not part of any
 * keep image.
 *
 * The stack is laid out as in the keep: the runtime runs on its own 8 MiB stack with a
 * PROT_NONE guard page below it, and a SIGSEGV inside that guard (caught on an alternate
 * signal stack) ends the application as the trap "call stack exhausted", as the microkernel
 * does for a ring-3 fault in the keep's guard page. The linear memory's range is a PROT_NONE
 * reservation made accessible page by page (mprotect), and a SIGSEGV inside it ends the
 * application as the trap "out of bounds memory access", as the microkernel does for a ring-3
 * fault in the keep's reserved range. */
#include <stddef.h>
#include <stdint.h>

#include "keep_platform.h"
#include "keep_runtime.h"

#define SYS_read 0
#define SYS_write 1
#define SYS_mmap 9
#define SYS_mprotect 10
#define SYS_rt_sigaction 13
#define SYS_sigaltstack 131
#define SYS_clock_gettime 228
#define SYS_exit_group 231

#define HOSTCHECK_HEAP_SIZE (256ul << 20)
#define HOSTCHECK_STACK_SIZE ((uintptr_t)KEEP_USER_STACK_SIZE) /* as in the keep */
#define HOSTCHECK_GUARD_SIZE 4096ul
#define HOSTCHECK_SIGNAL_STACK_SIZE (64u << 10)

#define PROT_NONE 0
#define PROT_READ_WRITE 3
#define MAP_PRIVATE_ANONYMOUS_NORESERVE (0x02 | 0x20 | 0x4000)
#define SIGSEGV 11
#define SA_SIGINFO 0x4ul
#define SA_ONSTACK 0x08000000ul
#define SA_RESTORER 0x04000000ul
#define SIGINFO_ADDR_OFFSET 16 /* siginfo_t.si_addr on x86-64 */

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
static uintptr_t guard_start, guard_end;
static uintptr_t linear_start, linear_end;
static uint8_t signal_stack[HOSTCHECK_SIGNAL_STACK_SIZE] __attribute__((aligned(16)));

/* struct sigaction as the kernel's rt_sigaction reads it (x86-64), and stack_t. */
struct kernel_sigaction {
    void (*handler)(int, void *, void *);
    unsigned long flags;
    void (*restorer)(void);
    uint64_t mask;
};
struct kernel_stack {
    void *sp;
    int flags;
    size_t size;
};

static long mmap_anonymous(size_t size, int prot) {
    long addr = sys6(SYS_mmap, 0, (long)size, prot, MAP_PRIVATE_ANONYMOUS_NORESERVE, -1, 0);
    if (addr < 0 && addr > -4096) {
        keep_platform_exit(KEEP_FATAL_EXIT_STATUS);
    }
    return addr;
}

void hostcheck_sigreturn(void); /* below, in assembly: rt_sigreturn */

static void on_sigsegv(int signal, void *info, void *context) {
    (void)signal;
    (void)context;
    uintptr_t address = *(const uintptr_t *)((const uint8_t *)info + SIGINFO_ADDR_OFFSET);
    if (address >= guard_start && address < guard_end) {
        keep_stack_exhausted();
    }
    if (address >= linear_start && address < linear_end) {
        keep_out_of_bounds();
    }
    /* Not ours: back to the default action; the faulting instruction runs again and the
     * process dies of SIGSEGV, as it would without this handler. */
    struct kernel_sigaction fallback = {0, 0, 0, 0};
    sys6(SYS_rt_sigaction, SIGSEGV, (long)&fallback, 0, sizeof(uint64_t), 0, 0);
}

/* Called by _start on the Linux stack: a fresh stack with a guard page below it, and the
 * SIGSEGV handler that watches the guard. Returns the new (16-byte aligned) stack top. */
uintptr_t hostcheck_stack_top(void);
uintptr_t hostcheck_stack_top(void) {
    long base = mmap_anonymous(HOSTCHECK_GUARD_SIZE + HOSTCHECK_STACK_SIZE, PROT_READ_WRITE);
    if (sys6(SYS_mprotect, base, (long)HOSTCHECK_GUARD_SIZE, PROT_NONE, 0, 0, 0) != 0) {
        keep_platform_exit(KEEP_FATAL_EXIT_STATUS);
    }
    guard_start = (uintptr_t)base;
    guard_end = guard_start + HOSTCHECK_GUARD_SIZE;
    struct kernel_stack alternate = {signal_stack, 0, sizeof(signal_stack)};
    struct kernel_sigaction action = {
        on_sigsegv, SA_SIGINFO | SA_ONSTACK | SA_RESTORER, hostcheck_sigreturn, 0};
    if (sys6(SYS_sigaltstack, (long)&alternate, 0, 0, 0, 0, 0) != 0 ||
        sys6(SYS_rt_sigaction, SIGSEGV, (long)&action, 0, sizeof(uint64_t), 0, 0) != 0) {
        keep_platform_exit(KEEP_FATAL_EXIT_STATUS);
    }
    return guard_end + HOSTCHECK_STACK_SIZE;
}

void keep_platform_init(uintptr_t boot_arg, struct keep_platform_memory *memory) {
    initial_sp = boot_arg;
    long heap = mmap_anonymous(HOSTCHECK_HEAP_SIZE, PROT_READ_WRITE);
    memory->heap_start = (uintptr_t)heap;
    memory->heap_end = (uintptr_t)heap + HOSTCHECK_HEAP_SIZE;
}

uintptr_t keep_platform_linear_reserve(void) {
    long base = mmap_anonymous(KEEP_LINEAR_RESERVE, PROT_NONE);
    linear_start = (uintptr_t)base;
    linear_end = linear_start + KEEP_LINEAR_RESERVE;
    return linear_start;
}

int keep_platform_linear_map(uintptr_t base, size_t size) {
    return sys6(SYS_mprotect, (long)base, (long)size, PROT_READ_WRITE, 0, 0, 0) == 0 ? 0 : -1;
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
/* No trees and no attestation on a Linux host. */
long keep_platform_trees_read(void *buf, size_t len, uint64_t position, uint64_t *total) {
    (void)buf, (void)len, (void)position;
    *total = 0;
    return 0;
}

const uint8_t *keep_platform_attested_report_data(void) { return NULL; }

/* No trees, so nothing to hand back. */
long keep_platform_result_write(const void *buf, size_t len, uint64_t position, uint64_t total) {
    (void)buf, (void)len, (void)position, (void)total;
    return -38; /* ENOSYS: never called without trees */
}

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

/* Linux entry: rsp points at argc. Move to the guarded stack, then the SysV call with the
 * initial stack pointer (argv and envp stay where the kernel put them). */
__asm__(
    ".pushsection .text.keep_start,\"ax\",@progbits\n"
    ".globl _start\n"
    ".type _start,@function\n"
    "_start:\n"
    "  xor %ebp, %ebp\n"
    "  mov %rsp, %rbx\n"
    "  and $-16, %rsp\n"
    "  call hostcheck_stack_top\n"
    "  mov %rax, %rsp\n"
    "  mov %rbx, %rdi\n"
    "  call keep_runtime_main\n"
    "  ud2\n"
    ".size _start, .-_start\n"
    ".globl hostcheck_sigreturn\n"
    ".type hostcheck_sigreturn,@function\n"
    "hostcheck_sigreturn:\n"
    "  mov $15, %eax\n" /* rt_sigreturn */
    "  syscall\n"
    "  ud2\n"
    ".size hostcheck_sigreturn, .-hostcheck_sigreturn\n"
    ".popsection\n");
