/* Read stdin to EOF: bytes, lines, an FNV-1a hash, and the first line. */
#include <stdint.h>
#include <stdio.h>

int main(void) {
    unsigned char chunk[1000];
    size_t total = 0, lines = 0, got;
    uint64_t hash = 0xcbf29ce484222325ull;
    char first[64] = "";
    size_t first_len = 0;
    int in_first = 1;
    while ((got = fread(chunk, 1, sizeof chunk, stdin)) > 0) {
        for (size_t i = 0; i < got; i++) {
            hash = (hash ^ chunk[i]) * 0x100000001b3ull;
            if (chunk[i] == '\n') {
                lines++;
                in_first = 0;
            } else if (in_first && first_len < sizeof first - 1) {
                first[first_len++] = (char)chunk[i];
            }
        }
        total += got;
    }
    first[first_len] = 0;
    printf("bytes=%zu lines=%zu fnv1a=%016llx eof=%d error=%d\n", total, lines,
           (unsigned long long)hash, feof(stdin) != 0, ferror(stdin) != 0);
    printf("first line: <%s>\n", first);
    return 0;
}
