/* CPU_HOT: the attribute of the CPU backend's hot loops (kernels/cpu/). */
#ifndef PSTRAIN_CPU_HOT_H
#define PSTRAIN_CPU_HOT_H

/* Hot loops get one clone per vector ISA, picked when the program loads (the
 * build has no -march), and GCC's full vectoriser cost model: -O2's "very
 * cheap" model leaves every loop whose trip count is not a known multiple of
 * the vector width scalar. Not under GCC's ThreadSanitizer: the clones'
 * ifunc resolvers run while the loader relocates the program, before the
 * TSan runtime is set up, and their instrumented entry crashes the program
 * before main (clang has no such clones here, so it is unaffected). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
#define CPU_HOT                                                                                    \
    __attribute__((optimize("vect-cost-model=dynamic", "no-tree-loop-distribute-patterns"),        \
                   target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define CPU_HOT
#endif

#endif
