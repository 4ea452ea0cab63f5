/* The keep's in-memory file system: built from the checked trees (keep_trees.c), changed by the
 * application, discarded at exit (the :rw trees are handed back first: fs_hand_back). Nodes
 * are never freed (an open descriptor may still name an unlinked one); inode numbers count up
 * from 1 in creation order, the tree order first, so they are the same on every run of the same trees and on both backends (nil_wasi.py). */
#ifndef KEEP_FS_H
#define KEEP_FS_H

#include <stdbool.h>
#include <stdint.h>

#include "keep_abi.h"

struct fs_node;

struct fs_entry {
    char *name; /* not NUL-terminated */
    uint32_t name_len;
    struct fs_node *node;
};

struct fs_node {
    uint8_t type; /* WASI filetype: 3 directory, 4 regular file, 7 symbolic link */
    uint16_t mode; /* permission bits: kept for the way back (:rw), never seen by WASI */
    uint64_t dev, ino, nlink;
    uint64_t atim, mtim, ctim;
    uint8_t *data; /* a file's bytes or a link's target */
    uint64_t size, cap;
    struct fs_entry *entries; /* a directory's, in creation order */
    uint32_t count, entry_cap;
    struct fs_node *parent; /* a directory's (NULL for a tree's root) */
};

/* File size bound per file: a write or set_size beyond it is EFBIG. */
#define FS_FILE_MAX KEEP_FS_FILE_MAX /* keep_abi.h: the nil backend's bound too */

struct fs_node *fs_tree_root(uint32_t index);
uint32_t fs_tree_count(void);
void fs_build(void);
/* At the application's exit: the :rw trees, canonically encoded, handed to the host (ABI
 * call RESULT); nothing without :rw trees. Ends the keep (keep_fatal) if they do not fit. */
void fs_hand_back(void);

uint64_t fs_now(void);
struct fs_node *fs_new(uint8_t type, uint64_t dev);
struct fs_entry *fs_lookup(struct fs_node *dir, const char *name, uint32_t len);
/* 0 or a WASI errno (ENOSPC when out of memory). */
int fs_link(struct fs_node *dir, const char *name, uint32_t len, struct fs_node *node);
void fs_unlink(struct fs_node *dir, struct fs_entry *entry);
int fs_resize(struct fs_node *file, uint64_t size);
int fs_write_at(struct fs_node *file, uint64_t at, const uint8_t *src, uint64_t len);
bool fs_is_ancestor(const struct fs_node *dir, const struct fs_node *node);

#endif
