/* A training step on the CPU as the standalone worker runs it (trainer_step:
 * forward, backward and the optimizer of the default CNN): once warm it
 * allocates nothing and starts no thread, and two runs at the same thread
 * count end with the same weights, bit for bit.
 *
 * The counts come from this test binary's own malloc family and
 * pthread_create, which take the place of glibc's for every library in the
 * process (glibc's documented "Replacing malloc") and forward to glibc's
 * __libc_* functions and to the next pthread_create. Under a sanitizer,
 * whose runtime interposes the same functions, allocations are counted
 * through its malloc hook instead and thread creation is not counted. */
#include "test.h"

#include <dirent.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/base/util.h"
#include "common/model/model.h"
#include "common/train/store.h"
#include "common/train/trainer.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||                         \
    __has_feature(memory_sanitizer)
#define STEP_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define STEP_SANITIZED 1
#endif

/* Allocations and thread creations while counting is on. */
static int counting;
static uint64_t allocations, threads_created;

static void count_allocation(void) {
    if (__atomic_load_n(&counting, __ATOMIC_RELAXED))
        __atomic_add_fetch(&allocations, 1, __ATOMIC_RELAXED);
}

#ifdef STEP_SANITIZED
/* The sanitizers' hook (sanitizer/allocator_interface.h, which GCC's
 * packages do not always install): called on every allocation. */
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                              void (*free_hook)(const volatile void *));

static void malloc_hook(const volatile void *p, size_t n) {
    (void)p;
    (void)n;
    count_allocation();
}

static void free_hook(const volatile void *p) {
    (void)p;
}

/* false: thread creation cannot be counted in this build */
static bool counters_install(void) {
    __sanitizer_install_malloc_and_free_hooks(malloc_hook, free_hook);
    return false;
}
#else
void *__libc_malloc(size_t n);
void *__libc_calloc(size_t count, size_t n);
void *__libc_realloc(void *p, size_t n);
void *__libc_memalign(size_t align, size_t n);
void __libc_free(void *p);

void *malloc(size_t n) {
    count_allocation();
    return __libc_malloc(n);
}

void *calloc(size_t count, size_t n) {
    count_allocation();
    return __libc_calloc(count, n);
}

void *realloc(void *p, size_t n) {
    count_allocation();
    return __libc_realloc(p, n);
}

void free(void *p) {
    __libc_free(p);
}

void *aligned_alloc(size_t align, size_t n) {
    count_allocation();
    return __libc_memalign(align, n);
}

void *memalign(size_t align, size_t n) {
    count_allocation();
    return __libc_memalign(align, n);
}

int posix_memalign(void **out, size_t align, size_t n) {
    if (align < sizeof(void *) || (align & (align - 1)) != 0)
        return 22; /* EINVAL */
    count_allocation();
    void *p = __libc_memalign(align, n);
    if (!p)
        return 12; /* ENOMEM */
    *out = p;
    return 0;
}

typedef int (*create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg) {
    static create_fn next;
    create_fn f = __atomic_load_n(&next, __ATOMIC_ACQUIRE);
    if (!f) {
        f = (create_fn)dlsym(RTLD_NEXT, "pthread_create");
        __atomic_store_n(&next, f, __ATOMIC_RELEASE);
    }
    if (__atomic_load_n(&counting, __ATOMIC_RELAXED))
        __atomic_add_fetch(&threads_created, 1, __ATOMIC_RELAXED);
    return f(t, attr, fn, arg);
}

static bool counters_install(void) {
    return true;
}
#endif

static void counters_start(void) {
    __atomic_store_n(&allocations, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&threads_created, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&counting, 1, __ATOMIC_SEQ_CST);
}

static void counters_stop(void) {
    __atomic_store_n(&counting, 0, __ATOMIC_SEQ_CST);
}

/* The threads of this process now. */
static size_t thread_count(void) {
    DIR *d = opendir("/proc/self/task");
    size_t n = 0;
    if (!d)
        return 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* The default CNN, SGD with momentum, one batch of noise, and a trainer on
 * the CPU backend with the store attached, as pstrain-worker runs it alone. */
typedef struct {
    model_t m;
    store_t s;
    trainer_t *t;
    float *x;
    int32_t y[16];
    size_t n;
} step_env_t;

static int step_env_init(step_env_t *e, size_t threads) {
    char err[PS_ERRLEN];
    memset(e, 0, sizeof *e);
    if (model_load(&e->m, "cnn", err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    cpu_backend_init();
    optim_cfg_t oc;
    optim_defaults(&oc, OPTIM_SGD);
    oc.momentum = 0.9;
    store_init_full(&e->s, &e->m, &oc, 42);
    e->n = sizeof e->y / sizeof e->y[0];
    size_t in_size = e->m.input[0] * e->m.input[1] * e->m.input[2];
    e->x = xalloc_aligned(e->n * in_size * sizeof(float));
    for (size_t i = 0; i < e->n * in_size; i++)
        e->x[i] = rng_uniform(5, i);
    for (size_t i = 0; i < e->n; i++)
        e->y[i] = (int32_t)(i % 10);
    e->t = trainer_create(&e->m, cpu_backend(), threads, e->n);
    trainer_attach_store(e->t, &e->s);
    return 0;
}

static void step_env_run(step_env_t *e, size_t first, size_t steps) {
    for (size_t i = first; i < first + steps; i++) {
        step_metrics_t sm;
        trainer_step(e->t, e->x, e->y, e->n, (uint64_t)i, &sm);
    }
}

static void step_env_free(step_env_t *e) {
    trainer_free(e->t);
    store_free(&e->s);
    free(e->x);
    model_free(&e->m);
}

/* Once warm, steps allocate nothing and start no thread: the trainer's pool
 * (threads - 1 workers and the caller) runs every op of the step, the
 * optimizer's update included. */
void test_train_step_no_alloc(void) {
    bool threads_counted = counters_install();
    /* the counters see what they should, or a zero below would prove nothing */
    counters_start();
    void *volatile probe = malloc(100);
    free(probe);
    step_env_t e;
    CHECK(step_env_init(&e, 2) == 0);
    counters_stop();
    CHECK(allocations >= 2);
    if (threads_counted)
        CHECK_INT_EQ(threads_created, 1); /* the pool's one worker beside the caller */
    step_env_run(&e, 0, 3);               /* first touches, OpenBLAS's buffers */
    size_t before = thread_count();
    counters_start();
    step_env_run(&e, 3, 5);
    counters_stop();
    CHECK_INT_EQ(allocations, 0);
    CHECK_INT_EQ(threads_created, 0);
    CHECK_INT_EQ(thread_count(), before);
    step_env_free(&e);
    if (!threads_counted)
        printf("allocations counted through the sanitizer's malloc hook; thread creation "
               "not counted (the sanitizer's runtime owns pthread_create)\n");
}

/* Two runs of the same steps at the same thread count end with the same
 * weights and optimizer slots, bit for bit; and the same as the gradient
 * followed by the whole store's update on one thread (trainer_step updates
 * a stripe on each thread of the pool). */
void test_train_step_same_threads_same_weights(void) {
    step_env_t a, b, c;
    CHECK(step_env_init(&a, 2) == 0);
    CHECK(step_env_init(&b, 2) == 0);
    CHECK(step_env_init(&c, 2) == 0);
    size_t bytes = a.s.size * sizeof(float);
    /* the steps move the weights: the comparisons are not of the start */
    float *start = xmalloc(bytes), *g = xmalloc(bytes);
    memcpy(start, a.s.w, bytes);
    step_env_run(&a, 0, 6);
    step_env_run(&b, 0, 6);
    for (size_t i = 0; i < 6; i++) {
        step_metrics_t sm;
        trainer_gradient(c.t, c.s.w, c.x, c.y, c.n, (uint64_t)i, g, &sm);
        store_apply(&c.s, g);
    }
    CHECK(memcmp(a.s.w, start, bytes) != 0);
    CHECK(memcmp(a.s.w, b.s.w, bytes) == 0);
    CHECK(memcmp(a.s.slots[0], b.s.slots[0], bytes) == 0);
    CHECK(memcmp(a.s.w, c.s.w, bytes) == 0);
    CHECK(memcmp(a.s.slots[0], c.s.slots[0], bytes) == 0);
    CHECK_INT_EQ(a.s.iterations, 6);
    free(start);
    free(g);
    step_env_free(&a);
    step_env_free(&b);
    step_env_free(&c);
}
