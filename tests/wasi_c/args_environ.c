/* argv and the environment, as the program sees them. */
#include <stdio.h>
#include <stdlib.h>

extern char **environ;

int main(int argc, char **argv) {
    printf("argc=%d\n", argc);
    for (int i = 0; i < argc; i++) {
        printf("argv[%d]=<%s>\n", i, argv[i]);
    }
    for (char **e = environ; *e != NULL; e++) {
        printf("env <%s>\n", *e);
    }
    const char *keep = getenv("KEEP");
    printf("getenv(KEEP)=%s\n", keep != NULL ? keep : "(null)");
    printf("getenv(MISSING)=%s\n", getenv("MISSING") != NULL ? "set" : "(null)");
    return 0;
}
