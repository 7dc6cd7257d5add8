#include "staleness.h"

void ps_stale_mean_add(ps_stale_mean_t *m, uint64_t staleness) {
    m->n++;
    double w = m->n < PS_STALE_WINDOW ? 1.0 / (double)m->n : 1.0 / PS_STALE_WINDOW;
    m->mean += w * ((double)staleness - m->mean);
}

void ps_staleness_momentum(double mu, double s, double *momentum, double *scale) {
    double m = 1.0 - (1.0 - mu) * (1.0 + s);
    *momentum = m > 0 ? m : 0.0;
    *scale = (1.0 - *momentum) / ((1.0 - mu) * (1.0 + s));
}
