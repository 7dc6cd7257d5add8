/* train.staleness_lr=momentum: momentum kept correct under staleness.
 *
 * Asynchrony is itself a momentum (Mitliagkas et al., 2016, "Asynchrony
 * begets momentum"): when the pushes applied are on average s updates stale,
 * each gradient keeps acting for about s more updates, as momentum
 * s / (1 + s) would make it; on top of the configured momentum mu that adds
 * up to far more than mu, and the updates overshoot. This rule keeps the
 * total what mu alone gives one worker: the long-run step of a constant
 * gradient is lr / (1 - mu); two momentums in series give
 * lr / ((1 - mu') (1 - s / (1 + s))) = lr (1 + s) / (1 - mu'). So
 *   mu'   = max(0, 1 - (1 - mu) (1 + s))           the momentum applied, and
 *   scale = (1 - mu') / ((1 - mu) (1 + s))         the step size's multiplier
 * (scale is 1 while mu' > 0; once asynchrony alone exceeds mu, the rate is
 * lowered instead). s is a running mean of the pushes' staleness. For mu
 * 0.9: with two workers (s ~ 0.5) momentum 0.85 at the full rate; with 16
 * on one machine (s ~ 6) momentum 0.3; from s = 9 on, momentum 0 and the
 * rate times 10 / (1 + s). */
#ifndef PSTRAIN_PS_STALENESS_H
#define PSTRAIN_PS_STALENESS_H

#include <stdint.h>

/* The mean staleness: the plain mean of the first PS_STALE_WINDOW pushes,
 * then a moving average over about that many. */
#define PS_STALE_WINDOW 100

typedef struct {
    double mean;
    uint64_t n;
} ps_stale_mean_t;

void ps_stale_mean_add(ps_stale_mean_t *m, uint64_t staleness);

/* mu' and scale above, for configured momentum mu in [0, 1) and mean
 * staleness s >= 0. */
void ps_staleness_momentum(double mu, double s, double *momentum, double *scale);

#endif
