/* random_get through getentropy: two draws differ and are not all zero; prints only facts. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int all_zero(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (p[i] != 0) {
            return 0;
        }
    }
    return 1;
}

int main(void) {
    unsigned char a[64], b[64], big[256];
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    memset(big, 0, sizeof big);
    int ok = getentropy(a, sizeof a) == 0 && getentropy(b, sizeof b) == 0 &&
             getentropy(big, sizeof big) == 0;
    int odd = getentropy(a, 3) == 0; /* a length that is not a multiple of 8 */
    printf("getentropy succeeded: %s\n", ok && odd ? "yes" : "no");
    printf("two draws differ: %s\n", memcmp(a + 3, b + 3, sizeof a - 3) != 0 ? "yes" : "no");
    printf("not all zero: %s\n", !all_zero(b, sizeof b) && !all_zero(big, sizeof big) ? "yes" : "no");
    printf("too long refused: %s\n", getentropy(big, 257) != 0 ? "yes" : "no");
    return 0;
}
