/* Every preview-1 file-system call on a preopened directory, through wasi-libc's raw
 * <wasi/api.h> bindings so each errno is the host's own answer. The test preopens one
 * directory (tests/test_wasi_fs_keep.py builds it: hello.txt, sub/inner.txt and links) and
 * compares this program's stdout and exit status on wasmtime (the oracle), nil and kvm.
 * Prints facts and errno values, never times, inode numbers or host-dependent sizes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wasi/api.h>

/* Cleanup calls (close, a stat whose result the next line prints) need no check of their own. */
#pragma clang diagnostic ignored "-Wunused-result"

#define RIGHTS_READ (__WASI_RIGHTS_FD_READ | __WASI_RIGHTS_FD_SEEK | __WASI_RIGHTS_FD_TELL | \
                     __WASI_RIGHTS_FD_FILESTAT_GET | __WASI_RIGHTS_FD_ADVISE |               \
                     __WASI_RIGHTS_FD_SYNC | __WASI_RIGHTS_FD_DATASYNC |                      \
                     __WASI_RIGHTS_FD_FDSTAT_SET_FLAGS | __WASI_RIGHTS_FD_FILESTAT_SET_TIMES)
#define RIGHTS_RW (RIGHTS_READ | __WASI_RIGHTS_FD_WRITE | __WASI_RIGHTS_FD_FILESTAT_SET_SIZE | \
                   __WASI_RIGHTS_FD_ALLOCATE)
#define RIGHTS_DIR (__WASI_RIGHTS_FD_READDIR | __WASI_RIGHTS_PATH_OPEN |                      \
                    __WASI_RIGHTS_PATH_FILESTAT_GET | __WASI_RIGHTS_FD_FILESTAT_GET)

static __wasi_fd_t root = 3;

static void say(const char *what, __wasi_errno_t e) { printf("%s: errno %u\n", what, e); }

static __wasi_errno_t open_at(__wasi_fd_t dir, const char *path, __wasi_lookupflags_t lookup,
                              __wasi_oflags_t oflags, __wasi_rights_t rights,
                              __wasi_fdflags_t fdflags, __wasi_fd_t *fd) {
    return __wasi_path_open(dir, lookup, path, oflags, rights, rights | RIGHTS_DIR, fdflags, fd);
}

static void try_open(const char *what, const char *path, __wasi_lookupflags_t lookup,
                     __wasi_oflags_t oflags, __wasi_rights_t rights) {
    __wasi_fd_t fd = 0;
    __wasi_errno_t e = open_at(root, path, lookup, oflags, rights, 0, &fd);
    say(what, e);
    if (e == 0) {
        __wasi_fd_close(fd);
    }
}

static __wasi_errno_t read_all(__wasi_fd_t fd, char *buf, size_t cap, size_t *got) {
    __wasi_iovec_t iov = {(uint8_t *)buf, cap};
    return __wasi_fd_read(fd, &iov, 1, got);
}

static __wasi_errno_t write_str(__wasi_fd_t fd, const char *s, size_t *n) {
    __wasi_ciovec_t iov = {(const uint8_t *)s, strlen(s)};
    return __wasi_fd_write(fd, &iov, 1, n);
}

static void show_file(const char *what, const char *path) {
    __wasi_fd_t fd;
    __wasi_errno_t e = open_at(root, path, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, 0, RIGHTS_READ, 0,
                               &fd);
    if (e != 0) {
        say(what, e);
        return;
    }
    char buf[256];
    size_t got = 0;
    e = read_all(fd, buf, sizeof buf, &got);
    printf("%s: errno %u, %zu bytes:", what, e, got);
    for (size_t i = 0; i < got; i++) {
        printf(buf[i] >= 32 && buf[i] < 127 ? "%c" : "\\x%02x", (unsigned char)buf[i]);
    }
    printf("\n");
    __wasi_fd_close(fd);
}

static void stat_path(const char *what, const char *path, __wasi_lookupflags_t lookup) {
    __wasi_filestat_t st;
    __wasi_errno_t e = __wasi_path_filestat_get(root, lookup, path, &st);
    if (e != 0) {
        say(what, e);
        return;
    }
    printf("%s: type %u", what, st.filetype);
    if (st.filetype == __WASI_FILETYPE_REGULAR_FILE) {
        printf(" size %llu nlink %llu", (unsigned long long)st.size,
               (unsigned long long)st.nlink);
    }
    printf("\n");
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names in a directory (cookies and a small buffer force many calls), sorted. */
static void list_dir(const char *what, const char *path) {
    __wasi_fd_t fd;
    __wasi_errno_t e = open_at(root, path, 0, __WASI_OFLAGS_DIRECTORY, RIGHTS_DIR, 0, &fd);
    if (e != 0) {
        say(what, e);
        return;
    }
    char *names[64];
    size_t count = 0;
    __wasi_dircookie_t cookie = 0;
    uint8_t buf[64]; /* smaller than a header and a name together: entries get cut */
    for (int calls = 0; calls < 200 && count < 64; calls++) {
        __wasi_size_t used = 0;
        e = __wasi_fd_readdir(fd, buf, sizeof buf, cookie, &used);
        if (e != 0) {
            break;
        }
        size_t at = 0;
        int whole = 0;
        while (at + sizeof(__wasi_dirent_t) <= used) {
            __wasi_dirent_t d;
            memcpy(&d, buf + at, sizeof d);
            if (at + sizeof d + d.d_namlen > used) {
                break; /* cut: ask again from this entry */
            }
            char *name = malloc(d.d_namlen + 8);
            memcpy(name, buf + at + sizeof d, d.d_namlen);
            sprintf(name + d.d_namlen, ":%u", d.d_type);
            names[count++] = name;
            cookie = d.d_next;
            at += sizeof d + d.d_namlen;
            whole++;
        }
        if (used < sizeof buf && at == used) {
            break; /* the end */
        }
        if (whole == 0 && used == sizeof buf) {
            printf("%s: an entry larger than the buffer\n", what);
            break;
        }
    }
    qsort(names, count, sizeof names[0], by_name);
    printf("%s: errno %u:", what, e);
    for (size_t i = 0; i < count; i++) {
        if (strncmp(names[i], "..:", 3) != 0) { /* ".." is the host's parent on wasmtime */
            printf(" %s", names[i]);
        }
        free(names[i]);
    }
    printf("\n");
    __wasi_fd_close(fd);
}

static void preopens(void) {
    __wasi_prestat_t pre;
    __wasi_errno_t e = __wasi_fd_prestat_get(root, &pre);
    char name[64] = {0};
    if (e == 0 && pre.u.dir.pr_name_len < sizeof name) {
        e = __wasi_fd_prestat_dir_name(root, (uint8_t *)name, pre.u.dir.pr_name_len);
    }
    printf("prestat 3: errno %u tag %u name <%s>\n", e, pre.tag, name);
    say("prestat 4 (none)", __wasi_fd_prestat_get(4, &pre));
    if (pre.u.dir.pr_name_len > 0) {
        say("prestat_dir_name short", __wasi_fd_prestat_dir_name(root, (uint8_t *)name, 0));
    }
}

static void reading(void) {
    __wasi_fd_t fd;
    say("open hello.txt", open_at(root, "hello.txt", 0, 0, RIGHTS_READ, 0, &fd));
    char buf[64];
    size_t got = 0;
    say("read", read_all(fd, buf, 5, &got));
    printf("read %zu: %.*s\n", got, (int)got, buf);
    __wasi_filesize_t pos = 0;
    say("tell", __wasi_fd_tell(fd, &pos));
    printf("tell %llu\n", (unsigned long long)pos);
    say("seek end-3", __wasi_fd_seek(fd, -3, __WASI_WHENCE_END, &pos));
    printf("seek -> %llu\n", (unsigned long long)pos);
    say("seek before 0", __wasi_fd_seek(fd, -100, __WASI_WHENCE_CUR, &pos));
    __wasi_iovec_t iov = {(uint8_t *)buf, 5};
    say("pread 6", __wasi_fd_pread(fd, &iov, 1, 6, &got));
    printf("pread %zu: %.*s\n", got, (int)got, buf);
    say("pread past end", __wasi_fd_pread(fd, &iov, 1, 1000, &got));
    printf("pread past end %zu\n", got);
    size_t n;
    say("write on read-only", write_str(fd, "x", &n));
    __wasi_filestat_t st;
    say("fd_filestat_get", __wasi_fd_filestat_get(fd, &st));
    printf("filestat type %u size %llu nlink %llu\n", st.filetype, (unsigned long long)st.size,
           (unsigned long long)st.nlink);
    __wasi_fdstat_t fs;
    say("fd_fdstat_get", __wasi_fd_fdstat_get(fd, &fs));
    printf("fdstat type %u flags %u\n", fs.fs_filetype, fs.fs_flags);
    say("advise", __wasi_fd_advise(fd, 0, 10, __WASI_ADVICE_SEQUENTIAL));
    say("sync", __wasi_fd_sync(fd));
    say("datasync", __wasi_fd_datasync(fd));
    say("readdir on a file", __wasi_fd_readdir(fd, (uint8_t *)buf, sizeof buf, 0, &got));
    say("close", __wasi_fd_close(fd));
    say("close again", __wasi_fd_close(fd));
    say("read closed", read_all(fd, buf, 5, &got));
}

static void writing(void) {
    __wasi_fd_t fd;
    say("create new.txt", open_at(root, "new.txt", 0, __WASI_OFLAGS_CREAT | __WASI_OFLAGS_EXCL,
                                  RIGHTS_RW, 0, &fd));
    size_t n;
    say("write abc", write_str(fd, "abc", &n));
    printf("wrote %zu\n", n);
    __wasi_ciovec_t civ = {(const uint8_t *)"xy", 2};
    say("pwrite 5", __wasi_fd_pwrite(fd, &civ, 1, 5, &n));
    __wasi_filesize_t pos;
    say("tell after pwrite", __wasi_fd_tell(fd, &pos));
    printf("tell %llu\n", (unsigned long long)pos);
    show_file("new.txt", "new.txt");
    say("set_size 2", __wasi_fd_filestat_set_size(fd, 2));
    say("set_flags append", __wasi_fd_fdstat_set_flags(fd, __WASI_FDFLAGS_APPEND));
    say("write Z", write_str(fd, "Z", &n));
    __wasi_fdstat_t fs;
    __wasi_fd_fdstat_get(fd, &fs);
    printf("fdstat flags %u\n", fs.fs_flags);
    say("set_flags nonblock", __wasi_fd_fdstat_set_flags(fd, __WASI_FDFLAGS_NONBLOCK));
    __wasi_fd_fdstat_get(fd, &fs);
    printf("fdstat flags %u\n", fs.fs_flags);
    say("set_size 8", __wasi_fd_filestat_set_size(fd, 8));
    show_file("new.txt", "new.txt");
    __wasi_fd_close(fd);
    try_open("create new.txt again (excl)", "new.txt", 0,
             __WASI_OFLAGS_CREAT | __WASI_OFLAGS_EXCL, RIGHTS_RW);
    try_open("open new.txt trunc", "new.txt", 0, __WASI_OFLAGS_TRUNC, RIGHTS_RW);
    stat_path("new.txt after trunc", "new.txt", 0);
    say("open append", open_at(root, "new.txt", 0, 0, RIGHTS_RW, __WASI_FDFLAGS_APPEND, &fd));
    write_str(fd, "one ", &n);
    __wasi_fd_seek(fd, 0, __WASI_WHENCE_SET, &pos);
    write_str(fd, "two", &n);
    __wasi_fd_close(fd);
    show_file("append", "new.txt");
    say("create sub/made.txt",
        open_at(root, "sub/made.txt", 0, __WASI_OFLAGS_CREAT, RIGHTS_RW, 0, &fd));
    write_str(fd, "made", &n);
    __wasi_fd_close(fd);
    show_file("sub/made.txt", "sub/made.txt");
}

static void misuse(void) {
    try_open("open missing", "missing", 0, 0, RIGHTS_READ);
    try_open("open missing/x", "missing/x", 0, 0, RIGHTS_READ);
    try_open("open hello.txt/", "hello.txt/", 0, 0, RIGHTS_READ);
    try_open("open hello.txt/x", "hello.txt/x", 0, 0, RIGHTS_READ);
    try_open("open hello.txt O_DIRECTORY", "hello.txt", 0, __WASI_OFLAGS_DIRECTORY, RIGHTS_READ);
    try_open("open sub for writing", "sub", 0, 0, RIGHTS_RW);
    try_open("open sub/ as directory", "sub/", 0, __WASI_OFLAGS_DIRECTORY, RIGHTS_DIR);
    try_open("open empty path", "", 0, 0, RIGHTS_READ);
    __wasi_fd_t fd;
    char buf[16];
    size_t got;
    say("open sub", open_at(root, "sub", 0, __WASI_OFLAGS_DIRECTORY, RIGHTS_DIR, 0, &fd));
    say("read a directory", read_all(fd, buf, sizeof buf, &got));
    __wasi_fd_t inner;
    say("open via sub fd", open_at(fd, "inner.txt", 0, 0, RIGHTS_READ, 0, &inner));
    __wasi_fd_close(inner);
    say("sub fd: ../hello.txt", open_at(fd, "../hello.txt", 0, 0, RIGHTS_READ, 0, &inner));
    __wasi_fd_close(fd);
    say("path_open on a file fd", open_at(0, "x", 0, 0, RIGHTS_READ, 0, &fd));
    say("path_open on a closed fd", open_at(77, "x", 0, 0, RIGHTS_READ, 0, &fd));
}

static void traversal(void) {
    try_open("..", "..", 0, __WASI_OFLAGS_DIRECTORY, RIGHTS_DIR);
    try_open("../outside", "../outside", 0, 0, RIGHTS_READ);
    try_open("sub/../../outside", "sub/../../outside", 0, 0, RIGHTS_READ);
    try_open("sub/../hello.txt", "sub/../hello.txt", 0, 0, RIGHTS_READ);
    try_open("/etc/passwd", "/etc/passwd", 0, 0, RIGHTS_READ);
    try_open("link_abs (follow)", "link_abs", __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, 0, RIGHTS_READ);
    try_open("link_out (follow)", "link_out", __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, 0, RIGHTS_READ);
    try_open("link_out/x", "link_out/x", 0, 0, RIGHTS_READ);
    try_open("loop_a (follow)", "loop_a", __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, 0, RIGHTS_READ);
    try_open("loop_a/x", "loop_a/x", 0, 0, RIGHTS_READ);
    try_open("self (follow)", "self", __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, 0, RIGHTS_READ);
    try_open("link_ok (nofollow)", "link_ok", 0, 0, RIGHTS_READ);
    show_file("link_ok (follow)", "link_ok");
    show_file("link_dir/inner.txt", "link_dir/inner.txt");
    show_file("sub/./inner.txt", "sub/./inner.txt");
    stat_path("stat link_ok nofollow", "link_ok", 0);
    stat_path("stat link_ok follow", "link_ok", __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW);
    stat_path("stat link_abs nofollow", "link_abs", 0);
    stat_path("stat link_abs follow", "link_abs", __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW);
    stat_path("stat loop_a follow", "loop_a", __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW);
    stat_path("stat ../", "../", 0);
    stat_path("stat link_dir/", "link_dir/", 0);
    stat_path("stat link_ok/", "link_ok/", 0);
}

static void directories(void) {
    say("mkdir d1", __wasi_path_create_directory(root, "d1"));
    say("mkdir d1 again", __wasi_path_create_directory(root, "d1"));
    say("mkdir hello.txt", __wasi_path_create_directory(root, "hello.txt"));
    say("mkdir missing/d", __wasi_path_create_directory(root, "missing/d"));
    say("mkdir ../d", __wasi_path_create_directory(root, "../d"));
    say("mkdir d1/d2/", __wasi_path_create_directory(root, "d1/d2/"));
    __wasi_fd_t fd;
    say("create d1/f", open_at(root, "d1/f", 0, __WASI_OFLAGS_CREAT, RIGHTS_RW, 0, &fd));
    __wasi_fd_close(fd);
    say("rmdir d1 (not empty)", __wasi_path_remove_directory(root, "d1"));
    say("unlink d1", __wasi_path_unlink_file(root, "d1"));
    say("unlink d1/f/", __wasi_path_unlink_file(root, "d1/f/"));
    say("rmdir d1/f", __wasi_path_remove_directory(root, "d1/f"));
    say("unlink d1/f", __wasi_path_unlink_file(root, "d1/f"));
    say("unlink d1/f again", __wasi_path_unlink_file(root, "d1/f"));
    say("rmdir d1/d2", __wasi_path_remove_directory(root, "d1/d2"));
    say("rmdir d1/", __wasi_path_remove_directory(root, "d1/"));
    say("rmdir d1 again", __wasi_path_remove_directory(root, "d1"));
    say("rmdir link_dir", __wasi_path_remove_directory(root, "link_dir"));
    say("unlink ../x", __wasi_path_unlink_file(root, "../x"));
    list_dir("list sub", "sub");
}

static void links(void) {
    say("symlink ln2 -> hello.txt", __wasi_path_symlink("hello.txt", root, "ln2"));
    say("symlink ln2 again", __wasi_path_symlink("hello.txt", root, "ln2"));
    say("symlink abs2 -> /etc", __wasi_path_symlink("/etc", root, "abs2"));
    say("symlink dangling -> nowhere", __wasi_path_symlink("nowhere", root, "dangling"));
    char buf[64];
    __wasi_size_t used = 0;
    say("readlink ln2", __wasi_path_readlink(root, "ln2", (uint8_t *)buf, sizeof buf, &used));
    printf("readlink ln2: %.*s\n", (int)used, buf);
    say("readlink link_out",
        __wasi_path_readlink(root, "link_out", (uint8_t *)buf, sizeof buf, &used));
    printf("readlink link_out: %.*s\n", (int)used, buf);
    say("readlink hello.txt",
        __wasi_path_readlink(root, "hello.txt", (uint8_t *)buf, sizeof buf, &used));
    say("readlink missing", __wasi_path_readlink(root, "missing", (uint8_t *)buf, 64, &used));
    try_open("dangling (follow)", "dangling", __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, 0, RIGHTS_READ);
    say("unlink dangling", __wasi_path_unlink_file(root, "dangling"));
    say("link hello.txt -> hard", __wasi_path_link(root, 0, "hello.txt", root, "hard"));
    say("link again", __wasi_path_link(root, 0, "hello.txt", root, "hard"));
    say("link sub -> subhard", __wasi_path_link(root, 0, "sub", root, "subhard"));
    say("link missing", __wasi_path_link(root, 0, "missing", root, "m2"));
    say("link ../x", __wasi_path_link(root, 0, "hello.txt", root, "../x"));
    __wasi_filestat_t a, b;
    __wasi_path_filestat_get(root, 0, "hello.txt", &a);
    __wasi_path_filestat_get(root, 0, "hard", &b);
    printf("hard link: same inode %d same dev %d nlink %llu\n", a.ino == b.ino, a.dev == b.dev,
           (unsigned long long)a.nlink);
    __wasi_fd_t fd;
    size_t n;
    open_at(root, "hard", 0, 0, RIGHTS_RW, __WASI_FDFLAGS_APPEND, &fd);
    write_str(fd, "via hard\n", &n);
    __wasi_fd_close(fd);
    show_file("hello.txt after write via hard", "hello.txt");
    say("unlink hard", __wasi_path_unlink_file(root, "hard"));
    stat_path("hello.txt", "hello.txt", 0);
}

static void renames(void) {
    say("rename new.txt -> renamed.txt", __wasi_path_rename(root, "new.txt", root, "renamed.txt"));
    stat_path("new.txt", "new.txt", 0);
    show_file("renamed.txt", "renamed.txt");
    say("rename ln2 over renamed.txt", __wasi_path_rename(root, "ln2", root, "renamed.txt"));
    stat_path("renamed.txt", "renamed.txt", 0);
    say("rename missing", __wasi_path_rename(root, "missing", root, "x"));
    say("rename sub -> sub/inside", __wasi_path_rename(root, "sub", root, "sub/inside"));
    say("rename hello.txt -> sub", __wasi_path_rename(root, "hello.txt", root, "sub"));
    say("mkdir e", __wasi_path_create_directory(root, "e"));
    say("rename e -> hello.txt", __wasi_path_rename(root, "e", root, "hello.txt"));
    say("rename e -> sub (not empty)", __wasi_path_rename(root, "e", root, "sub"));
    say("mkdir f", __wasi_path_create_directory(root, "f"));
    say("rename e -> f (empty)", __wasi_path_rename(root, "e", root, "f"));
    say("rename f -> sub/g", __wasi_path_rename(root, "f", root, "sub/g"));
    say("rename hello.txt -> hello.txt", __wasi_path_rename(root, "hello.txt", root, "hello.txt"));
    say("rename hello.txt -> ../x", __wasi_path_rename(root, "hello.txt", root, "../x"));
    say("rename hello.txt/ -> y", __wasi_path_rename(root, "hello.txt/", root, "y"));
    list_dir("list sub", "sub");
}

static void times(void) {
    __wasi_filestat_t st;
    say("set_times explicit",
        __wasi_path_filestat_set_times(root, 0, "hello.txt", 1000000000ull, 2000000000ull,
                                       __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_MTIM));
    __wasi_path_filestat_get(root, 0, "hello.txt", &st);
    printf("atim %llu mtim %llu\n", (unsigned long long)st.atim, (unsigned long long)st.mtim);
    say("set_times atim and atim_now",
        __wasi_path_filestat_set_times(root, 0, "hello.txt", 0, 0,
                                       __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_ATIM_NOW));
    say("set_times missing", __wasi_path_filestat_set_times(root, 0, "missing", 0, 0, 0));
    __wasi_fd_t fd;
    open_at(root, "hello.txt", 0, 0, RIGHTS_RW, 0, &fd);
    say("fd set_times mtim", __wasi_fd_filestat_set_times(fd, 0, 3000000000ull,
                                                          __WASI_FSTFLAGS_MTIM));
    __wasi_fd_filestat_get(fd, &st);
    printf("atim %llu mtim %llu\n", (unsigned long long)st.atim, (unsigned long long)st.mtim);
    __wasi_fd_close(fd);
}

static void descriptors(void) {
    __wasi_fd_t a, b;
    open_at(root, "hello.txt", 0, 0, RIGHTS_READ, 0, &a);
    open_at(root, "sub/inner.txt", 0, 0, RIGHTS_READ, 0, &b);
    say("renumber", __wasi_fd_renumber(a, b));
    char buf[8];
    size_t got = 0;
    say("read renumbered", read_all(b, buf, 5, &got));
    printf("read %.*s\n", (int)got, buf);
    say("read the old fd", read_all(a, buf, 5, &got));
    say("renumber to closed", __wasi_fd_renumber(b, 90));
    __wasi_fd_close(b);
}

int main(void) {
    preopens();
    reading();
    writing();
    misuse();
    traversal();
    directories();
    links();
    renames();
    times();
    descriptors();
    list_dir("list root", ".");
    return 0;
}
