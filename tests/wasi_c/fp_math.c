/* libm (wasi-libc's musl) and IEEE arithmetic, printed with 17 significant digits. */
#include <float.h>
#include <math.h>
#include <stdio.h>

int main(void) {
    const double xs[] = {0.0, 1e-9, 0.5, 1.0, 2.0, 3.141592653589793, 10.0, 100.25, -7.75, 1e6,
                         1e22};
    for (size_t i = 0; i < sizeof xs / sizeof xs[0]; i++) {
        double x = xs[i];
        printf("x=%.17g sin=%.17g cos=%.17g tan=%.17g\n", x, sin(x), cos(x), tan(x));
        printf("  exp=%.17g log=%.17g log10=%.17g sqrt=%.17g\n", exp(x / 8), log(fabs(x) + 1),
               log10(fabs(x) + 1), sqrt(fabs(x)));
        printf("  pow=%.17g atan2=%.17g fmod=%.17g cbrt=%.17g\n", pow(fabs(x) + 0.5, 1.7),
               atan2(x, 3.0), fmod(x, 0.7), cbrt(x));
        printf("  floor=%.17g ceil=%.17g round=%.17g trunc=%.17g hypot=%.17g\n", floor(x / 3),
               ceil(x / 3), round(x / 3), trunc(x / 3), hypot(x, 4.0));
    }
    float f = 1.0f;
    for (int i = 0; i < 20; i++) {
        f = sinf(f) * 1.5f + sqrtf(f);
    }
    printf("float iteration=%.9g expf=%.9g logf=%.9g powf=%.9g\n", (double)f, (double)expf(1.5f),
           (double)logf(3.0f), (double)powf(2.0f, 0.5f));
    volatile double tiny = DBL_MIN, big = DBL_MAX, zero = 0.0;
    printf("subnormal=%.17g overflow=%.17g nan=%d inf=%d\n", tiny / 3, big * 2, isnan(zero / zero),
           isinf(1 / zero));
    double sum = 0;
    for (int i = 1; i <= 100000; i++) {
        sum += 1.0 / ((double)i * i);
    }
    printf("basel partial sum=%.17g pi^2/6=%.17g\n", sum, M_PI * M_PI / 6);
    printf("int conversions: %d %lld %u\n", (int)-2.9, (long long)1e18, (unsigned)3.99);
    return 0;
}
