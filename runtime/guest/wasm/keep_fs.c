/* The in-memory tree the application works on, one per preopened directory, built from the
 * canonical encodings keep_trees.c checked against the attestation. The encoding is still
 * parsed as untrusted input (its digest was attested, not its shape): every length is checked,
 * each entry's parent must already exist as a directory and names in a directory must come in
 * ascending order (so each is new), or the keep ends
 * before the application (keep_fatal). Modes are not visible to WASI (preview 1 has none), but
 * each node keeps its own for the way back: what came in keeps its mode (a renamed file too),
 * what the application creates gets 0644 (file), 0755 (directory), 0777 (link); timestamps are
 * the keep's start time (the encoding has none).
 *
 * At the application's exit, each tree preopened :rw is encoded again, in the same canonical
 * form (toolchain/measure/trees.py: records sorted by path bytes), and handed to the host
 * (fs_hand_back): an unchanged tree gives back the very bytes it came in as. */
#include "keep_fs.h"

#include <stdlib.h>
#include <string.h>

#include "keep_platform.h"
#include "keep_runtime.h"
#include "keep_abi.h"
#include "keep_trees.h"

#define TREE_MAGIC_SIZE (sizeof KEEP_TREE_MAGIC) /* "KEEPTREE1\0" (keep_abi.h) */

static struct fs_node *roots[KEEP_TREES_MAX_COUNT];
static uint32_t root_count;
static uint64_t next_ino = 1;

struct fs_node *fs_tree_root(uint32_t index) { return index < root_count ? roots[index] : NULL; }
uint32_t fs_tree_count(void) { return root_count; }

static uint64_t build_time; /* while building: one clock read for every node */

uint64_t fs_now(void) {
    if (build_time != 0) {
        return build_time;
    }
    uint64_t ns = 0;
    (void)keep_platform_clock(0, &ns);
    return ns;
}

struct fs_node *fs_new(uint8_t type, uint64_t dev) {
    struct fs_node *node = calloc(1, sizeof *node);
    if (node == NULL) {
        return NULL;
    }
    node->type = type;
    node->mode = type == 3 ? 0755 : type == 4 ? 0644 : 0777;
    node->dev = dev;
    node->nlink = type == 3 ? 1 : 0; /* a directory's own "." */
    node->ino = next_ino++;
    node->atim = node->mtim = node->ctim = fs_now();
    return node;
}

struct fs_entry *fs_lookup(struct fs_node *dir, const char *name, uint32_t len) {
    for (uint32_t i = 0; i < dir->count; i++) {
        struct fs_entry *e = &dir->entries[i];
        if (e->name_len == len && memcmp(e->name, name, len) == 0) {
            return e;
        }
    }
    return NULL;
}

int fs_link(struct fs_node *dir, const char *name, uint32_t len, struct fs_node *node) {
    if (dir->count == dir->entry_cap) {
        uint32_t cap = dir->entry_cap ? dir->entry_cap * 2 : 8;
        struct fs_entry *grown = realloc(dir->entries, sizeof *grown * cap);
        if (grown == NULL) {
            return 51; /* ENOSPC */
        }
        dir->entries = grown;
        dir->entry_cap = cap;
    }
    char *copy = malloc(len ? len : 1);
    if (copy == NULL) {
        return 51;
    }
    memcpy(copy, name, len);
    dir->entries[dir->count++] = (struct fs_entry){copy, len, node};
    node->nlink++;
    if (node->type == 3) {
        node->parent = dir;
        dir->nlink++; /* the child's ".." */
    }
    dir->mtim = dir->ctim = fs_now();
    return 0;
}

void fs_unlink(struct fs_node *dir, struct fs_entry *entry) {
    struct fs_node *node = entry->node;
    node->nlink--;
    if (node->type == 3) {
        dir->nlink--;
        node->nlink = 0; /* a removed directory has no "." either */
    }
    free(entry->name);
    uint32_t at = (uint32_t)(entry - dir->entries);
    memmove(entry, entry + 1, sizeof *entry * (dir->count - at - 1));
    dir->count--;
    dir->mtim = dir->ctim = node->ctim = fs_now();
}

int fs_resize(struct fs_node *file, uint64_t size) {
    if (size > FS_FILE_MAX) {
        return 22; /* EFBIG */
    }
    if (size > file->cap) {
        uint64_t cap = file->cap ? file->cap : 64;
        while (cap < size) {
            cap *= 2;
        }
        uint8_t *grown = realloc(file->data, (size_t)cap);
        if (grown == NULL) {
            return 51; /* ENOSPC */
        }
        file->data = grown;
        file->cap = cap;
    }
    if (size > file->size) {
        memset(file->data + file->size, 0, (size_t)(size - file->size));
    }
    file->size = size;
    return 0;
}

int fs_write_at(struct fs_node *file, uint64_t at, const uint8_t *src, uint64_t len) {
    if (at > FS_FILE_MAX || len > FS_FILE_MAX - at) {
        return 22;
    }
    if (at + len > file->size) {
        int err = fs_resize(file, at + len);
        if (err) {
            return err;
        }
    }
    memcpy(file->data + at, src, (size_t)len);
    return 0;
}

bool fs_is_ancestor(const struct fs_node *dir, const struct fs_node *node) {
    for (; node != NULL; node = node->parent) {
        if (node == dir) {
            return true;
        }
    }
    return false;
}

/* ---- building from the canonical encoding (runtime/guest/wasm/README.md) ---------------------- */

struct reader {
    const uint8_t *p;
    uint64_t left;
};

static const uint8_t *take(struct reader *r, uint64_t n) {
    if (n > r->left) {
        keep_fatal("a preopened tree is malformed (a record runs past its end)");
    }
    const uint8_t *at = r->p;
    r->p += n;
    r->left -= n;
    return at;
}

/* The previous record's directory: siblings come one after another in the canonical order,
 * so a wide directory costs one comparison per entry, not a walk. */
static const char *last_parent_path;
static uint32_t last_parent_len;
static struct fs_node *last_parent;

/* The directory that holds `path`'s last component (every earlier one must exist). */
static struct fs_node *parent_of(struct fs_node *root, const char *path, uint32_t len,
                                 uint32_t *name_at) {
    uint32_t slash = len;
    while (slash > 0 && path[slash - 1] != '/') {
        slash--;
    }
    if (last_parent != NULL && slash == last_parent_len &&
        memcmp(path, last_parent_path, slash) == 0) {
        *name_at = slash;
        return last_parent;
    }
    struct fs_node *dir = root;
    uint32_t start = 0;
    for (uint32_t i = 0; i < len; i++) {
        if (path[i] != '/') {
            continue;
        }
        struct fs_entry *e = fs_lookup(dir, path + start, i - start);
        if (e == NULL || e->node->type != 3) {
            keep_fatal("a preopened tree is malformed (an entry before its directory)");
        }
        dir = e->node;
        start = i + 1;
    }
    *name_at = start;
    last_parent_path = path;
    last_parent_len = start;
    last_parent = dir;
    return dir;
}

/* Names in a directory arrive in strictly ascending byte order (the canonical encoding), so a
 * repeated name is always the previous one. */
static bool in_order(const struct fs_node *dir, const char *name, uint32_t len) {
    if (dir->count == 0) {
        return true;
    }
    const struct fs_entry *prev = &dir->entries[dir->count - 1];
    uint32_t n = prev->name_len < len ? prev->name_len : len;
    int c = memcmp(prev->name, name, n);
    return c < 0 || (c == 0 && prev->name_len < len);
}

static bool bad_name(const char *name, uint32_t len) {
    return len == 0 || (len == 1 && name[0] == '.') ||
           (len == 2 && name[0] == '.' && name[1] == '.') || memchr(name, 0, len) != NULL;
}

static struct fs_node *build_tree(const struct keep_tree *tree, uint64_t dev) {
    struct reader r = {tree->encoding + TREE_MAGIC_SIZE, tree->length - TREE_MAGIC_SIZE};
    struct fs_node *root = NULL;
    last_parent = NULL;
    while (r.left > 0) {
        uint8_t type = *take(&r, 1);
        uint16_t mode; /* preview 1 has no permissions: kept for the way back */
        memcpy(&mode, take(&r, 2), 2);
        uint32_t path_len;
        memcpy(&path_len, take(&r, 4), 4);
        const char *path = (const char *)take(&r, path_len);
        uint64_t data_len;
        memcpy(&data_len, take(&r, 8), 8);
        const uint8_t *data = take(&r, data_len);
        if ((type != 3 && type != 4 && type != 7) || (type == 3 && data_len != 0)) {
            keep_fatal("a preopened tree is malformed (an entry's type)");
        }
        struct fs_node *node = fs_new(type, dev);
        if (node == NULL || (data_len && fs_write_at(node, 0, data, data_len) != 0)) {
            keep_fatal("out of memory for the preopened trees");
        }
        node->mode = mode;
        if (root == NULL) {
            if (type != 3 || path_len != 0) {
                keep_fatal("a preopened tree is malformed (it does not start with its root)");
            }
            root = node;
            continue;
        }
        if (path[0] == '/') {
            keep_fatal("a preopened tree is malformed (an absolute path)");
        }
        uint32_t name_at;
        struct fs_node *dir = parent_of(root, path, path_len, &name_at);
        const char *name = path + name_at;
        uint32_t name_len = path_len - name_at;
        if (bad_name(name, name_len) || !in_order(dir, name, name_len)) {
            keep_fatal("a preopened tree is malformed (a name)");
        }
        if (fs_link(dir, name, name_len, node) != 0) {
            keep_fatal("out of memory for the preopened trees");
        }
    }
    if (root == NULL) {
        keep_fatal("a preopened tree is malformed (no root)");
    }
    return root;
}

void fs_build(void) {
    uint32_t count = keep_tree_count();
    build_time = fs_now();
    build_time = build_time ? build_time : 1;
    for (uint32_t i = 0; i < count && i < KEEP_TREES_MAX_COUNT; i++) {
        roots[i] = build_tree(keep_tree_at(i), (uint64_t)i + 1);
        root_count = i + 1;
    }
    build_time = 0;
}

/* ---- handing the :rw trees back (ABI call RESULT) ------------------------------------------- */

struct out_entry {
    char *path; /* relative to the tree's root, "/"-separated, not NUL-terminated */
    uint32_t len;
    struct fs_node *node;
};

static struct out_entry *out;
static uint64_t out_count, out_cap, out_size; /* out_size: bytes of the result so far */

static void out_push(char *path, uint32_t len, struct fs_node *node) {
    uint64_t data = node->type == 3 ? 0 : node->size;
    out_size += 7 + (uint64_t)len + 8 + data;
    if (out_size > KEEP_RESULT_MAX) {
        keep_fatal("the :rw trees are larger than a keep hands back (33 MiB); nothing was "
                   "written back");
    }
    if (out_count == out_cap) {
        out_cap = out_cap ? out_cap * 2 : 64;
        out = realloc(out, sizeof *out * out_cap);
        if (out == NULL) {
            keep_fatal("out of memory for handing back the :rw trees");
        }
    }
    out[out_count++] = (struct out_entry){path, len, node};
}

/* Every entry of a tree, its root first: breadth first, the list itself as the queue (no
 * recursion: the application decides how deep the tree is). */
static void collect(struct fs_node *root) {
    out_count = 0;
    out_push(NULL, 0, root);
    for (uint64_t i = 0; i < out_count; i++) {
        struct fs_node *dir = out[i].node;
        if (dir->type != 3) {
            continue;
        }
        for (uint32_t j = 0; j < dir->count; j++) {
            struct fs_entry *e = &dir->entries[j];
            uint32_t len = out[i].len ? out[i].len + 1 + e->name_len : e->name_len;
            char *path = malloc(len ? len : 1);
            if (path == NULL) {
                keep_fatal("out of memory for handing back the :rw trees");
            }
            uint32_t at = 0;
            if (out[i].len) {
                memcpy(path, out[i].path, out[i].len);
                path[out[i].len] = '/';
                at = out[i].len + 1;
            }
            memcpy(path + at, e->name, e->name_len);
            out_push(path, len, e->node);
        }
    }
}

static bool path_before(const struct out_entry *a, const struct out_entry *b) {
    uint32_t n = a->len < b->len ? a->len : b->len;
    int c = n ? memcmp(a->path, b->path, n) : 0;
    return c < 0 || (c == 0 && a->len < b->len);
}

/* The canonical order: ascending path bytes (a merge sort: the shim has no qsort). */
static void sort_entries(struct out_entry *items, struct out_entry *scratch, uint64_t n) {
    for (uint64_t width = 1; width < n; width *= 2) {
        for (uint64_t lo = 0; lo < n; lo += 2 * width) {
            uint64_t mid = lo + width < n ? lo + width : n;
            uint64_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            uint64_t a = lo, b = mid, k = lo;
            while (k < hi) {
                bool left = a < mid && (b >= hi || !path_before(&items[b], &items[a]));
                scratch[k++] = left ? items[a++] : items[b++];
            }
        }
        memcpy(items, scratch, sizeof *items * n);
    }
}

static uint8_t *put(uint8_t *at, const void *src, uint64_t len) {
    if (len) {
        memcpy(at, src, (size_t)len);
    }
    return at + len;
}

/* The encoding of the entries collected, at `at`; returns its end. */
static uint8_t *encode_entries(uint8_t *at) {
    at = put(at, KEEP_TREE_MAGIC, TREE_MAGIC_SIZE);
    for (uint64_t i = 0; i < out_count; i++) {
        struct fs_node *node = out[i].node;
        uint64_t data_len = node->type == 3 ? 0 : node->size;
        at = put(at, &node->type, 1);
        at = put(at, &node->mode, 2);
        at = put(at, &out[i].len, 4);
        at = put(at, out[i].path, out[i].len);
        at = put(at, &data_len, 8);
        at = put(at, node->data, data_len);
        free(out[i].path);
    }
    return at;
}

void fs_hand_back(void) {
    uint32_t count = 0;
    for (uint32_t i = 0; i < root_count; i++) {
        count += (keep_tree_at(i)->flags & KEEP_TREE_FLAG_RW) != 0;
    }
    if (count == 0) {
        return;
    }
    /* "KRESULT\0", u32 count, then per tree u32 index, u64 length, the encoding. */
    uint64_t used = 12;
    uint8_t *blob = malloc(12);
    if (blob == NULL) {
        keep_fatal("out of memory for handing back the :rw trees");
    }
    put(put(blob, KEEP_RESULT_MAGIC, sizeof KEEP_RESULT_MAGIC), &count, 4);
    out_size = used;
    for (uint32_t i = 0; i < root_count; i++) {
        if (!(keep_tree_at(i)->flags & KEEP_TREE_FLAG_RW)) {
            continue;
        }
        uint64_t start = out_size;
        out_size += 12 + TREE_MAGIC_SIZE;
        collect(roots[i]); /* adds every record to out_size, within KEEP_RESULT_MAX */
        struct out_entry *scratch = malloc(sizeof *scratch * (size_t)out_count);
        uint8_t *grown = scratch ? realloc(blob, (size_t)out_size) : NULL;
        if (grown == NULL) {
            keep_fatal("out of memory for handing back the :rw trees");
        }
        blob = grown;
        sort_entries(out, scratch, out_count);
        free(scratch);
        uint64_t length = out_size - start - 12;
        put(put(blob + start, &i, 4), &length, 8);
        used = (uint64_t)(encode_entries(blob + start + 12) - blob);
    }
    if (keep_platform_result_write(blob, (size_t)used, 0, used) < 0) {
        keep_fatal("the host refused the :rw trees handed back");
    }
}
