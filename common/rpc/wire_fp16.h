/* IEEE 754 half precision (binary16) on the wire, beside bfloat16
 * (wire.h): rpc.wire_dtype fp16. A half has 10 bits of mantissa (bfloat16:
 * 7) but 5 of exponent (bfloat16: 8): finite values reach only 65504, and
 * below 2^-14 they lose precision (subnormals down to 2^-24). So a value
 * whose magnitude is over 65504 is clamped to +-65504 and counted (the
 * caller warns; error feedback on the worker keeps what the clamp left
 * out); NaN stays NaN (the PS refuses it) and Inf, which only an Inf
 * produces, stays Inf.
 *
 * Conversion rounds to nearest, ties to even, as IEEE requires: with the
 * F16C instructions where the CPU has them (checked once at run time), by
 * integer arithmetic on the bits otherwise; both give the same bits for
 * every float but NaN (either gives a quiet NaN). */
#ifndef PSTRAIN_WIRE_FP16_H
#define PSTRAIN_WIRE_FP16_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The largest finite half. */
#define WIRE_FP16_MAX 65504.0f

/* Writes n floats as halves (little-endian, 2 bytes each) at dst; returns
 * the number of values clamped to +-WIRE_FP16_MAX. */
size_t wire_fp16_from_floats(uint8_t *dst, const float *src, size_t n);
/* Reads n halves (2 bytes each, any alignment) into floats (exactly). */
void wire_fp16_to_floats(float *dst, const uint8_t *src, size_t n);
/* 0 when all n halves are finite, -1 when any is NaN or Inf. */
int wire_fp16_check_finite(const uint8_t *src, size_t n);

/* The portable conversions of one value, which the F16C path must match
 * (tests compare them). */
uint16_t wire_fp16_of(float f);
float wire_fp16_value(uint16_t h);
/* Whether the F16C path is in use on this CPU. */
bool wire_fp16_hw(void);
/* Forces the portable path (tests: both paths on one machine). */
void wire_fp16_force_portable(bool on);

#endif
