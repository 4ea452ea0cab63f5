/* Floating point: the Mandelbrot set on a 600x600 grid, 200 iterations per point. */
#include "bench_clock.h"

int main(int argc, char **argv) {
    int reps = bench_repetitions(argc, argv);
    volatile int size = 600;
    for (int r = 0; r < reps; r++) {
        int64_t start = bench_now_ns();
        uint64_t inside = 0, total_iterations = 0;
        for (int py = 0; py < size; py++) {
            double ci = 2.0 * py / size - 1.0;
            for (int px = 0; px < size; px++) {
                double cr = 2.0 * px / size - 1.5, zr = 0, zi = 0;
                int i = 0;
                for (; i < 200 && zr * zr + zi * zi <= 4.0; i++) {
                    double t = zr * zr - zi * zi + cr;
                    zi = 2 * zr * zi + ci;
                    zr = t;
                }
                inside += i == 200;
                total_iterations += (uint64_t)i;
            }
        }
        int64_t end = bench_now_ns();
        printf("mandelbrot %dx%d: %llu inside, %llu iterations\n", size, size,
               (unsigned long long)inside, (unsigned long long)total_iterations);
        bench_report(start, end);
    }
    return 0;
}
