/* WASI preview 1 inside the keep: args, environ, clocks, random (RDRAND/RDSEED, never the
 * host), stdio, proc_exit, fd_fdstat_get and the prestat calls (no preopened directories).
 * Everything else returns ENOSYS. Every pointer and length from the application is checked
 * against its linear memory before use: a bad one is EFAULT, never a crash. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keep_platform.h"
#include "keep_runtime.h"
#include "keep_wasi.h"

/* WASI errno values (preview 1). */
#define WASI_ESUCCESS 0
#define WASI_EBADF 8
#define WASI_EFAULT 21
#define WASI_EINVAL 28
#define WASI_EIO 29
#define WASI_ENOSYS 52

#define WASI_FILETYPE_CHARACTER_DEVICE 2
#define WASI_RIGHT_FD_READ (1ull << 1)
#define WASI_RIGHT_FD_WRITE (1ull << 6)
#define WASI_RIGHT_POLL_FD_READWRITE (1ull << 27)

#define LAUNCH_ARGS_MAX (64u << 10)

struct w2c_wasi__snapshot__preview1 {
    wasm_rt_memory_t *memory;
};

static struct w2c_wasi__snapshot__preview1 wasi_instance;

/* The launch arguments: argc strings, then envc strings, all inside one blob. */
static uint32_t arg_count;
static uint32_t env_count;
static const char **strings; /* arg_count + env_count entries */
static uint32_t arg_bytes;   /* sum of (strlen + 1) over the arguments */
static uint32_t env_bytes;

struct w2c_wasi__snapshot__preview1 *keep_wasi_instance(void) { return &wasi_instance; }

void keep_wasi_bind_memory(wasm_rt_memory_t *memory) { wasi_instance.memory = memory; }

static uint32_t load_u32le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void keep_wasi_init(void) {
    uint8_t *blob = malloc(LAUNCH_ARGS_MAX);
    if (blob == NULL) {
        keep_fatal("out of memory for the launch arguments");
    }
    long length = keep_platform_launch_args(blob, LAUNCH_ARGS_MAX);
    if (length < 8) {
        keep_fatal("the launch arguments are missing or too large");
    }
    arg_count = load_u32le(blob);
    env_count = load_u32le(blob + 4);
    uint64_t total = (uint64_t)arg_count + env_count;
    if (total > (uint64_t)length) { /* each string takes at least its NUL */
        keep_fatal("malformed launch arguments (counts exceed the blob)");
    }
    strings = malloc(sizeof(char *) * (total ? total : 1));
    if (strings == NULL) {
        keep_fatal("out of memory for the launch arguments");
    }
    size_t at = 8;
    for (uint64_t i = 0; i < total; i++) {
        const char *s = (const char *)blob + at;
        size_t n = strnlen(s, (size_t)length - at);
        if (at + n >= (size_t)length) {
            keep_fatal("malformed launch arguments (a string is not NUL-terminated)");
        }
        strings[i] = s;
        if (i < arg_count) {
            arg_bytes += (uint32_t)(n + 1);
        } else {
            env_bytes += (uint32_t)(n + 1);
        }
        at += n + 1;
    }
}

/* ---- linear memory access ---------------------------------------------------------------- */

static bool span_ok(const wasm_rt_memory_t *mem, uint32_t ptr, uint64_t len) {
    return mem != NULL && (uint64_t)ptr + len <= mem->size;
}

static void store_u32(wasm_rt_memory_t *mem, uint32_t ptr, uint32_t v) {
    memcpy(mem->data + ptr, &v, 4);
}

static void store_u64(wasm_rt_memory_t *mem, uint32_t ptr, uint64_t v) {
    memcpy(mem->data + ptr, &v, 8);
}

static uint32_t load_u32(const wasm_rt_memory_t *mem, uint32_t ptr) {
    uint32_t v;
    memcpy(&v, mem->data + ptr, 4);
    return v;
}

/* ---- args and environ -------------------------------------------------------------------- */

static uint32_t sizes_get(struct w2c_wasi__snapshot__preview1 *w, uint32_t count_ptr,
                          uint32_t size_ptr, uint32_t count, uint32_t bytes) {
    wasm_rt_memory_t *mem = w->memory;
    if (!span_ok(mem, count_ptr, 4) || !span_ok(mem, size_ptr, 4)) {
        return WASI_EFAULT;
    }
    store_u32(mem, count_ptr, count);
    store_u32(mem, size_ptr, bytes);
    return WASI_ESUCCESS;
}

static uint32_t strings_get(struct w2c_wasi__snapshot__preview1 *w, uint32_t list_ptr,
                            uint32_t buf_ptr, uint32_t first, uint32_t count, uint32_t bytes) {
    wasm_rt_memory_t *mem = w->memory;
    if (!span_ok(mem, list_ptr, (uint64_t)count * 4) || !span_ok(mem, buf_ptr, bytes)) {
        return WASI_EFAULT;
    }
    uint32_t at = buf_ptr;
    for (uint32_t i = 0; i < count; i++) {
        const char *s = strings[first + i];
        uint32_t n = (uint32_t)strlen(s) + 1;
        store_u32(mem, list_ptr + 4 * i, at);
        memcpy(mem->data + at, s, n);
        at += n;
    }
    return WASI_ESUCCESS;
}

uint32_t w2c_wasi__snapshot__preview1_args_sizes_get(struct w2c_wasi__snapshot__preview1 *w,
                                                     uint32_t argc_ptr, uint32_t size_ptr) {
    return sizes_get(w, argc_ptr, size_ptr, arg_count, arg_bytes);
}

uint32_t w2c_wasi__snapshot__preview1_args_get(struct w2c_wasi__snapshot__preview1 *w,
                                               uint32_t argv_ptr, uint32_t buf_ptr) {
    return strings_get(w, argv_ptr, buf_ptr, 0, arg_count, arg_bytes);
}

uint32_t w2c_wasi__snapshot__preview1_environ_sizes_get(struct w2c_wasi__snapshot__preview1 *w,
                                                        uint32_t count_ptr, uint32_t size_ptr) {
    return sizes_get(w, count_ptr, size_ptr, env_count, env_bytes);
}

uint32_t w2c_wasi__snapshot__preview1_environ_get(struct w2c_wasi__snapshot__preview1 *w,
                                                  uint32_t env_ptr, uint32_t buf_ptr) {
    return strings_get(w, env_ptr, buf_ptr, arg_count, env_count, env_bytes);
}

/* ---- clocks ------------------------------------------------------------------------------ */

/* Realtime and monotonic come from the host (untrusted; WASI clocks only). The CPU-time clocks
 * are answered with the monotonic clock: the keep runs one process on its own vCPU. */
static int clock_source(uint32_t id) {
    switch (id) {
    case 0:
        return 0;
    case 1:
    case 2:
    case 3:
        return 1;
    default:
        return -1;
    }
}

uint32_t w2c_wasi__snapshot__preview1_clock_res_get(struct w2c_wasi__snapshot__preview1 *w,
                                                    uint32_t id, uint32_t res_ptr) {
    if (clock_source(id) < 0) {
        return WASI_EINVAL;
    }
    if (!span_ok(w->memory, res_ptr, 8)) {
        return WASI_EFAULT;
    }
    store_u64(w->memory, res_ptr, 1);
    return WASI_ESUCCESS;
}

uint32_t w2c_wasi__snapshot__preview1_clock_time_get(struct w2c_wasi__snapshot__preview1 *w,
                                                     uint32_t id, uint64_t precision,
                                                     uint32_t time_ptr) {
    (void)precision;
    int source = clock_source(id);
    if (source < 0) {
        return WASI_EINVAL;
    }
    if (!span_ok(w->memory, time_ptr, 8)) {
        return WASI_EFAULT;
    }
    uint64_t ns = 0;
    if (keep_platform_clock((uint32_t)source, &ns) != 0) {
        return WASI_EIO;
    }
    store_u64(w->memory, time_ptr, ns);
    return WASI_ESUCCESS;
}

/* ---- random: from the CPU inside the keep, never from the host --------------------------- */

static bool hw_random64(uint64_t *out) {
    for (int i = 0; i < 32; i++) {
        unsigned char ok;
        __asm__ volatile("rdrand %0; setc %1" : "=r"(*out), "=qm"(ok));
        if (ok) {
            return true;
        }
    }
    for (int i = 0; i < 256; i++) {
        unsigned char ok;
        __asm__ volatile("rdseed %0; setc %1" : "=r"(*out), "=qm"(ok));
        if (ok) {
            return true;
        }
        __asm__ volatile("pause");
    }
    return false;
}

uint32_t w2c_wasi__snapshot__preview1_random_get(struct w2c_wasi__snapshot__preview1 *w,
                                                 uint32_t buf_ptr, uint32_t len) {
    if (!span_ok(w->memory, buf_ptr, len)) {
        return WASI_EFAULT;
    }
    uint8_t *out = w->memory->data + buf_ptr;
    while (len > 0) {
        uint64_t r;
        if (!hw_random64(&r)) {
            return WASI_EIO;
        }
        uint32_t n = len < 8 ? len : 8;
        memcpy(out, &r, n);
        out += n;
        len -= n;
    }
    return WASI_ESUCCESS;
}

/* ---- stdio ------------------------------------------------------------------------------- */

uint32_t w2c_wasi__snapshot__preview1_fd_write(struct w2c_wasi__snapshot__preview1 *w,
                                               uint32_t fd, uint32_t iovs, uint32_t iovs_len,
                                               uint32_t nwritten_ptr) {
    wasm_rt_memory_t *mem = w->memory;
    if (fd != 1 && fd != 2) {
        return WASI_EBADF;
    }
    if (!span_ok(mem, iovs, (uint64_t)iovs_len * 8) || !span_ok(mem, nwritten_ptr, 4)) {
        return WASI_EFAULT;
    }
    for (uint32_t i = 0; i < iovs_len; i++) {
        if (!span_ok(mem, load_u32(mem, iovs + 8 * i), load_u32(mem, iovs + 8 * i + 4))) {
            return WASI_EFAULT;
        }
    }
    /* Gather into one staging buffer so that many small iovecs cost one console write. */
    static uint8_t staging[16384];
    size_t staged = 0;
    uint64_t total = 0;
    for (uint32_t i = 0; i < iovs_len; i++) {
        uint32_t ptr = load_u32(mem, iovs + 8 * i);
        uint32_t len = load_u32(mem, iovs + 8 * i + 4);
        while (len > 0) {
            size_t n = sizeof staging - staged;
            if (n > len) {
                n = len;
            }
            memcpy(staging + staged, mem->data + ptr, n);
            staged += n;
            ptr += (uint32_t)n;
            len -= (uint32_t)n;
            if (staged == sizeof staging) {
                if (keep_platform_console_write((int)fd, staging, staged) != (long)staged) {
                    return WASI_EIO;
                }
                total += staged;
                staged = 0;
            }
        }
    }
    if (staged > 0) {
        if (keep_platform_console_write((int)fd, staging, staged) != (long)staged) {
            return WASI_EIO;
        }
        total += staged;
    }
    store_u32(mem, nwritten_ptr, (uint32_t)total);
    return WASI_ESUCCESS;
}

uint32_t w2c_wasi__snapshot__preview1_fd_read(struct w2c_wasi__snapshot__preview1 *w,
                                              uint32_t fd, uint32_t iovs, uint32_t iovs_len,
                                              uint32_t nread_ptr) {
    wasm_rt_memory_t *mem = w->memory;
    if (fd != 0) {
        return WASI_EBADF;
    }
    if (!span_ok(mem, iovs, (uint64_t)iovs_len * 8) || !span_ok(mem, nread_ptr, 4)) {
        return WASI_EFAULT;
    }
    for (uint32_t i = 0; i < iovs_len; i++) {
        if (!span_ok(mem, load_u32(mem, iovs + 8 * i), load_u32(mem, iovs + 8 * i + 4))) {
            return WASI_EFAULT;
        }
    }
    uint32_t total = 0;
    for (uint32_t i = 0; i < iovs_len; i++) {
        uint32_t ptr = load_u32(mem, iovs + 8 * i);
        uint32_t len = load_u32(mem, iovs + 8 * i + 4);
        if (len == 0) {
            continue;
        }
        long n = keep_platform_stdin_read(mem->data + ptr, len);
        if (n < 0) {
            if (total > 0) {
                break;
            }
            return WASI_EIO;
        }
        total += (uint32_t)n;
        if ((uint32_t)n < len) {
            break; /* short read: do not block for more */
        }
    }
    store_u32(mem, nread_ptr, total);
    return WASI_ESUCCESS;
}

uint32_t w2c_wasi__snapshot__preview1_fd_fdstat_get(struct w2c_wasi__snapshot__preview1 *w,
                                                    uint32_t fd, uint32_t stat_ptr) {
    if (fd > 2) {
        return WASI_EBADF;
    }
    if (!span_ok(w->memory, stat_ptr, 24)) {
        return WASI_EFAULT;
    }
    uint8_t stat[24] = {0};
    stat[0] = WASI_FILETYPE_CHARACTER_DEVICE; /* fs_filetype; fs_flags (u16 at 2) = 0 */
    uint64_t rights = (fd == 0 ? WASI_RIGHT_FD_READ : WASI_RIGHT_FD_WRITE) |
                      WASI_RIGHT_POLL_FD_READWRITE;
    memcpy(stat + 8, &rights, 8); /* fs_rights_base; fs_rights_inheriting (at 16) = 0 */
    memcpy(w->memory->data + stat_ptr, stat, sizeof stat);
    return WASI_ESUCCESS;
}

/* No preopened directories: every descriptor answers "not a preopen", which is how WASI libcs
 * find the end of the preopen list. */
uint32_t w2c_wasi__snapshot__preview1_fd_prestat_get(struct w2c_wasi__snapshot__preview1 *w,
                                                     uint32_t fd, uint32_t prestat_ptr) {
    (void)w, (void)fd, (void)prestat_ptr;
    return WASI_EBADF;
}

uint32_t w2c_wasi__snapshot__preview1_fd_prestat_dir_name(struct w2c_wasi__snapshot__preview1 *w,
                                                          uint32_t fd, uint32_t path_ptr,
                                                          uint32_t path_len) {
    (void)w, (void)fd, (void)path_ptr, (void)path_len;
    return WASI_EBADF;
}

void w2c_wasi__snapshot__preview1_proc_exit(struct w2c_wasi__snapshot__preview1 *w,
                                            uint32_t code) {
    (void)w;
    keep_platform_exit((int)code);
}

/* ---- everything else: ENOSYS --------------------------------------------------------------- */

#define I32 uint32_t
#define I64 uint64_t
#define ENOSYS_FN(name, ...)                                                                   \
    uint32_t w2c_wasi__snapshot__preview1_##name(struct w2c_wasi__snapshot__preview1 *w,        \
                                                 __VA_ARGS__) {                                 \
        (void)w;                                                                               \
        return WASI_ENOSYS;                                                                    \
    }

ENOSYS_FN(fd_advise, I32 a, I64 b, I64 c, I32 d)
ENOSYS_FN(fd_allocate, I32 a, I64 b, I64 c)
ENOSYS_FN(fd_close, I32 a)
ENOSYS_FN(fd_datasync, I32 a)
ENOSYS_FN(fd_fdstat_set_flags, I32 a, I32 b)
ENOSYS_FN(fd_fdstat_set_rights, I32 a, I64 b, I64 c)
ENOSYS_FN(fd_filestat_get, I32 a, I32 b)
ENOSYS_FN(fd_filestat_set_size, I32 a, I64 b)
ENOSYS_FN(fd_filestat_set_times, I32 a, I64 b, I64 c, I32 d)
ENOSYS_FN(fd_pread, I32 a, I32 b, I32 c, I64 d, I32 e)
ENOSYS_FN(fd_pwrite, I32 a, I32 b, I32 c, I64 d, I32 e)
ENOSYS_FN(fd_readdir, I32 a, I32 b, I32 c, I64 d, I32 e)
ENOSYS_FN(fd_renumber, I32 a, I32 b)
ENOSYS_FN(fd_seek, I32 a, I64 b, I32 c, I32 d)
ENOSYS_FN(fd_sync, I32 a)
ENOSYS_FN(fd_tell, I32 a, I32 b)
ENOSYS_FN(path_create_directory, I32 a, I32 b, I32 c)
ENOSYS_FN(path_filestat_get, I32 a, I32 b, I32 c, I32 d, I32 e)
ENOSYS_FN(path_filestat_set_times, I32 a, I32 b, I32 c, I32 d, I64 e, I64 f, I32 g)
ENOSYS_FN(path_link, I32 a, I32 b, I32 c, I32 d, I32 e, I32 f, I32 g)
ENOSYS_FN(path_open, I32 a, I32 b, I32 c, I32 d, I32 e, I64 f, I64 g, I32 h, I32 i)
ENOSYS_FN(path_readlink, I32 a, I32 b, I32 c, I32 d, I32 e, I32 f)
ENOSYS_FN(path_remove_directory, I32 a, I32 b, I32 c)
ENOSYS_FN(path_rename, I32 a, I32 b, I32 c, I32 d, I32 e, I32 f)
ENOSYS_FN(path_symlink, I32 a, I32 b, I32 c, I32 d, I32 e)
ENOSYS_FN(path_unlink_file, I32 a, I32 b, I32 c)
ENOSYS_FN(poll_oneoff, I32 a, I32 b, I32 c, I32 d)
ENOSYS_FN(proc_raise, I32 a)
ENOSYS_FN(sock_accept, I32 a, I32 b, I32 c)
ENOSYS_FN(sock_recv, I32 a, I32 b, I32 c, I32 d, I32 e, I32 f)
ENOSYS_FN(sock_send, I32 a, I32 b, I32 c, I32 d, I32 e)
ENOSYS_FN(sock_shutdown, I32 a, I32 b)

uint32_t w2c_wasi__snapshot__preview1_sched_yield(struct w2c_wasi__snapshot__preview1 *w) {
    (void)w;
    return WASI_ENOSYS;
}
