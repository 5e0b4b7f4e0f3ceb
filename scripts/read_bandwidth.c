// How fast one core (and two) read memory that does not fit the private caches: the ceiling of
// decoding one token at a time, which streams every weight once per token (docs/benchmarks.md,
// the T5 section). Sums a 160 MiB buffer with AVX-512 loads, best of 6 passes per thread count.
//
//   gcc -O3 -march=native -fopenmp scripts/read_bandwidth.c -o /tmp/read_bandwidth
//   /tmp/read_bandwidth
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
  size_t bytes = (size_t)160 << 20, n = bytes / sizeof(float);
  float *a = aligned_alloc(64, bytes);
  if (!a) return 1;
  for (size_t i = 0; i < n; i++) a[i] = (float)i * 1e-9f;
  for (int threads = 1; threads <= 2; threads++) {
    double best = 1e9;
    float sum = 0;
    for (int pass = 0; pass < 6; pass++) {
      double t = now();
#pragma omp parallel for num_threads(threads) reduction(+ : sum)
      for (size_t i = 0; i < n; i += 64) {
        __m512 x = _mm512_add_ps(_mm512_add_ps(_mm512_load_ps(a + i), _mm512_load_ps(a + i + 16)),
                                 _mm512_add_ps(_mm512_load_ps(a + i + 32), _mm512_load_ps(a + i + 48)));
        sum += _mm512_reduce_add_ps(x);
      }
      double e = now() - t;
      if (e < best) best = e;
    }
    // The sum is printed so that the loads cannot be optimised away.
    printf("%d thread(s): %.1f GB/s (checksum %g)\n", threads, bytes / best / 1e9, sum);
  }
  free(a);
  return 0;
}
