/* Pointers outside linear memory on the file and path calls: the keep answers EFAULT where
 * wasmtime traps (runtime/guest/wasm/README.md), so this program has no oracle but the spec's errno;
 * tests/test_wasi_fs_keep.py requires the same lines on nil and kvm, every answer 21, and that
 * nothing was created by a call that failed. */
#include <stdint.h>
#include <stdio.h>
#include <wasi/api.h>

#pragma clang diagnostic ignored "-Wunused-result"

#define BAD ((void *)0xfffffff0u)
#define RIGHTS (__WASI_RIGHTS_FD_READ | __WASI_RIGHTS_FD_WRITE)

/* The raw imports: wasi-libc's wrappers take C strings, these take any pointer and length. */
#define IMPORT(name) __attribute__((import_module("wasi_snapshot_preview1"), import_name(name)))
int32_t raw_path_symlink(int32_t, int32_t, int32_t, int32_t, int32_t) IMPORT("path_symlink");
int32_t raw_path_create_directory(int32_t, int32_t, int32_t) IMPORT("path_create_directory");

static void say(const char *what, __wasi_errno_t e) { printf("%s: errno %u\n", what, e); }

int main(void) {
    __wasi_fd_t fd;
    say("path_open fd_ptr", __wasi_path_open(3, 0, "made.txt", __WASI_OFLAGS_CREAT, RIGHTS,
                                             RIGHTS, 0, BAD));
    __wasi_filestat_t st;
    say("made.txt exists", __wasi_path_filestat_get(3, 0, "made.txt", &st));
    say("path_filestat_get buf", __wasi_path_filestat_get(3, 0, "hello.txt", BAD));
    say("fd_prestat_dir_name", __wasi_fd_prestat_dir_name(3, BAD, 16));
    say("fd_prestat_get", __wasi_fd_prestat_get(3, BAD));
    say("fd_readdir buf", __wasi_fd_readdir(3, BAD, 64, 0, BAD));
    __wasi_size_t used;
    say("path_readlink buf", __wasi_path_readlink(3, "link_ok", BAD, 64, &used));
    say("path_symlink target", raw_path_symlink((int32_t)0xfffffff0u, 4, 3, (int32_t)(uintptr_t)"ln", 2));
    say("path_create_directory path", raw_path_create_directory(3, (int32_t)0xfffffff0u, 4));
    __wasi_path_open(3, 0, "hello.txt", 0, RIGHTS, RIGHTS, 0, &fd);
    __wasi_iovec_t iov = {BAD, 16};
    __wasi_size_t n;
    say("fd_read iovec", __wasi_fd_read(fd, &iov, 1, &n));
    say("fd_read iovs", __wasi_fd_read(fd, BAD, 1, &n));
    __wasi_ciovec_t civ = {BAD, 16};
    say("fd_write iovec", __wasi_fd_write(fd, &civ, 1, &n));
    say("fd_pread iovec", __wasi_fd_pread(fd, &iov, 1, 0, &n));
    say("fd_seek result", __wasi_fd_seek(fd, 0, __WASI_WHENCE_SET, BAD));
    say("fd_filestat_get", __wasi_fd_filestat_get(fd, BAD));
    say("fd_fdstat_get", __wasi_fd_fdstat_get(fd, BAD));
    return 0;
}
