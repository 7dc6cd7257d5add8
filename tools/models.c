/* pstrain export, evaluate, predict and inspect: what a user does with a
 * trained model. Each reads an export (model.json + weights) or a checkpoint
 * (a ckpt-<step> directory, or a model_dir whose manifest names one). */
#include "tools/models.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>

#include "common/daemon/datasets.h"
#include "common/base/log.h"
#include "common/train/checkpoint.h"
#include "common/daemon/config.h"
#include "common/data/dataset.h"
#include "common/data/source.h"
#include "common/base/exitcode.h"
#include "common/train/export.h"
#include "common/formats/image.h"
#include "common/formats/safetensors.h"
#include "common/train/results.h"
#include "common/train/trainer.h"
#include "common/base/util.h"
#include "kernels/backend.h"

/* A checkpoint or export directory: a model_dir stands for its latest
 * checkpoint. */
static int resolve_dir(const char *path, char *out, size_t len) {
    ckpt_manifest_t m;
    char err[PS_ERRLEN];
    int rc = ckpt_manifest_read(path, &m, err, sizeof err);
    if (rc < 0) {
        log_print(stderr, "pstrain: %s", err);
        return -1;
    }
    if (rc == 0)
        ckpt_dir(out, len, path, m.latest);
    else
        snprintf(out, len, "%s", path);
    return 0;
}

static int load_model(const char *path, model_t *m, float **params, uint64_t *step) {
    char dir[PATH_MAX], err[PS_ERRLEN];
    if (resolve_dir(path, dir, sizeof dir))
        return EXIT_DATAERR;
    if (export_load(dir, m, params, step, err, sizeof err)) {
        log_print(stderr, "pstrain: %s", err);
        return EXIT_DATAERR;
    }
    return 0;
}

/* ---- export ---- */

int cmd_export(int argc, char **argv) {
    const char *ckpt = NULL, *out = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--checkpoint") && i + 1 < argc)
            ckpt = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc)
            out = argv[++i];
        else
            ckpt = out = NULL, i = argc;
    }
    if (!ckpt || !out) {
        fprintf(stderr, "usage: pstrain export --checkpoint DIR --out DIR\n");
        return EXIT_USAGE;
    }
    model_t m;
    float *params;
    uint64_t step;
    int rc = load_model(ckpt, &m, &params, &step);
    if (rc)
        return rc;
    char err[PS_ERRLEN];
    if (export_write(&m, params, step, out, err, sizeof err)) {
        log_print(stderr, "pstrain export: %s", err);
        rc = EXIT_IOERR;
    } else {
        printf("exported step %" PRIu64 " (%zu variables, %zu parameters) to %s\n", step, m.nvars,
               m.nparams, out);
    }
    free(params);
    model_free(&m);
    return rc;
}

/* ---- evaluate ---- */

static void print_metrics(uint64_t step, const eval_metrics_t *em) {
    printf("step %" PRIu64 ": loss: %.4f - accuracy: %.4f (%zu examples)\n", step, em->loss,
           em->accuracy, em->n);
    printf("per class:");
    for (size_t c = 0; c < em->nclasses; c++)
        printf(" %.3f", em->class_total[c]
                            ? (double)em->class_correct[c] / (double)em->class_total[c]
                            : 0.0);
    printf("\n");
}

/* The confusion matrix, one row per true class (with its name when known),
 * one column per predicted class. */
static void print_confusion(const eval_metrics_t *em, const char *const *names) {
    printf("confusion matrix (rows: true class, columns: predicted class):\n%-16s", "");
    for (size_t p = 0; p < em->nclasses; p++)
        printf(" %5zu", p);
    printf("\n");
    for (size_t c = 0; c < em->nclasses; c++) {
        printf("%2zu %-13.13s", c, names ? names[c] : "");
        for (size_t p = 0; p < em->nclasses; p++)
            printf(" %5zu", em->confusion[c * em->nclasses + p]);
        printf("\n");
    }
}

int cmd_evaluate(int argc, char **argv) {
    config_t cfg;
    config_defaults(&cfg);
    char err[PS_ERRLEN];
    argc++, argv--; /* config_parse_args keeps argv[0] */
    if (config_parse_args(&cfg, &argc, argv, err, sizeof err)) {
        log_print(stderr, "pstrain evaluate: %s", err);
        return EXIT_USAGE;
    }
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            dir = argv[++i];
        else
            dir = NULL, i = argc;
    }
    if (!dir) {
        fprintf(
            stderr,
            "usage: pstrain evaluate --model DIR [--set data.test=PATH] [--set KEY=VALUE]...\n");
        return EXIT_USAGE;
    }
    model_t m;
    float *params;
    uint64_t step;
    int rc = load_model(dir, &m, &params, &step);
    if (rc)
        return rc;
    dataset_t test;
    if (datasets_load_test(&cfg, &m, &test, err, sizeof err)) {
        log_print(stderr, "pstrain evaluate: %s", err);
        free(params);
        model_free(&m);
        return EXIT_DATAERR;
    }
    cpu_backend_init();
    trainer_t *t =
        trainer_create(&m, cpu_backend(), config_threads(&cfg), (size_t)cfg.train.batch_size);
    eval_metrics_t em;
    trainer_evaluate(t, params, &test, (size_t)cfg.eval.batch_size, &em);
    print_metrics(step, &em);
    print_confusion(&em, results_default_class_names(cfg.data.dir, em.nclasses));
    eval_metrics_free(&em);
    trainer_free(t);
    dataset_free(&test);
    free(params);
    model_free(&m);
    return EXIT_OK;
}

/* ---- predict ---- */

typedef struct {
    const char *labels;
    bool summary;
    bool probs; /* every class's probability, not only the best */
    size_t total, correct;
    bool labelled; /* some file had labels: --labels, or a CSV's own */
    char **names;  /* the model_dir's class_names.json, or NULL */
    size_t nnames;
} predict_opts_t;

/* " (Sandal)" when the class has a name, else "". */
static void print_class(const predict_opts_t *o, size_t c) {
    if (c < o->nnames)
        printf(" (%s)", o->names[c]);
}

static bool has_csv_suffix(const char *path) {
    size_t n = strlen(path);
    return (n > 4 && !strcasecmp(path + n - 4, ".csv")) ||
           (n > 7 && !strcasecmp(path + n - 7, ".csv.gz"));
}

/* An IDX file (labels from --labels), or a CSV file of the model's input
 * width and a label in the last column (token ids for an embedding: every
 * one checked). */
static int load_examples(const model_t *m, const char *path, predict_opts_t *o, dataset_t *d,
                         bool *labelled, char *err, size_t errlen) {
    *labelled = o->labels != NULL;
    if (!has_csv_suffix(path))
        return dataset_load_idx(d, path, o->labels, err, errlen);
    *labelled = true;
    data_spec_t s = {.path = path,
                     .format = "csv",
                     .h = m->input[0],
                     .w = m->input[1],
                     .c = m->input[2],
                     .nclasses = model_label_classes(m),
                     .label_column = "",
                     .csv_header = "none"};
    if (dataset_load(d, &s, err, errlen))
        return -1;
    if (trainer_check_data(m, d, path, err, errlen)) {
        dataset_free(d);
        return -1;
    }
    return 0;
}

/* Predicts every example of an IDX or CSV file, batch by batch. */
static int predict_idx(const model_t *m, const float *params, const char *path, predict_opts_t *o) {
    char err[PS_ERRLEN];
    dataset_t d;
    bool labelled;
    if (load_examples(m, path, o, &d, &labelled, err, sizeof err)) {
        log_print(stderr, "pstrain predict: %s", err);
        return EXIT_DATAERR;
    }
    o->labelled |= labelled;
    if (d.example_size != m->input[0] * m->input[1] * m->input[2]) {
        fprintf(stderr, "pstrain predict: %s holds %zux%zu images; the model takes %zux%zux%zu\n",
                path, d.h, d.w, m->input[0], m->input[1], m->input[2]);
        dataset_free(&d);
        return EXIT_DATAERR;
    }
    const size_t batch = 256;
    model_exec_t *e = model_exec_create(m, cpu_backend(), batch);
    for (size_t first = 0; first < d.n; first += batch) {
        size_t n = PS_MIN(batch, d.n - first);
        float *x = model_exec_input(e);
        for (size_t i = 0; i < n; i++)
            dataset_example(&d, first + i, x + i * d.example_size);
        memset(model_exec_labels(e), 0, n * sizeof(int32_t));
        model_forward(e, params, n, false, 0, 0);
        const float *probs = model_exec_probs(e, n);
        for (size_t i = 0; i < n; i++) {
            const float *p = probs + i * m->nclasses;
            /* a regression's rounded output may be negative: no class then */
            int32_t cls = model_predict_class(m, p);
            size_t best = cls < 0 ? SIZE_MAX : (size_t)cls, shown = m->nclasses == 1 ? 0 : best;
            int label = d.labels[first + i];
            o->total++;
            o->correct += labelled && (size_t)label == best;
            if (o->summary)
                continue;
            printf("%s[%zu]: class %d", path, first + i, (int)cls);
            print_class(o, best);
            printf(" (p=%.4f)", (double)p[shown]);
            for (size_t c = 0; o->probs && c < m->nclasses; c++)
                printf("%s%.8g", c ? " " : " probs ", (double)p[c]);
            if (labelled)
                printf(" label %d%s", label, (size_t)label == best ? "" : " (wrong)");
            printf("\n");
        }
    }
    model_exec_free(e);
    dataset_free(&d);
    return 0;
}

static bool has_image_suffix(const char *path) {
    const char *dot = strrchr(path, '.');
    return dot &&
           (!strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg"));
}

/* A PNG or JPEG file into x, at the model's input size. */
static int load_image(const model_t *m, const char *path, float *x, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return ps_errf(err, errlen, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0, got;
    uint8_t *buf = xmalloc(cap);
    while ((got = fread(buf + n, 1, cap - n, f)) > 0)
        if ((n += got) == cap)
            buf = xrealloc(buf, cap *= 2);
    fclose(f);
    int rc = image_decode(path, buf, n, m->input[0], m->input[1], m->input[2], x, err, errlen);
    free(buf);
    return rc;
}

/* One PNG, as gray or RGB at the model's input size. */
static int predict_png(const model_t *m, const float *params, const char *path, predict_opts_t *o) {
    char err[PS_ERRLEN];
    model_exec_t *e = model_exec_create(m, cpu_backend(), 1);
    if (load_image(m, path, model_exec_input(e), err, sizeof err)) {
        log_print(stderr, "pstrain predict: %s", err);
        model_exec_free(e);
        return EXIT_DATAERR;
    }
    memset(model_exec_labels(e), 0, sizeof(int32_t));
    model_forward(e, params, 1, false, 0, 0);
    const float *p = model_exec_probs(e, 1);
    int32_t cls = model_predict_class(m, p);
    size_t best = cls < 0 ? SIZE_MAX : (size_t)cls, shown = m->nclasses == 1 ? 0 : best;
    o->total++;
    printf("%s: class %d", path, (int)cls);
    print_class(o, best);
    printf(" (p=%.4f)\n", (double)p[shown]);
    model_exec_free(e);
    return 0;
}

int cmd_predict(int argc, char **argv) {
    const char *dir = NULL;
    predict_opts_t o = {0};
    const char **inputs = xcalloc((size_t)argc + 1, sizeof *inputs);
    size_t ninputs = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            dir = argv[++i];
        else if (!strcmp(argv[i], "--labels") && i + 1 < argc)
            o.labels = argv[++i];
        else if (!strcmp(argv[i], "--summary"))
            o.summary = true;
        else if (!strcmp(argv[i], "--probs"))
            o.probs = true;
        else if (argv[i][0] == '-' && argv[i][1] == '-')
            dir = NULL, i = argc;
        else
            inputs[ninputs++] = argv[i];
    }
    if (!dir || ninputs == 0) {
        free(inputs);
        fprintf(stderr, "usage: pstrain predict --model DIR [--labels FILE] [--summary] [--probs] "
                        "IMAGES...\n");
        return EXIT_USAGE;
    }
    model_t m;
    float *params;
    uint64_t step;
    int rc = load_model(dir, &m, &params, &step);
    if (rc) {
        free(inputs);
        return rc;
    }
    char err[PS_ERRLEN];
    if (datasets_read_class_names(dir, &o.names, &o.nnames, err, sizeof err) < 0) {
        log_print(stderr, "pstrain predict: %s", err);
        rc = EXIT_DATAERR;
    }
    /* Keras's model of a from_logits head predicts the logits themselves. */
    if (o.probs && m.loss == LOSS_SPARSE_CE_LOGITS)
        log_info("pstrain predict: the model outputs logits (from_logits): --probs prints their "
                 "softmax; Keras's predict gives the logits");
    cpu_backend_init();
    for (size_t i = 0; i < ninputs && rc == 0; i++)
        rc = has_image_suffix(inputs[i]) ? predict_png(&m, params, inputs[i], &o)
                                         : predict_idx(&m, params, inputs[i], &o);
    free(inputs);
    if (rc == 0 && o.labelled)
        printf("accuracy: %.4f (%zu of %zu)\n", o.total ? (double)o.correct / (double)o.total : 0.0,
               o.correct, o.total);
    data_free_files(o.names, o.nnames);
    free(params);
    model_free(&m);
    return rc;
}

/* ---- inspect ---- */

static void inspect_file(const char *path) {
    st_file_t f;
    char err[PS_ERRLEN];
    /* Names and metadata come from the file: escaped (log_escape) before
     * they reach a terminal. */
    char key[256], v[256];
    if (st_open(&f, path, err, sizeof err)) {
        log_print(stdout, "  %s", err);
        return;
    }
    printf("%s:", log_escape(path, v, sizeof v));
    for (size_t i = 0; i < f.nmeta; i++)
        if (strncmp(f.meta[i].key, ST_CRC_PREFIX, strlen(ST_CRC_PREFIX)) != 0)
            printf(" %s=%s", log_escape(f.meta[i].key, key, sizeof key),
                   log_escape(f.meta[i].value, v, sizeof v));
    printf("\n");
    /* The tensors' CRC32Cs and NaN/Inf, as a restore checks them. */
    st_sum_t check;
    if (st_verify(&f, true, &check, err, sizeof err))
        log_print(stdout, "  DAMAGED: %s", err);
    else
        printf("  verified: %zu of %zu tensors have a CRC32C and match; no NaN or Inf; file CRC32C "
               "%08x\n",
               check.nsums, f.n, (unsigned)check.crc32c);
    for (size_t i = 0; i < f.n; i++) {
        const st_entry_t *e = &f.entries[i];
        float *x = xmalloc((e->count ? e->count : 1) * sizeof(float));
        if (st_read(&f, e, 0, e->count, x, err, sizeof err)) {
            log_print(stdout, "  %s", err);
            free(x);
            continue;
        }
        double sum = 0, lo = e->count ? x[0] : 0, hi = lo;
        for (size_t k = 0; k < e->count; k++) {
            sum += x[k];
            lo = PS_MIN(lo, (double)x[k]);
            hi = PS_MAX(hi, (double)x[k]);
        }
        printf("  %-32s [", log_escape(e->name, key, sizeof key));
        for (size_t d = 0; d < e->ndim; d++)
            printf("%s%zu", d ? ", " : "", e->shape[d]);
        printf("]  mean %.4g  min %.4g  max %.4g\n", e->count ? sum / (double)e->count : 0.0, lo,
               hi);
        free(x);
    }
    st_close(&f);
}

static int is_safetensors(const struct dirent *e) {
    size_t n = strlen(e->d_name);
    return n > 12 && !strcmp(e->d_name + n - 12, ".safetensors");
}

static int inspect_dir(const char *dir) {
    struct dirent **list;
    int n = scandir(dir, &list, is_safetensors, alphasort);
    if (n < 0) {
        fprintf(stderr, "pstrain inspect: %s: %m\n", dir);
        return EXIT_DATAERR;
    }
    if (n == 0)
        fprintf(stderr, "pstrain inspect: %s holds no .safetensors files\n", dir);
    for (int i = 0; i < n; i++) {
        char path[PATH_MAX + 256];
        snprintf(path, sizeof path, "%s/%s", dir, list[i]->d_name);
        inspect_file(path);
        free(list[i]);
    }
    free(list);
    return n > 0 ? EXIT_OK : EXIT_DATAERR;
}

int cmd_inspect(int argc, char **argv) {
    if (argc != 1) {
        fprintf(stderr, "usage: pstrain inspect PATH (a model_dir, checkpoint, export or "
                        ".safetensors file)\n");
        return EXIT_USAGE;
    }
    ckpt_manifest_t man;
    char err[PS_ERRLEN], dir[PATH_MAX];
    int rc = ckpt_manifest_read(argv[0], &man, err, sizeof err);
    if (rc < 0) {
        log_print(stderr, "pstrain inspect: %s", err);
        return EXIT_DATAERR;
    }
    if (rc == 0) {
        printf("%s: latest ckpt-%" PRIu64 "%s, kept:", argv[0], man.latest,
               man.final ? " (final)" : "");
        for (size_t i = 0; i < man.nkept; i++)
            printf(" %" PRIu64, man.kept[i]);
        printf("\n");
    }
    struct stat sb;
    if (stat(argv[0], &sb) == 0 && S_ISREG(sb.st_mode)) {
        inspect_file(argv[0]);
        return EXIT_OK;
    }
    if (resolve_dir(argv[0], dir, sizeof dir))
        return EXIT_DATAERR;
    return inspect_dir(dir);
}
