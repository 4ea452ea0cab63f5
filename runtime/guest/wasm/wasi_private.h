/* Shared by wasi.c and wasi_fs.c (never by the application): the WASI instance, linear-memory
 * access that checks every span first, the errno values and the descriptor table's view of the
 * stdio streams. */
#ifndef KEEP_WASI_PRIVATE_H
#define KEEP_WASI_PRIVATE_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "wasm-rt.h"

struct w2c_wasi__snapshot__preview1 {
    wasm_rt_memory_t *memory;
};

/* WASI errno values (preview 1). */
#define WASI_ESUCCESS 0
#define WASI_EBADF 8
#define WASI_EEXIST 20
#define WASI_EFAULT 21
#define WASI_EFBIG 22
#define WASI_EINVAL 28
#define WASI_EIO 29
#define WASI_EISDIR 31
#define WASI_ELOOP 32
#define WASI_ENAMETOOLONG 37
#define WASI_ENOENT 44
#define WASI_ENOSPC 51
#define WASI_ENOTDIR 54
#define WASI_ENOTEMPTY 55
#define WASI_ENOTSOCK 57
#define WASI_ENOTSUP 58
#define WASI_EPERM 63
#define WASI_ESPIPE 70
#define WASI_EXDEV 75
#define WASI_ENOTCAPABLE 76

#define WASI_FILETYPE_CHARACTER_DEVICE 2
#define WASI_FILETYPE_DIRECTORY 3
#define WASI_FILETYPE_REGULAR_FILE 4
#define WASI_FILETYPE_SYMBOLIC_LINK 7
#define WASI_RIGHT_FD_READ (1ull << 1)
#define WASI_RIGHT_FD_WRITE (1ull << 6)

static inline bool span_ok(const wasm_rt_memory_t *mem, uint32_t ptr, uint64_t len) {
    return mem != NULL && (uint64_t)ptr + len <= mem->size;
}

static inline void store_u32(wasm_rt_memory_t *mem, uint32_t ptr, uint32_t v) {
    memcpy(mem->data + ptr, &v, 4);
}

static inline void store_u64(wasm_rt_memory_t *mem, uint32_t ptr, uint64_t v) {
    memcpy(mem->data + ptr, &v, 8);
}

static inline uint32_t load_u32(const wasm_rt_memory_t *mem, uint32_t ptr) {
    uint32_t v;
    memcpy(&v, mem->data + ptr, 4);
    return v;
}

static inline uint64_t load_u64(const wasm_rt_memory_t *mem, uint32_t ptr) {
    uint64_t v;
    memcpy(&v, mem->data + ptr, 8);
    return v;
}

static inline bool iovecs_ok(const wasm_rt_memory_t *mem, uint32_t iovs, uint32_t iovs_len,
                             uint32_t result_ptr) {
    if (!span_ok(mem, iovs, (uint64_t)iovs_len * 8) || !span_ok(mem, result_ptr, 4)) {
        return false;
    }
    for (uint32_t i = 0; i < iovs_len; i++) {
        if (!span_ok(mem, load_u32(mem, iovs + 8 * i), load_u32(mem, iovs + 8 * i + 4))) {
            return false;
        }
    }
    return true;
}

/* The descriptor table (wasi_fs.c). A stdio descriptor maps to its stream (0 stdin, 1 stdout,
 * 2 stderr); any other descriptor, open or not, to STREAM_NONE. */
#define STREAM_NONE (-1)
int keep_fd_stream(uint32_t fd);
bool keep_fd_is_open(uint32_t fd);
/* Files and directories are always ready for poll_oneoff (reads never block in memory). */
bool keep_fd_is_fs(uint32_t fd, bool for_write);
/* The calls wasi.c hands over for a descriptor that is not a stdio stream. */
uint32_t keep_fs_read(wasm_rt_memory_t *mem, uint32_t fd, uint32_t iovs, uint32_t n,
                      uint32_t result, bool positional, uint64_t offset);
uint32_t keep_fs_write(wasm_rt_memory_t *mem, uint32_t fd, uint32_t iovs, uint32_t n,
                       uint32_t result, bool positional, uint64_t offset);
uint32_t keep_fs_fdstat(wasm_rt_memory_t *mem, uint32_t fd, uint32_t stat_ptr);
uint32_t keep_fs_filestat(wasm_rt_memory_t *mem, uint32_t fd, uint32_t stat_ptr);
uint32_t keep_fs_seek(wasm_rt_memory_t *mem, uint32_t fd, int64_t offset, uint32_t whence,
                      uint32_t result);
/* Build the preopened directories from the checked trees (after keep_trees_init). */
void keep_fs_init(void);

#endif
