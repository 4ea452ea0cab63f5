/* WASI preview 1 inside the keep: args, environ, clocks, random (RDRAND/RDSEED, never the
 * host), the three stdio streams as descriptors 0-2 (read, write, close, renumber, fdstat,
 * filestat, poll), poll_oneoff with clocks, sched_yield, proc_exit; proc_raise and the socket
 * calls answer as wasmtime does. Files, directories and the descriptor table are wasi_fs.c's:
 * each call here hands a descriptor that is not a stdio stream over to it.
 *
 * Where wasmtime's answer is defined, this file gives the same one (tests/test_wasi_differential.py
 * and tests/wat/wasi_preview1_stdio.wat); where wasmtime traps (a bad pointer, an enum or flag
 * value outside the spec) the keep answers EFAULT or EINVAL instead. Every pointer and length
 * from the application is checked against its linear memory before use: never a crash. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keep_platform.h"
#include "keep_runtime.h"
#include "keep_wasi.h"
#include "wasi_private.h"

#define LAUNCH_ARGS_MAX (64u << 10)

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

/* ---- descriptors: the three stdio streams ------------------------------------------------
 * Descriptors 0-2 start as stdin, stdout and stderr; fd_close closes one and fd_renumber moves
 * one, as in wasmtime. With no preopens there is nothing else to open. */

enum { STREAM_STDIN = 0, STREAM_STDOUT = 1, STREAM_STDERR = 2 };

/* The stream behind fd, or STREAM_NONE (a file, a directory, or no such descriptor). */
static int stream_of(uint32_t fd) { return keep_fd_stream(fd); }

static bool is_output(int stream) { return stream == STREAM_STDOUT || stream == STREAM_STDERR; }

/* The rights wasmtime gives a stdio stream (base and inheriting alike). */
static uint64_t stream_rights(int stream) {
    return stream == STREAM_STDIN ? WASI_RIGHT_FD_READ : WASI_RIGHT_FD_WRITE;
}

uint32_t w2c_wasi__snapshot__preview1_fd_write(struct w2c_wasi__snapshot__preview1 *w,
                                               uint32_t fd, uint32_t iovs, uint32_t iovs_len,
                                               uint32_t nwritten_ptr) {
    wasm_rt_memory_t *mem = w->memory;
    int stream = stream_of(fd);
    if (stream == STREAM_NONE) {
        return keep_fs_write(mem, fd, iovs, iovs_len, nwritten_ptr, false, 0);
    }
    if (!is_output(stream)) {
        return WASI_EBADF;
    }
    if (!iovecs_ok(mem, iovs, iovs_len, nwritten_ptr)) {
        return WASI_EFAULT;
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
                if (keep_platform_console_write(stream, staging, staged) != (long)staged) {
                    return WASI_EIO;
                }
                total += staged;
                staged = 0;
            }
        }
    }
    if (staged > 0) {
        if (keep_platform_console_write(stream, staging, staged) != (long)staged) {
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
    int stream = stream_of(fd);
    if (stream == STREAM_NONE) {
        return keep_fs_read(mem, fd, iovs, iovs_len, nread_ptr, false, 0);
    }
    if (stream != STREAM_STDIN) {
        return WASI_EBADF;
    }
    if (!iovecs_ok(mem, iovs, iovs_len, nread_ptr)) {
        return WASI_EFAULT;
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

/* stdio is a character device (as wasmtime answers on a terminal): a libc line-buffers stdout,
 * so the lines before a trap are not lost. The keep's console is a stream whatever the host's
 * stdio is, so it never answers "regular file" or "pipe". */
uint32_t w2c_wasi__snapshot__preview1_fd_fdstat_get(struct w2c_wasi__snapshot__preview1 *w,
                                                    uint32_t fd, uint32_t stat_ptr) {
    int stream = stream_of(fd);
    if (stream == STREAM_NONE) {
        return keep_fs_fdstat(w->memory, fd, stat_ptr);
    }
    if (!span_ok(w->memory, stat_ptr, 24)) {
        return WASI_EFAULT;
    }
    uint8_t stat[24] = {0};
    stat[0] = WASI_FILETYPE_CHARACTER_DEVICE; /* fs_filetype; fs_flags (u16 at 2) = 0 */
    uint64_t rights = stream_rights(stream);
    memcpy(stat + 8, &rights, 8);  /* fs_rights_base */
    memcpy(stat + 16, &rights, 8); /* fs_rights_inheriting */
    memcpy(w->memory->data + stat_ptr, stat, sizeof stat);
    return WASI_ESUCCESS;
}

/* wasmtime's filestat of a stdio stream: only the file type, every other field 0. */
uint32_t w2c_wasi__snapshot__preview1_fd_filestat_get(struct w2c_wasi__snapshot__preview1 *w,
                                                      uint32_t fd, uint32_t stat_ptr) {
    if (stream_of(fd) == STREAM_NONE) {
        return keep_fs_filestat(w->memory, fd, stat_ptr);
    }
    if (!span_ok(w->memory, stat_ptr, 64)) {
        return WASI_EFAULT;
    }
    uint8_t stat[64] = {0}; /* dev, ino, filetype (u8 at 16), nlink, size, atim, mtim, ctim */
    stat[16] = WASI_FILETYPE_CHARACTER_DEVICE;
    memcpy(w->memory->data + stat_ptr, stat, sizeof stat);
    return WASI_ESUCCESS;
}

/* Streams cannot seek: ESPIPE (wasmtime), for any valid whence. */
uint32_t w2c_wasi__snapshot__preview1_fd_seek(struct w2c_wasi__snapshot__preview1 *w, uint32_t fd,
                                              uint64_t offset, uint32_t whence,
                                              uint32_t newoffset_ptr) {
    if (whence > 2) {
        return WASI_EINVAL;
    }
    if (stream_of(fd) == STREAM_NONE) {
        return keep_fs_seek(w->memory, fd, (int64_t)offset, whence, newoffset_ptr);
    }
    return WASI_ESPIPE;
}

uint32_t w2c_wasi__snapshot__preview1_fd_tell(struct w2c_wasi__snapshot__preview1 *w, uint32_t fd,
                                              uint32_t offset_ptr) {
    if (stream_of(fd) == STREAM_NONE) {
        return keep_fs_seek(w->memory, fd, 0, 1, offset_ptr);
    }
    return WASI_ESPIPE;
}

/* Positional I/O on a stream it could otherwise do is ESPIPE; without the right, EBADF. */
uint32_t w2c_wasi__snapshot__preview1_fd_pread(struct w2c_wasi__snapshot__preview1 *w, uint32_t fd,
                                               uint32_t iovs, uint32_t iovs_len, uint64_t offset,
                                               uint32_t nread_ptr) {
    int stream = stream_of(fd);
    if (stream == STREAM_NONE) {
        return keep_fs_read(w->memory, fd, iovs, iovs_len, nread_ptr, true, offset);
    }
    return stream == STREAM_STDIN ? WASI_ESPIPE : WASI_EBADF;
}

uint32_t w2c_wasi__snapshot__preview1_fd_pwrite(struct w2c_wasi__snapshot__preview1 *w,
                                                uint32_t fd, uint32_t iovs, uint32_t iovs_len,
                                                uint64_t offset, uint32_t nwritten_ptr) {
    int stream = stream_of(fd);
    if (stream == STREAM_NONE) {
        return keep_fs_write(w->memory, fd, iovs, iovs_len, nwritten_ptr, true, offset);
    }
    return is_output(stream) ? WASI_ESPIPE : WASI_EBADF;
}

/* ---- poll_oneoff -----------------------------------------------------------------------------
 * Subscriptions (48 bytes): userdata u64, tag u8 at 8 (0 clock, 1 fd_read, 2 fd_write), then at
 * 16 either clock {id u32, timeout u64 at 24, precision u64 at 32, flags u16 at 40} or fd u32.
 * Events (32 bytes): userdata u64, error u16 at 8, type u8 at 10, nbytes u64 at 16, flags u16
 * at 24. A stdio stream is always ready (nbytes 1, as wasmtime reports): the keep cannot ask the
 * host whether stdin has data, and a read that finds none waits for it or reads end of file.
 * With no descriptor ready the call waits for the earliest clock; then it reports every ready
 * descriptor and every clock whose time has come, in subscription order. */

#define SUBSCRIPTION_SIZE 48
#define EVENT_SIZE 32
#define EVENTTYPE_CLOCK 0
#define EVENTTYPE_FD_READ 1
#define EVENTTYPE_FD_WRITE 2
#define SUBCLOCK_ABSTIME 1u

static uint64_t saturating_add(uint64_t a, uint64_t b) { return a + b < a ? UINT64_MAX : a + b; }

/* The monotonic deadline of a clock subscription, or a WASI errno (through *errno_out). */
static bool clock_deadline(const wasm_rt_memory_t *mem, uint32_t sub, uint64_t now_mono,
                           uint64_t *deadline, uint32_t *errno_out) {
    uint32_t id = load_u32(mem, sub + 16);
    uint64_t timeout = load_u64(mem, sub + 24);
    uint16_t flags;
    memcpy(&flags, mem->data + sub + 40, 2);
    if ((flags & ~SUBCLOCK_ABSTIME) != 0 || (id != 0 && id != 1)) {
        *errno_out = WASI_EINVAL; /* wasmtime refuses the CPU-time clocks here too */
        return false;
    }
    if (!(flags & SUBCLOCK_ABSTIME)) {
        *deadline = saturating_add(now_mono, timeout);
        return true;
    }
    if (id == 1) {
        *deadline = timeout;
        return true;
    }
    uint64_t now_real = 0;
    if (keep_platform_clock(0, &now_real) != 0) {
        *errno_out = WASI_EIO;
        return false;
    }
    *deadline = saturating_add(now_mono, timeout > now_real ? timeout - now_real : 0);
    return true;
}

static void store_event(wasm_rt_memory_t *mem, uint32_t at, uint64_t userdata, uint8_t type,
                        uint64_t nbytes) {
    uint8_t event[EVENT_SIZE] = {0};
    memcpy(event, &userdata, 8);
    event[10] = type;
    memcpy(event + 16, &nbytes, 8);
    memcpy(mem->data + at, event, sizeof event);
}

uint32_t w2c_wasi__snapshot__preview1_poll_oneoff(struct w2c_wasi__snapshot__preview1 *w,
                                                  uint32_t in, uint32_t out, uint32_t nsubs,
                                                  uint32_t nevents_ptr) {
    wasm_rt_memory_t *mem = w->memory;
    if (nsubs == 0) {
        return WASI_EINVAL;
    }
    if (!span_ok(mem, in, (uint64_t)nsubs * SUBSCRIPTION_SIZE) ||
        !span_ok(mem, out, (uint64_t)nsubs * EVENT_SIZE) || !span_ok(mem, nevents_ptr, 4)) {
        return WASI_EFAULT;
    }
    uint64_t start = 0;
    if (keep_platform_clock(1, &start) != 0) {
        return WASI_EIO;
    }
    /* First pass: check every subscription (one bad one fails the call, as in wasmtime). */
    uint64_t earliest = UINT64_MAX;
    bool fd_ready = false;
    for (uint32_t i = 0; i < nsubs; i++) {
        uint32_t sub = in + i * SUBSCRIPTION_SIZE;
        uint8_t tag = mem->data[sub + 8];
        if (tag == EVENTTYPE_CLOCK) {
            uint64_t deadline;
            uint32_t errno_value;
            if (!clock_deadline(mem, sub, start, &deadline, &errno_value)) {
                return errno_value;
            }
            earliest = deadline < earliest ? deadline : earliest;
        } else if (tag == EVENTTYPE_FD_READ || tag == EVENTTYPE_FD_WRITE) {
            uint32_t fd = load_u32(mem, sub + 16);
            int stream = stream_of(fd);
            bool ok = tag == EVENTTYPE_FD_READ ? stream == STREAM_STDIN : is_output(stream);
            if (!ok && !keep_fd_is_fs(fd, tag == EVENTTYPE_FD_WRITE)) {
                return WASI_EBADF;
            }
            fd_ready = true;
        } else {
            return WASI_EINVAL;
        }
    }
    /* No descriptor ready: wait for the earliest clock. The host's monotonic clock is the only
     * time source (no timer interrupts in the keep), so this asks it until the time has come. */
    uint64_t now = start;
    while (!fd_ready && now < earliest) {
        if (keep_platform_clock(1, &now) != 0) {
            return WASI_EIO;
        }
    }
    /* Second pass: the events. Relative timeouts count from the call's start. */
    uint32_t count = 0;
    for (uint32_t i = 0; i < nsubs; i++) {
        uint32_t sub = in + i * SUBSCRIPTION_SIZE;
        uint64_t userdata = load_u64(mem, sub);
        uint8_t tag = mem->data[sub + 8];
        uint64_t deadline = 0;
        uint32_t errno_value;
        if (tag != EVENTTYPE_CLOCK) {
            store_event(mem, out + count++ * EVENT_SIZE, userdata, tag, 1);
        } else if (!clock_deadline(mem, sub, start, &deadline, &errno_value)) {
            return errno_value;
        } else if (deadline <= now) {
            store_event(mem, out + count++ * EVENT_SIZE, userdata, EVENTTYPE_CLOCK, 0);
        }
    }
    store_u32(mem, nevents_ptr, count);
    return WASI_ESUCCESS;
}

/* ---- process, scheduling, signals, sockets ------------------------------------------------ */

void w2c_wasi__snapshot__preview1_proc_exit(struct w2c_wasi__snapshot__preview1 *w,
                                            uint32_t code) {
    (void)w;
    keep_app_exit((int)code);
}

/* One application on its own vCPU: there is nobody to yield to. */
uint32_t w2c_wasi__snapshot__preview1_sched_yield(struct w2c_wasi__snapshot__preview1 *w) {
    (void)w;
    return WASI_ESUCCESS;
}

/* The spec lets a host refuse signals: ENOTSUP for every signal of the enum (0-30), as
 * wasmtime answers; a value outside the enum is EINVAL (wasmtime traps). */
uint32_t w2c_wasi__snapshot__preview1_proc_raise(struct w2c_wasi__snapshot__preview1 *w,
                                                 uint32_t sig) {
    (void)w;
    return sig > 30 ? WASI_EINVAL : WASI_ENOTSUP;
}

/* No descriptor is a socket: a stdio stream is ENOTSOCK, anything else EBADF (wasmtime).
 * Flag values outside the spec's sets are EINVAL (wasmtime traps); nothing is read or written. */
static uint32_t not_a_socket(uint32_t fd) {
    return keep_fd_is_open(fd) ? WASI_ENOTSOCK : WASI_EBADF;
}

#define FDFLAGS_ALL 0x1fu
#define RIFLAGS_ALL 0x3u
#define SDFLAGS_ALL 0x3u

uint32_t w2c_wasi__snapshot__preview1_sock_accept(struct w2c_wasi__snapshot__preview1 *w,
                                                  uint32_t fd, uint32_t flags, uint32_t fd_ptr) {
    (void)w, (void)fd_ptr;
    return (flags & ~FDFLAGS_ALL) != 0 ? WASI_EINVAL : not_a_socket(fd);
}

uint32_t w2c_wasi__snapshot__preview1_sock_recv(struct w2c_wasi__snapshot__preview1 *w,
                                                uint32_t fd, uint32_t iovs, uint32_t iovs_len,
                                                uint32_t riflags, uint32_t nread_ptr,
                                                uint32_t roflags_ptr) {
    (void)w, (void)iovs, (void)iovs_len, (void)nread_ptr, (void)roflags_ptr;
    return (riflags & ~RIFLAGS_ALL) != 0 ? WASI_EINVAL : not_a_socket(fd);
}

uint32_t w2c_wasi__snapshot__preview1_sock_send(struct w2c_wasi__snapshot__preview1 *w,
                                                uint32_t fd, uint32_t iovs, uint32_t iovs_len,
                                                uint32_t siflags, uint32_t nwritten_ptr) {
    (void)w, (void)iovs, (void)iovs_len, (void)siflags, (void)nwritten_ptr;
    return not_a_socket(fd);
}

uint32_t w2c_wasi__snapshot__preview1_sock_shutdown(struct w2c_wasi__snapshot__preview1 *w,
                                                    uint32_t fd, uint32_t how) {
    (void)w;
    return (how & ~SDFLAGS_ALL) != 0 ? WASI_EINVAL : not_a_socket(fd);
}
