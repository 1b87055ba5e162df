/* Small float kernels of the forward pass: RMSNorm, RoPE, SwiGLU, residual
 * add, softmax. Scalar references (kvl_cpu_*_ref) and the dispatching entry
 * points; these are cheap next to the matmuls and attention. */
#ifndef KVL_CPU_OPS_H
#define KVL_CPU_OPS_H

#include <stdint.h>

/* y [n] = x [n] / rms(x) * w [n]  (y may alias x). */
void kvl_cpu_rmsnorm(const float *x, const float *w, float *y, int n, float eps);
/* RoPE in place on x [n_heads][head_dim] for one token.
 * cs: [head_dim/2][2] (cos, sin) of this token's position.
 * neox = 0: rotate adjacent pairs (2i, 2i+1) (llama GGUF layout);
 * neox = 1: rotate (i, i + head_dim/2) (qwen2). */
void kvl_cpu_rope(float *x, int n_heads, int head_dim, const float *cs, int neox);
/* Fill cs [head_dim/2][2] for position pos: angle_i = pos * freq[i]. */
void kvl_cpu_rope_cs(float *cs, int head_dim, int32_t pos, const float *freq);
/* g [n] = silu(g) * u. */
void kvl_cpu_swiglu(float *g, const float *u, int n);
/* y [n] += x [n]. */
void kvl_cpu_add(float *y, const float *x, int n);

#endif
