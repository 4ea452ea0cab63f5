/* A program as an application would be written: wasi-libc's stdio, POSIX and dirent calls on
 * absolute paths, which the libc maps onto the preopened directories (the test preopens the
 * tree at "/" and a second one at "/second"). Prints facts, never times or inode numbers.
 * (No rename between the trees: wasmtime renames on the host's file system, a keep's trees are
 * separate devices and answer EXDEV.) */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void list(const char *path) {
    DIR *dir = opendir(path);
    if (dir == NULL) {
        printf("opendir %s: errno %d\n", path, errno);
        return;
    }
    char *names[64];
    int count = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL && count < 64) {
        if (strcmp(e->d_name, "..") != 0) {
            names[count++] = strdup(e->d_name);
        }
    }
    closedir(dir);
    qsort(names, (size_t)count, sizeof names[0], by_name);
    printf("%s:", path);
    for (int i = 0; i < count; i++) {
        printf(" %s", names[i]);
        free(names[i]);
    }
    printf("\n");
}

static void cat(const char *path) {
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        printf("fopen %s: errno %d\n", path, errno);
        return;
    }
    char line[128];
    while (fgets(line, sizeof line, f) != NULL) {
        printf("%s: %s", path, line);
    }
    fclose(f);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0); /* every line out before a possible trap */
    cat("/hello.txt");
    cat("/sub/inner.txt");
    cat("/second/other.txt");
    FILE *out = fopen("/results.txt", "w");
    for (int i = 0; i < 1000; i++) {
        fprintf(out, "line %d\n", i);
    }
    fclose(out);
    struct stat st;
    printf("stat results.txt: %d size %lld regular %d\n", stat("/results.txt", &st),
           (long long)st.st_size, S_ISREG(st.st_mode));
    printf("mkdir /out: %d\n", mkdir("/out", 0755));
    printf("rename: %d\n", rename("/results.txt", "/out/results.txt"));
    FILE *copy = fopen("/second/copy.txt", "w");
    fputs("copied into the second tree\n", copy);
    fclose(copy);
    errno = 0;
    printf("open /../etc/passwd: %d errno %d\n", open("/../etc/passwd", O_RDONLY), errno);
    errno = 0;
    printf("open /nope/x: %d errno %d\n", open("/nope/x", O_RDONLY), errno);
    FILE *in = fopen("/out/results.txt", "r");
    fseek(in, -9, SEEK_END);
    char tail[16] = {0};
    size_t n = fread(tail, 1, sizeof tail - 1, in);
    fclose(in);
    printf("tail %zu: %s", n, tail);
    printf("access hello.txt R_OK: %d\n", access("/hello.txt", R_OK));
    printf("unlink hello.txt: %d\n", unlink("/hello.txt"));
    errno = 0;
    printf("fopen hello.txt after unlink: %p errno %d\n", (void *)fopen("/hello.txt", "r"), errno);
    printf("truncate: %d\n", truncate("/out/results.txt", 10));
    stat("/out/results.txt", &st);
    printf("size after truncate %lld\n", (long long)st.st_size);
    char cwd[64] = {0};
    printf("getcwd: %s\n", getcwd(cwd, sizeof cwd) ? cwd : "(none)");
    list("/");
    list("/out");
    list("/second");
    return 0;
}
