// splitmix64: a tiny portable generator, so that a seed gives the same numbers everywhere (synthetic
// checkpoints, test inputs).
#pragma once
#include <cmath>
#include <cstdint>

namespace samfast {

struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return (next() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
  float uniform(float lo, float hi) { return lo + (hi - lo) * (float)uniform(); }
  float normal(float stddev) {  // Box-Muller
    const double u1 = 1.0 - uniform(), u2 = uniform();
    return (float)(stddev * std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }
};

}  // namespace samfast
