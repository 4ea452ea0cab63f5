/* The in-memory tree the application works on, one per preopened directory, built from the
 * canonical encodings keep_trees.c checked against the attestation. The encoding is still
 * parsed as untrusted input (its digest was attested, not its shape): every length is checked,
 * each entry's parent must already exist as a directory and names in a directory must come in
 * ascending order (so each is new), or the keep ends
 * before the application (keep_fatal). Modes are not encoded into WASI (preview 1 has none);
 * timestamps are the keep's start time (the encoding has none). */
#include "keep_fs.h"

#include <stdlib.h>
#include <string.h>

#include "keep_platform.h"
#include "keep_runtime.h"
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
        (void)take(&r, 2); /* mode: preview 1 has no permissions */
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
        if (root == NULL) {
            if (type != 3 || path_len != 0) {
                keep_fatal("a preopened tree is malformed (it does not start with its root)");
            }
            root = node;
            continue;
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
