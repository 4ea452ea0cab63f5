/* Changes a tree for --dir HOST::GUEST:rw: the test preopens one tree at "/rw" (written back)
 * and one at "/ro" (not), and this program makes the same changes in both: create, modify,
 * delete, rename, mkdir, symlink, hard link. With the argument "trap" it traps at the end
 * instead of exiting (a trap hands nothing back); "fail" exits with status 3 (an exit, so the
 * trees are handed back); "big" also writes a 34 MiB file into /rw, more than a keep hands
 * back; "none" changes nothing. Prints what each call answered. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void put(const char *path, const char *text, int flags) {
    int fd = open(path, O_WRONLY | O_CREAT | flags, 0600);
    if (fd < 0) {
        printf("open %s: errno %d\n", path, errno);
        return;
    }
    ssize_t n = write(fd, text, strlen(text));
    printf("write %s: %zd\n", path, n);
    close(fd);
}

static void changes(const char *root) {
    char a[128], b[128];
    snprintf(a, sizeof a, "%s/created.txt", root);
    put(a, "made in the keep\n", O_EXCL);
    snprintf(a, sizeof a, "%s/modify.txt", root);
    put(a, " and more\n", O_APPEND);
    snprintf(a, sizeof a, "%s/delete.txt", root);
    printf("unlink: %d\n", unlink(a) == 0 ? 0 : errno);
    snprintf(a, sizeof a, "%s/rename-from.txt", root);
    snprintf(b, sizeof b, "%s/renamed.txt", root);
    printf("rename: %d\n", rename(a, b) == 0 ? 0 : errno);
    snprintf(a, sizeof a, "%s/newdir", root);
    printf("mkdir: %d\n", mkdir(a, 0700) == 0 ? 0 : errno);
    snprintf(a, sizeof a, "%s/newdir/inner.txt", root);
    put(a, "inner\n", 0);
    snprintf(a, sizeof a, "%s/newlink", root);
    printf("symlink: %d\n", symlink("renamed.txt", a) == 0 ? 0 : errno);
    snprintf(a, sizeof a, "%s/sub/deep.txt", root);
    snprintf(b, sizeof b, "%s/hardlink.txt", root);
    printf("link: %d\n", link(a, b) == 0 ? 0 : errno);
    snprintf(a, sizeof a, "%s/sub.txt", root); /* sorts between "sub" and "sub/deep.txt" */
    put(a, "beside sub\n", 0);
    snprintf(a, sizeof a, "%s/sub/gone", root);
    printf("rmdir: %d\n", rmdir(a) == 0 ? 0 : errno);
}

static void big(void) {
    static char chunk[1 << 20];
    int fd = open("/rw/big.bin", O_WRONLY | O_CREAT, 0600);
    for (int i = 0; i < 34; i++) {
        memset(chunk, 'a' + i % 26, sizeof chunk);
        if (write(fd, chunk, sizeof chunk) != (ssize_t)sizeof chunk) {
            printf("big: errno %d\n", errno);
        }
    }
    close(fd);
}

int main(int argc, char **argv) {
    const char *how = argc > 1 ? argv[1] : "";
    if (strcmp(how, "none") == 0) {
        return 0;
    }
    changes("/rw");
    changes("/ro");
    if (strcmp(how, "big") == 0) {
        big();
    }
    fflush(stdout);
    if (strcmp(how, "trap") == 0) {
        __builtin_trap();
    }
    return strcmp(how, "fail") == 0 ? 3 : 0;
}
