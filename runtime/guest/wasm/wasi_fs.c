/* WASI preview 1's file-system calls on the keep's in-memory trees (keep_fs.c), and the
 * descriptor table they share with the stdio streams (wasi.c).
 *
 * Descriptors 0-2 are stdio; 3, 4, ... are the preopened trees in --dir order (fd_prestat_get
 * names them); path_open takes the lowest free descriptor. Paths resolve relative to a
 * directory descriptor and never leave it: `..` above it, an absolute path and a symbolic link
 * to an absolute target are EPERM (wasmtime's answer; creating an absolute link is too); more than MAX_LINKS links in one resolution is ELOOP.
 * Intermediate links are always followed, the last one only with LOOKUPFLAGS_SYMLINK_FOLLOW or
 * a trailing slash. Errno values follow wasmtime (the oracle; tests/test_wasi_fs_keep.py runs
 * the same programs on wasmtime, nil and kvm). Nothing here reaches the host: changes stay in
 * the keep and are discarded at exit. */
#include <stdlib.h>
#include <string.h>

#include "keep_fs.h"
#include "keep_trees.h"
#include "keep_wasi.h"
#include "wasi_private.h"

#define WASI_EBUSY 10
#define WASI_EMFILE 33
#define FD_MAX 1024
#define MAX_LINKS 32
#define MAX_DEPTH 512

#define R(bit) (1ull << (bit))
#define RIGHTS_ALL (R(30) - 1)
/* What a file descriptor can do; a directory gets every other right (path_*, readdir). */
#define FILE_RIGHTS                                                                            \
    (R(0) | R(1) | R(2) | R(3) | R(4) | R(5) | R(6) | R(7) | R(8) | R(21) | R(22) | R(23) |       \
     R(27))
#define DIR_RIGHTS                                                                             \
    (R(0) | R(3) | R(4) | R(9) | R(10) | R(11) | R(12) | R(13) | R(14) | R(15) | R(16) | R(17) |  \
     R(18) | R(19) | R(20) | R(21) | R(23) | R(24) | R(25) | R(26) | R(27))
#define WRITE_RIGHTS (WASI_RIGHT_FD_WRITE | R(8) | R(22))

#define OFLAGS_CREAT 1u
#define OFLAGS_DIRECTORY 2u
#define OFLAGS_EXCL 4u
#define OFLAGS_TRUNC 8u
#define FDFLAGS_APPEND 1u
#define FDFLAGS_NONBLOCK 4u
#define FDFLAGS_ALL 0x1fu
#define LOOKUP_FOLLOW 1u
#define FST_ATIM 1u
#define FST_ATIM_NOW 2u
#define FST_MTIM 4u
#define FST_MTIM_NOW 8u

enum { KIND_FREE, KIND_STREAM, KIND_DIR, KIND_FILE };

struct fd_slot {
    uint8_t kind;
    int8_t stream;   /* KIND_STREAM: 0 stdin, 1 stdout, 2 stderr */
    uint16_t flags;  /* fdflags (append, nonblock) */
    int32_t preopen; /* the tree's index for a preopened directory, else -1 */
    struct fs_node *node;
    uint64_t offset, base, inheriting;
};

static struct fd_slot fds[FD_MAX] = {
    {KIND_STREAM, 0, 0, -1, NULL, 0, 0, 0},
    {KIND_STREAM, 1, 0, -1, NULL, 0, 0, 0},
    {KIND_STREAM, 2, 0, -1, NULL, 0, 0, 0},
};

void keep_fs_init(void) {
    fs_build();
    for (uint32_t i = 0; i < fs_tree_count(); i++) {
        fds[3 + i] = (struct fd_slot){KIND_DIR, 0, 0, (int32_t)i, fs_tree_root(i), 0,
                                      DIR_RIGHTS, DIR_RIGHTS | FILE_RIGHTS};
    }
}

static struct fd_slot *slot(uint32_t fd) {
    return fd < FD_MAX && fds[fd].kind != KIND_FREE ? &fds[fd] : NULL;
}

int keep_fd_stream(uint32_t fd) {
    struct fd_slot *s = slot(fd);
    return s != NULL && s->kind == KIND_STREAM ? s->stream : STREAM_NONE;
}

bool keep_fd_is_open(uint32_t fd) { return slot(fd) != NULL; }

bool keep_fd_is_fs(uint32_t fd, bool for_write) {
    struct fd_slot *s = slot(fd);
    if (s == NULL || s->kind != KIND_FILE) {
        return false;
    }
    return (s->base & (for_write ? WASI_RIGHT_FD_WRITE : WASI_RIGHT_FD_READ)) != 0;
}

static struct fd_slot *file_slot(uint32_t fd, uint32_t *err) {
    struct fd_slot *s = slot(fd);
    if (s == NULL || s->kind == KIND_STREAM) {
        *err = WASI_EBADF;
        return NULL;
    }
    if (s->kind != KIND_FILE) {
        *err = WASI_EISDIR;
        return NULL;
    }
    return s;
}

static struct fd_slot *dir_slot(uint32_t fd, uint32_t *err) {
    struct fd_slot *s = slot(fd);
    if (s == NULL || s->kind == KIND_STREAM) {
        *err = WASI_EBADF;
        return NULL;
    }
    if (s->kind != KIND_DIR) {
        *err = WASI_ENOTDIR;
        return NULL;
    }
    return s;
}

/* ---- path resolution ------------------------------------------------------------------- */

struct walk {
    struct fs_node *dir;  /* holds the last component (NULL when it is "." or "..") */
    const char *name;     /* the last component, inside buf */
    uint32_t name_len;
    struct fs_node *node; /* what it names, NULL if nothing */
    bool slash;           /* a trailing slash */
    char *buf;
};

static void walk_done(struct walk *w) { free(w->buf); }

/* Replace buf[0..at) (which ended with the link's name) with the link's target. */
static uint32_t expand(struct walk *w, uint32_t *at, uint32_t *n, const struct fs_node *link,
                       bool slash, uint32_t *links) {
    if (++*links > MAX_LINKS) {
        return WASI_ELOOP;
    }
    if (link->size == 0) {
        return WASI_ENOENT;
    }
    uint64_t rest = *n - *at;
    uint64_t total = link->size + 1 + rest;
    if (total > (1u << 20)) {
        return WASI_ENAMETOOLONG;
    }
    char *grown = malloc((size_t)total);
    if (grown == NULL) {
        return WASI_ENOSPC;
    }
    memcpy(grown, link->data, (size_t)link->size);
    grown[link->size] = '/';
    memcpy(grown + link->size + 1, w->buf + *at, (size_t)rest);
    free(w->buf);
    w->buf = grown;
    /* A target "x" with nothing after it is "x", or "x/" if the link's name had a slash. */
    *n = (uint32_t)(rest == 0 && !slash ? link->size : total);
    *at = 0;
    return WASI_ESUCCESS;
}

static uint32_t walk(struct fs_node *base, wasm_rt_memory_t *mem, uint32_t path, uint32_t len,
                     bool follow, struct walk *w) {
    memset(w, 0, sizeof *w);
    if (!span_ok(mem, path, len)) {
        return WASI_EFAULT;
    }
    if (len == 0) {
        return WASI_ENOENT;
    }
    w->buf = malloc(len);
    if (w->buf == NULL) {
        return WASI_ENOSPC;
    }
    memcpy(w->buf, mem->data + path, len);
    if (memchr(w->buf, 0, len) != NULL) {
        return WASI_EINVAL;
    }
    static struct fs_node *stack[MAX_DEPTH];
    uint32_t depth = 0, at = 0, n = len, links = 0;
    stack[0] = base;
    for (;;) {
        if (at == 0 && w->buf[0] == '/') {
            return WASI_EPERM; /* absolute: outside every descriptor */
        }
        uint32_t start = at;
        while (at < n && w->buf[at] != '/') {
            at++;
        }
        uint32_t clen = at - start;
        bool slash = false;
        while (at < n && w->buf[at] == '/') {
            at++;
            slash = true;
        }
        bool last = at == n;
        const char *c = w->buf + start;
        struct fs_node *cur = stack[depth];
        if ((clen == 1 && c[0] == '.') || (clen == 2 && c[0] == '.' && c[1] == '.')) {
            if (clen == 2) {
                if (depth == 0) {
                    return WASI_EPERM; /* above the descriptor's directory */
                }
                depth--;
            }
            if (last) {
                w->node = stack[depth];
                w->name = c;
                w->name_len = clen;
                w->slash = slash;
                return WASI_ESUCCESS;
            }
            continue;
        }
        struct fs_entry *e = fs_lookup(cur, c, clen);
        struct fs_node *child = e ? e->node : NULL;
        if (child != NULL && child->type == WASI_FILETYPE_SYMBOLIC_LINK &&
            (!last || follow || slash)) {
            uint32_t err = expand(w, &at, &n, child, slash, &links);
            if (err) {
                return err;
            }
            continue;
        }
        if (last) {
            w->dir = cur;
            w->name = c;
            w->name_len = clen;
            w->node = child;
            w->slash = slash;
            if (slash && child != NULL && child->type != WASI_FILETYPE_DIRECTORY) {
                return WASI_ENOTDIR;
            }
            return WASI_ESUCCESS;
        }
        if (child == NULL) {
            return WASI_ENOENT;
        }
        if (child->type != WASI_FILETYPE_DIRECTORY) {
            return WASI_ENOTDIR;
        }
        if (++depth == MAX_DEPTH) {
            return WASI_ENAMETOOLONG;
        }
        stack[depth] = child;
    }
}

/* Resolve against a directory descriptor; on error the walk is already released. */
static uint32_t walk_at(struct w2c_wasi__snapshot__preview1 *wi, uint32_t fd, uint32_t path,
                        uint32_t len, bool follow, struct walk *w) {
    uint32_t err = WASI_ESUCCESS;
    struct fd_slot *d = dir_slot(fd, &err);
    if (d == NULL) {
        memset(w, 0, sizeof *w);
        return err;
    }
    err = walk(d->node, wi->memory, path, len, follow, w);
    if (err) {
        walk_done(w);
    }
    return err;
}

/* ---- stat ------------------------------------------------------------------------------ */

static void store_filestat(wasm_rt_memory_t *mem, uint32_t at, const struct fs_node *node) {
    uint8_t st[64] = {0};
    memcpy(st, &node->dev, 8);
    memcpy(st + 8, &node->ino, 8);
    st[16] = node->type;
    memcpy(st + 24, &node->nlink, 8);
    uint64_t size = node->type == WASI_FILETYPE_DIRECTORY ? 4096 : node->size;
    memcpy(st + 32, &size, 8);
    memcpy(st + 40, &node->atim, 8);
    memcpy(st + 48, &node->mtim, 8);
    memcpy(st + 56, &node->ctim, 8);
    memcpy(mem->data + at, st, sizeof st);
}

uint32_t keep_fs_filestat(wasm_rt_memory_t *mem, uint32_t fd, uint32_t stat_ptr) {
    struct fd_slot *s = slot(fd);
    if (s == NULL) {
        return WASI_EBADF;
    }
    if (!span_ok(mem, stat_ptr, 64)) {
        return WASI_EFAULT;
    }
    store_filestat(mem, stat_ptr, s->node);
    return WASI_ESUCCESS;
}

uint32_t keep_fs_fdstat(wasm_rt_memory_t *mem, uint32_t fd, uint32_t stat_ptr) {
    struct fd_slot *s = slot(fd);
    if (s == NULL) {
        return WASI_EBADF;
    }
    if (!span_ok(mem, stat_ptr, 24)) {
        return WASI_EFAULT;
    }
    uint8_t st[24] = {0};
    st[0] = s->node->type;
    memcpy(st + 2, &s->flags, 2);
    memcpy(st + 8, &s->base, 8);
    memcpy(st + 16, &s->inheriting, 8);
    memcpy(mem->data + stat_ptr, st, sizeof st);
    return WASI_ESUCCESS;
}

static uint32_t set_times(struct fs_node *node, uint64_t atim, uint64_t mtim, uint32_t flags) {
    if ((flags & ~0xfu) != 0 || ((flags & FST_ATIM) && (flags & FST_ATIM_NOW)) ||
        ((flags & FST_MTIM) && (flags & FST_MTIM_NOW))) {
        return WASI_EINVAL;
    }
    uint64_t now = fs_now();
    if (flags & (FST_ATIM | FST_ATIM_NOW)) {
        node->atim = flags & FST_ATIM ? atim : now;
    }
    if (flags & (FST_MTIM | FST_MTIM_NOW)) {
        node->mtim = flags & FST_MTIM ? mtim : now;
    }
    node->ctim = now;
    return WASI_ESUCCESS;
}

/* ---- reading and writing --------------------------------------------------------------- */

uint32_t keep_fs_read(wasm_rt_memory_t *mem, uint32_t fd, uint32_t iovs, uint32_t n,
                      uint32_t result, bool positional, uint64_t offset) {
    uint32_t err = WASI_ESUCCESS;
    struct fd_slot *s = file_slot(fd, &err);
    if (s == NULL) {
        return err == WASI_EISDIR ? WASI_EBADF : err;
    }
    if (!(s->base & WASI_RIGHT_FD_READ)) {
        return WASI_EBADF;
    }
    if (!iovecs_ok(mem, iovs, n, result)) {
        return WASI_EFAULT;
    }
    uint64_t at = positional ? offset : s->offset;
    uint64_t total = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t ptr = load_u32(mem, iovs + 8 * i);
        uint32_t len = load_u32(mem, iovs + 8 * i + 4);
        uint64_t avail = at < s->node->size ? s->node->size - at : 0;
        uint64_t k = len < avail ? len : avail;
        memcpy(mem->data + ptr, s->node->data + at, (size_t)k);
        at += k;
        total += k;
    }
    if (!positional) {
        s->offset = at;
    }
    store_u32(mem, result, (uint32_t)total);
    return WASI_ESUCCESS;
}

uint32_t keep_fs_write(wasm_rt_memory_t *mem, uint32_t fd, uint32_t iovs, uint32_t n,
                       uint32_t result, bool positional, uint64_t offset) {
    uint32_t err = WASI_ESUCCESS;
    struct fd_slot *s = file_slot(fd, &err);
    if (s == NULL) {
        return err == WASI_EISDIR ? WASI_EBADF : err;
    }
    if (!(s->base & WASI_RIGHT_FD_WRITE)) {
        return WASI_EBADF;
    }
    if (!iovecs_ok(mem, iovs, n, result)) {
        return WASI_EFAULT;
    }
    uint64_t at = positional ? offset : (s->flags & FDFLAGS_APPEND) ? s->node->size : s->offset;
    uint64_t total = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t ptr = load_u32(mem, iovs + 8 * i);
        uint32_t len = load_u32(mem, iovs + 8 * i + 4);
        err = fs_write_at(s->node, at, mem->data + ptr, len);
        if (err) {
            return err;
        }
        at += len;
        total += len;
    }
    if (!positional) {
        s->offset = at;
    }
    if (total > 0) {
        s->node->mtim = s->node->ctim = fs_now();
    }
    store_u32(mem, result, (uint32_t)total);
    return WASI_ESUCCESS;
}

uint32_t keep_fs_seek(wasm_rt_memory_t *mem, uint32_t fd, int64_t offset, uint32_t whence,
                      uint32_t result) {
    uint32_t err = WASI_ESUCCESS;
    struct fd_slot *s = file_slot(fd, &err);
    if (s == NULL) {
        return err == WASI_EISDIR ? WASI_EBADF : err;
    }
    if (!span_ok(mem, result, 8)) {
        return WASI_EFAULT;
    }
    int64_t from = whence == 0 ? 0 : whence == 1 ? (int64_t)s->offset : (int64_t)s->node->size;
    if ((offset < 0 && from + offset < 0) || (offset > 0 && from > INT64_MAX - offset)) {
        return WASI_EINVAL;
    }
    s->offset = (uint64_t)(from + offset);
    store_u64(mem, result, s->offset);
    return WASI_ESUCCESS;
}

/* ---- descriptor calls ------------------------------------------------------------------- */

#define WASI(name) w2c_wasi__snapshot__preview1_##name
typedef struct w2c_wasi__snapshot__preview1 wasi_t;

uint32_t WASI(fd_close)(wasi_t *w, uint32_t fd) {
    (void)w;
    struct fd_slot *s = slot(fd);
    if (s == NULL) {
        return WASI_EBADF;
    }
    memset(s, 0, sizeof *s);
    return WASI_ESUCCESS;
}

/* Atomically replace `to` with `from` (both must be open); `from` is then closed. */
uint32_t WASI(fd_renumber)(wasi_t *w, uint32_t from, uint32_t to) {
    (void)w;
    if (slot(from) == NULL || slot(to) == NULL) {
        return WASI_EBADF;
    }
    if (from != to) {
        fds[to] = fds[from];
        memset(&fds[from], 0, sizeof fds[from]);
    }
    return WASI_ESUCCESS;
}

uint32_t WASI(fd_prestat_get)(wasi_t *w, uint32_t fd, uint32_t prestat_ptr) {
    struct fd_slot *s = slot(fd);
    if (s == NULL || s->kind != KIND_DIR || s->preopen < 0) {
        return WASI_EBADF;
    }
    if (!span_ok(w->memory, prestat_ptr, 8)) {
        return WASI_EFAULT;
    }
    store_u32(w->memory, prestat_ptr, 0); /* tag 0: a directory */
    store_u32(w->memory, prestat_ptr + 4, keep_tree_at((uint32_t)s->preopen)->guest_len);
    return WASI_ESUCCESS;
}

uint32_t WASI(fd_prestat_dir_name)(wasi_t *w, uint32_t fd, uint32_t path_ptr, uint32_t len) {
    struct fd_slot *s = slot(fd);
    if (s == NULL || s->kind != KIND_DIR || s->preopen < 0) {
        return WASI_EBADF;
    }
    const struct keep_tree *tree = keep_tree_at((uint32_t)s->preopen);
    if (len < tree->guest_len) {
        return WASI_ENAMETOOLONG;
    }
    if (!span_ok(w->memory, path_ptr, tree->guest_len)) {
        return WASI_EFAULT;
    }
    memcpy(w->memory->data + path_ptr, tree->guest, tree->guest_len);
    return WASI_ESUCCESS;
}

/* Streams have none of these rights: EBADF, as before there were files. */
static struct fd_slot *fs_slot(uint32_t fd) {
    struct fd_slot *s = slot(fd);
    return s != NULL && s->kind != KIND_STREAM ? s : NULL;
}

uint32_t WASI(fd_advise)(wasi_t *w, uint32_t fd, uint64_t offset, uint64_t len, uint32_t advice) {
    (void)w, (void)offset, (void)len;
    if (advice > 5) {
        return WASI_EINVAL;
    }
    uint32_t err = WASI_ESUCCESS;
    return file_slot(fd, &err) != NULL ? WASI_ESUCCESS : err == WASI_EISDIR ? WASI_EBADF : err;
}

/* wasmtime answers ENOTSUP for every file (preview 2 has no allocate). */
uint32_t WASI(fd_allocate)(wasi_t *w, uint32_t fd, uint64_t offset, uint64_t len) {
    (void)w, (void)offset, (void)len;
    uint32_t err = WASI_ESUCCESS;
    return file_slot(fd, &err) != NULL ? WASI_ENOTSUP : err == WASI_EISDIR ? WASI_EBADF : err;
}

/* Everything is in memory: nothing to flush. */
uint32_t WASI(fd_sync)(wasi_t *w, uint32_t fd) {
    (void)w;
    return fs_slot(fd) != NULL ? WASI_ESUCCESS : WASI_EBADF;
}

uint32_t WASI(fd_datasync)(wasi_t *w, uint32_t fd) {
    (void)w;
    return fs_slot(fd) != NULL ? WASI_ESUCCESS : WASI_EBADF;
}

uint32_t WASI(fd_fdstat_set_flags)(wasi_t *w, uint32_t fd, uint32_t flags) {
    (void)w;
    if ((flags & ~FDFLAGS_ALL) != 0) {
        return WASI_EINVAL;
    }
    struct fd_slot *s = fs_slot(fd);
    if (s == NULL) {
        return WASI_EBADF;
    }
    if ((flags & ~(FDFLAGS_APPEND | FDFLAGS_NONBLOCK)) != 0) {
        return WASI_EINVAL; /* the sync flags cannot be changed after open */
    }
    s->flags = (uint16_t)flags;
    return WASI_ESUCCESS;
}

/* The spec: rights can only be dropped. */
uint32_t WASI(fd_fdstat_set_rights)(wasi_t *w, uint32_t fd, uint64_t base, uint64_t inh) {
    (void)w;
    struct fd_slot *s = fs_slot(fd);
    if (s == NULL) {
        return WASI_EBADF;
    }
    if ((base & ~s->base) != 0 || (inh & ~s->inheriting) != 0) {
        return WASI_ENOTCAPABLE;
    }
    s->base = base;
    s->inheriting = inh;
    return WASI_ESUCCESS;
}

uint32_t WASI(fd_filestat_set_size)(wasi_t *w, uint32_t fd, uint64_t size) {
    (void)w;
    uint32_t err = WASI_ESUCCESS;
    struct fd_slot *s = file_slot(fd, &err);
    if (s == NULL) {
        return err == WASI_EISDIR ? WASI_EBADF : err;
    }
    if (!(s->base & WASI_RIGHT_FD_WRITE)) {
        return WASI_EBADF;
    }
    err = (uint32_t)fs_resize(s->node, size);
    if (err == WASI_ESUCCESS) {
        s->node->mtim = s->node->ctim = fs_now();
    }
    return err;
}

uint32_t WASI(fd_filestat_set_times)(wasi_t *w, uint32_t fd, uint64_t atim, uint64_t mtim,
                                     uint32_t flags) {
    (void)w;
    if ((flags & ~0xfu) != 0) {
        return WASI_EINVAL;
    }
    struct fd_slot *s = fs_slot(fd);
    return s == NULL ? WASI_EBADF : set_times(s->node, atim, mtim, flags);
}

/* Entries: ".", "..", then the directory's in creation order; the cookie is the index of the
 * next entry. Each dirent is d_next u64, d_ino u64, d_namlen u32, d_type u8 (24 bytes), then
 * the name; the last one is cut where the buffer ends (the spec's way to say "more"). */
uint32_t WASI(fd_readdir)(wasi_t *w, uint32_t fd, uint32_t buf, uint32_t buf_len, uint64_t cookie,
                          uint32_t used_ptr) {
    uint32_t err = WASI_ESUCCESS;
    struct fd_slot *s = dir_slot(fd, &err);
    if (s == NULL) {
        return WASI_EBADF; /* a file too, as wasmtime answers */
    }
    wasm_rt_memory_t *mem = w->memory;
    if (!span_ok(mem, buf, buf_len) || !span_ok(mem, used_ptr, 4)) {
        return WASI_EFAULT;
    }
    struct fs_node *dir = s->node;
    uint64_t count = (uint64_t)dir->count + 2;
    uint32_t used = 0;
    for (uint64_t i = cookie; i < count && used < buf_len; i++) {
        uint8_t head[24] = {0};
        const char *name;
        uint32_t name_len;
        const struct fs_node *node;
        if (i < 2) {
            name = "..";
            name_len = (uint32_t)i + 1;
            node = i == 0 || dir->parent == NULL ? dir : dir->parent;
        } else {
            const struct fs_entry *e = &dir->entries[i - 2];
            name = e->name;
            name_len = e->name_len;
            node = e->node;
        }
        uint64_t next = i + 1;
        memcpy(head, &next, 8);
        memcpy(head + 8, &node->ino, 8);
        memcpy(head + 16, &name_len, 4);
        head[20] = node->type;
        uint32_t room = buf_len - used;
        uint32_t k = room < sizeof head ? room : (uint32_t)sizeof head;
        memcpy(mem->data + buf + used, head, k);
        used += k;
        room = buf_len - used;
        k = room < name_len ? room : name_len;
        memcpy(mem->data + buf + used, name, k);
        used += k;
    }
    store_u32(mem, used_ptr, used);
    return WASI_ESUCCESS;
}

/* ---- path calls ------------------------------------------------------------------------ */

static uint32_t new_fd(struct fs_node *node, uint64_t base, uint64_t inh, uint16_t flags,
                       uint32_t *fd) {
    for (uint32_t i = 0; i < FD_MAX; i++) {
        if (fds[i].kind == KIND_FREE) {
            uint8_t kind = node->type == WASI_FILETYPE_DIRECTORY ? KIND_DIR : KIND_FILE;
            fds[i] = (struct fd_slot){kind, 0, flags, -1, node, 0, base, inh};
            *fd = i;
            return WASI_ESUCCESS;
        }
    }
    return WASI_EMFILE;
}

uint32_t WASI(path_open)(wasi_t *w, uint32_t dirfd, uint32_t lookup, uint32_t path, uint32_t len,
                         uint32_t oflags, uint64_t base, uint64_t inh, uint32_t fdflags,
                         uint32_t fd_ptr) {
    if ((oflags & ~0xfu) != 0 || (fdflags & ~FDFLAGS_ALL) != 0 || (lookup & ~1u) != 0) {
        return WASI_EINVAL;
    }
    if (!span_ok(w->memory, fd_ptr, 4)) {
        return WASI_EFAULT; /* before anything is created */
    }
    struct walk wk;
    uint32_t err = walk_at(w, dirfd, path, len, (lookup & LOOKUP_FOLLOW) != 0, &wk);
    if (err) {
        return err;
    }
    struct fs_node *node = wk.node;
    if (node == NULL) {
        if (!(oflags & OFLAGS_CREAT)) {
            err = WASI_ENOENT;
        } else if (oflags & OFLAGS_DIRECTORY) {
            err = WASI_EINVAL;
        } else if (wk.slash) {
            err = WASI_EISDIR;
        } else if ((node = fs_new(WASI_FILETYPE_REGULAR_FILE, wk.dir->dev)) == NULL) {
            err = WASI_ENOSPC;
        } else {
            err = (uint32_t)fs_link(wk.dir, wk.name, wk.name_len, node);
        }
    } else if ((oflags & OFLAGS_CREAT) && (oflags & OFLAGS_EXCL)) {
        err = WASI_EEXIST;
    } else if (node->type == WASI_FILETYPE_SYMBOLIC_LINK) {
        err = WASI_ELOOP;
    } else if ((oflags & OFLAGS_DIRECTORY) && node->type != WASI_FILETYPE_DIRECTORY) {
        err = WASI_ENOTDIR;
    } else if (node->type == WASI_FILETYPE_DIRECTORY &&
               ((base & WRITE_RIGHTS) || (oflags & OFLAGS_TRUNC))) {
        err = WASI_EISDIR;
    } else if (oflags & OFLAGS_TRUNC) {
        err = (uint32_t)fs_resize(node, 0);
    }
    walk_done(&wk);
    if (err) {
        return err;
    }
    uint64_t allowed = node->type == WASI_FILETYPE_DIRECTORY ? DIR_RIGHTS : FILE_RIGHTS;
    uint32_t fd;
    err = new_fd(node, base & allowed, inh & RIGHTS_ALL, (uint16_t)fdflags, &fd);
    if (err == WASI_ESUCCESS) {
        store_u32(w->memory, fd_ptr, fd);
    }
    return err;
}

uint32_t WASI(path_filestat_get)(wasi_t *w, uint32_t fd, uint32_t lookup, uint32_t path,
                                 uint32_t len, uint32_t stat_ptr) {
    struct walk wk;
    uint32_t err = walk_at(w, fd, path, len, (lookup & LOOKUP_FOLLOW) != 0, &wk);
    if (err) {
        return err;
    }
    if (wk.node == NULL) {
        err = WASI_ENOENT;
    } else if (!span_ok(w->memory, stat_ptr, 64)) {
        err = WASI_EFAULT;
    } else {
        store_filestat(w->memory, stat_ptr, wk.node);
    }
    walk_done(&wk);
    return err;
}

uint32_t WASI(path_filestat_set_times)(wasi_t *w, uint32_t fd, uint32_t lookup, uint32_t path,
                                       uint32_t len, uint64_t atim, uint64_t mtim,
                                       uint32_t flags) {
    if ((flags & ~0xfu) != 0) {
        return WASI_EINVAL;
    }
    if (flags == 0) {
        return WASI_ESUCCESS; /* nothing to set: wasmtime does not even look the path up */
    }
    struct walk wk;
    uint32_t err = walk_at(w, fd, path, len, (lookup & LOOKUP_FOLLOW) != 0, &wk);
    if (err) {
        return err;
    }
    err = wk.node == NULL ? WASI_ENOENT : set_times(wk.node, atim, mtim, flags);
    walk_done(&wk);
    return err;
}

uint32_t WASI(path_create_directory)(wasi_t *w, uint32_t fd, uint32_t path, uint32_t len) {
    struct walk wk;
    uint32_t err = walk_at(w, fd, path, len, false, &wk);
    if (err) {
        return err;
    }
    struct fs_node *node;
    if (wk.node != NULL || wk.dir == NULL) {
        err = WASI_EEXIST;
    } else if ((node = fs_new(WASI_FILETYPE_DIRECTORY, wk.dir->dev)) == NULL) {
        err = WASI_ENOSPC;
    } else {
        err = (uint32_t)fs_link(wk.dir, wk.name, wk.name_len, node);
    }
    walk_done(&wk);
    return err;
}

uint32_t WASI(path_remove_directory)(wasi_t *w, uint32_t fd, uint32_t path, uint32_t len) {
    struct walk wk;
    uint32_t err = walk_at(w, fd, path, len, false, &wk);
    if (err) {
        return err;
    }
    if (wk.node == NULL) {
        err = WASI_ENOENT;
    } else if (wk.dir == NULL || wk.slash) {
        err = WASI_EINVAL; /* ".", "..", or a trailing slash (wasmtime) */
    } else if (wk.node->type != WASI_FILETYPE_DIRECTORY) {
        err = WASI_ENOTDIR;
    } else if (wk.node->count != 0) {
        err = WASI_ENOTEMPTY;
    } else {
        fs_unlink(wk.dir, fs_lookup(wk.dir, wk.name, wk.name_len));
    }
    walk_done(&wk);
    return err;
}

uint32_t WASI(path_unlink_file)(wasi_t *w, uint32_t fd, uint32_t path, uint32_t len) {
    struct walk wk;
    uint32_t err = walk_at(w, fd, path, len, false, &wk);
    if (err) {
        return err;
    }
    if (wk.node == NULL) {
        err = WASI_ENOENT;
    } else if (wk.dir == NULL || wk.node->type == WASI_FILETYPE_DIRECTORY) {
        err = WASI_EISDIR;
    } else {
        fs_unlink(wk.dir, fs_lookup(wk.dir, wk.name, wk.name_len));
    }
    walk_done(&wk);
    return err;
}

uint32_t WASI(path_symlink)(wasi_t *w, uint32_t target, uint32_t target_len, uint32_t fd,
                            uint32_t path, uint32_t len) {
    if (!span_ok(w->memory, target, target_len)) {
        return WASI_EFAULT;
    }
    if (target_len > 0 && w->memory->data[target] == '/') {
        return WASI_EPERM; /* a link out of every preopen */
    }
    struct walk wk;
    uint32_t err = walk_at(w, fd, path, len, false, &wk);
    if (err) {
        return err;
    }
    struct fs_node *node;
    if (wk.node != NULL || wk.dir == NULL) {
        err = WASI_EEXIST;
    } else if (wk.slash) {
        err = WASI_ENOENT;
    } else if ((node = fs_new(WASI_FILETYPE_SYMBOLIC_LINK, wk.dir->dev)) == NULL) {
        err = WASI_ENOSPC;
    } else if ((err = (uint32_t)fs_write_at(node, 0, w->memory->data + target, target_len)) ==
               0) {
        err = (uint32_t)fs_link(wk.dir, wk.name, wk.name_len, node);
    }
    walk_done(&wk);
    return err;
}

uint32_t WASI(path_readlink)(wasi_t *w, uint32_t fd, uint32_t path, uint32_t len, uint32_t buf,
                             uint32_t buf_len, uint32_t used_ptr) {
    struct walk wk;
    uint32_t err = walk_at(w, fd, path, len, false, &wk);
    if (err) {
        return err;
    }
    if (wk.node == NULL) {
        err = WASI_ENOENT;
    } else if (wk.node->type != WASI_FILETYPE_SYMBOLIC_LINK) {
        err = WASI_EINVAL;
    } else if (!span_ok(w->memory, buf, buf_len) || !span_ok(w->memory, used_ptr, 4)) {
        err = WASI_EFAULT;
    } else {
        uint32_t k = wk.node->size < buf_len ? (uint32_t)wk.node->size : buf_len;
        memcpy(w->memory->data + buf, wk.node->data, k);
        store_u32(w->memory, used_ptr, k);
    }
    walk_done(&wk);
    return err;
}

uint32_t WASI(path_link)(wasi_t *w, uint32_t old_fd, uint32_t lookup, uint32_t old_path,
                         uint32_t old_len, uint32_t new_fd, uint32_t new_path, uint32_t new_len) {
    struct walk from, to;
    uint32_t err = walk_at(w, old_fd, old_path, old_len, (lookup & LOOKUP_FOLLOW) != 0, &from);
    if (err) {
        return err;
    }
    err = walk_at(w, new_fd, new_path, new_len, false, &to);
    if (err) {
        walk_done(&from);
        return err;
    }
    if (from.node == NULL) {
        err = WASI_ENOENT;
    } else if (from.node->type == WASI_FILETYPE_DIRECTORY) {
        err = WASI_EPERM;
    } else if (to.node != NULL || to.dir == NULL) {
        err = WASI_EEXIST;
    } else if (to.slash) {
        err = WASI_ENOENT;
    } else if (to.dir->dev != from.node->dev) {
        err = WASI_EXDEV;
    } else {
        err = (uint32_t)fs_link(to.dir, to.name, to.name_len, from.node);
        from.node->ctim = fs_now();
    }
    walk_done(&from);
    walk_done(&to);
    return err;
}

static uint32_t rename_check(const struct walk *from, const struct walk *to) {
    if (from->node == NULL) {
        return WASI_ENOENT;
    }
    if (from->dir == NULL || to->dir == NULL) {
        return WASI_EBUSY;
    }
    if (from->dir->dev != to->dir->dev) {
        return WASI_EXDEV;
    }
    bool is_dir = from->node->type == WASI_FILETYPE_DIRECTORY;
    if (!is_dir && (from->slash || to->slash)) {
        return WASI_ENOTDIR;
    }
    if (is_dir && fs_is_ancestor(from->node, to->dir)) {
        return WASI_EINVAL; /* into itself */
    }
    if (to->node == NULL || to->node == from->node) {
        return WASI_ESUCCESS;
    }
    bool target_dir = to->node->type == WASI_FILETYPE_DIRECTORY;
    if (is_dir && !target_dir) {
        return WASI_ENOTDIR;
    }
    if (!is_dir && target_dir) {
        return WASI_EISDIR;
    }
    if (target_dir && to->node->count != 0) {
        return WASI_ENOTEMPTY;
    }
    return WASI_ESUCCESS;
}

uint32_t WASI(path_rename)(wasi_t *w, uint32_t old_fd, uint32_t old_path, uint32_t old_len,
                           uint32_t new_fd, uint32_t new_path, uint32_t new_len) {
    struct walk from, to;
    uint32_t err = walk_at(w, old_fd, old_path, old_len, false, &from);
    if (err) {
        return err;
    }
    err = walk_at(w, new_fd, new_path, new_len, false, &to);
    if (err) {
        walk_done(&from);
        return err;
    }
    err = rename_check(&from, &to);
    if (err == WASI_ESUCCESS && to.node != from.node) {
        struct fs_node *node = from.node;
        if (to.node != NULL) {
            fs_unlink(to.dir, fs_lookup(to.dir, to.name, to.name_len));
        }
        err = (uint32_t)fs_link(to.dir, to.name, to.name_len, node);
        if (err == WASI_ESUCCESS) {
            fs_unlink(from.dir, fs_lookup(from.dir, from.name, from.name_len));
            if (node->type == WASI_FILETYPE_DIRECTORY) {
                node->nlink = 2; /* fs_unlink zeroed it: "." and its new entry */
                for (uint32_t i = 0; i < node->count; i++) {
                    node->nlink += node->entries[i].node->type == WASI_FILETYPE_DIRECTORY;
                }
                node->parent = to.dir;
            }
        }
    }
    walk_done(&from);
    walk_done(&to);
    return err;
}
