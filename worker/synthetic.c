#include "worker/synthetic.h"

#include "common/base/util.h"

void synthetic_gradient(float *grads, const float *params, size_t n) {
    for (size_t i = 0; i < n; i++)
        grads[i] = SYNTHETIC_DECAY * params[i];
}

void synthetic_wait(double start, double step_ms) {
    double left = start + step_ms / 1e3 - ps_now();
    if (left > 0)
        ps_sleep(left);
}
