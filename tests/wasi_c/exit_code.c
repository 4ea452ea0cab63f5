/* Exit statuses: argv[1] is the status, argv[2] the way out (return, exit, _Exit). Output
 * written without a newline before exit() must still be flushed; _Exit flushes nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void goodbye(void) { printf(" [atexit ran]"); }

int main(int argc, char **argv) {
    if (argc < 3) {
        printf("usage: exit_code STATUS return|exit|_Exit\n");
        return 2;
    }
    int status = atoi(argv[1]);
    atexit(goodbye);
    printf("leaving with %d by %s", status, argv[2]);
    if (strcmp(argv[2], "exit") == 0) {
        exit(status);
    }
    if (strcmp(argv[2], "_Exit") == 0) {
        fflush(stdout);
        _Exit(status);
    }
    return status;
}
