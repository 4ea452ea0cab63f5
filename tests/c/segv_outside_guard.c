/* hostcheck's SIGSEGV handler speaks only for its stack guard: a fault anywhere else (here the
 * null page) keeps the default action, so the process dies of SIGSEGV with no trap line. */
#include <stdint.h>

#include "keep_runtime.h"

int keep_app_run(void) {
    *(volatile uint64_t *)8 = 1;
    return 0;
}
