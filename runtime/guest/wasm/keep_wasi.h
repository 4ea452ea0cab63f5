/* WASI preview 1 ("wasi_snapshot_preview1") as the wasm2c-generated code imports it.
 *
 * Every function of preview 1 is declared here with the C signature wasm2c gives an import of
 * that type, so compiling an application's entry.c (which includes both this header and the
 * application's wasm2c header) fails if the application imports one with another type.
 * toolchain/image/app.py checks the same table before that, for a readable error. */
#ifndef KEEP_WASI_H
#define KEEP_WASI_H

#include <stdint.h>

#include "wasm-rt.h"

struct w2c_wasi__snapshot__preview1;

/* The instance the application is linked against, and the memory it exports. */
struct w2c_wasi__snapshot__preview1 *keep_wasi_instance(void);
void keep_wasi_bind_memory(wasm_rt_memory_t *memory);

#define I32 uint32_t
#define I64 uint64_t
#define WASI_FN(ret, name, ...) \
    ret w2c_wasi__snapshot__preview1_##name(struct w2c_wasi__snapshot__preview1 *, __VA_ARGS__)
#define WASI_FN0(ret, name) \
    ret w2c_wasi__snapshot__preview1_##name(struct w2c_wasi__snapshot__preview1 *)

WASI_FN(I32, args_get, I32, I32);
WASI_FN(I32, args_sizes_get, I32, I32);
WASI_FN(I32, environ_get, I32, I32);
WASI_FN(I32, environ_sizes_get, I32, I32);
WASI_FN(I32, clock_res_get, I32, I32);
WASI_FN(I32, clock_time_get, I32, I64, I32);
WASI_FN(I32, fd_advise, I32, I64, I64, I32);
WASI_FN(I32, fd_allocate, I32, I64, I64);
WASI_FN(I32, fd_close, I32);
WASI_FN(I32, fd_datasync, I32);
WASI_FN(I32, fd_fdstat_get, I32, I32);
WASI_FN(I32, fd_fdstat_set_flags, I32, I32);
WASI_FN(I32, fd_fdstat_set_rights, I32, I64, I64);
WASI_FN(I32, fd_filestat_get, I32, I32);
WASI_FN(I32, fd_filestat_set_size, I32, I64);
WASI_FN(I32, fd_filestat_set_times, I32, I64, I64, I32);
WASI_FN(I32, fd_pread, I32, I32, I32, I64, I32);
WASI_FN(I32, fd_prestat_get, I32, I32);
WASI_FN(I32, fd_prestat_dir_name, I32, I32, I32);
WASI_FN(I32, fd_pwrite, I32, I32, I32, I64, I32);
WASI_FN(I32, fd_read, I32, I32, I32, I32);
WASI_FN(I32, fd_readdir, I32, I32, I32, I64, I32);
WASI_FN(I32, fd_renumber, I32, I32);
WASI_FN(I32, fd_seek, I32, I64, I32, I32);
WASI_FN(I32, fd_sync, I32);
WASI_FN(I32, fd_tell, I32, I32);
WASI_FN(I32, fd_write, I32, I32, I32, I32);
WASI_FN(I32, path_create_directory, I32, I32, I32);
WASI_FN(I32, path_filestat_get, I32, I32, I32, I32, I32);
WASI_FN(I32, path_filestat_set_times, I32, I32, I32, I32, I64, I64, I32);
WASI_FN(I32, path_link, I32, I32, I32, I32, I32, I32, I32);
WASI_FN(I32, path_open, I32, I32, I32, I32, I32, I64, I64, I32, I32);
WASI_FN(I32, path_readlink, I32, I32, I32, I32, I32, I32);
WASI_FN(I32, path_remove_directory, I32, I32, I32);
WASI_FN(I32, path_rename, I32, I32, I32, I32, I32, I32);
WASI_FN(I32, path_symlink, I32, I32, I32, I32, I32);
WASI_FN(I32, path_unlink_file, I32, I32, I32);
WASI_FN(I32, poll_oneoff, I32, I32, I32, I32);
WASI_FN(void, proc_exit, I32);
WASI_FN(I32, proc_raise, I32);
WASI_FN0(I32, sched_yield);
WASI_FN(I32, random_get, I32, I32);
WASI_FN(I32, sock_accept, I32, I32, I32);
WASI_FN(I32, sock_recv, I32, I32, I32, I32, I32, I32);
WASI_FN(I32, sock_send, I32, I32, I32, I32, I32);
WASI_FN(I32, sock_shutdown, I32, I32);

#undef I32
#undef I64

#endif
