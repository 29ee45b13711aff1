/* job_f32.c - what a single-precision job (--precision f32) needs to be checked against the
 * double exact reference: its inputs widened to double one key/value group at a time.
 *
 * Why whole groups and not only the sampled rows: each sampled row's reference meets every key
 * (so all of K and V), and a gradient's reference needs every row's softmax statistics (so all
 * of Q and the upstream too). One group at a time keeps the double copies to one key/value
 * problem and the query problems that share it, whatever the batch: at n = 16384, d = dv = 128
 * a group of one head holds 50 MB of doubles at a time, where a batch of 32 heads widened whole
 * would hold 1.6 GB. Widening is O(n d) per problem, little beside the reference's
 * O(rows n d). */
#include "job.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

double *job_widen(const float *x, int64_t count)
{
    double *y = malloc((size_t)(count > 0 ? count : 1) * sizeof *y);
    for (int64_t i = 0; y && i < count; i++)
        y[i] = x[i];
    return y;
}

int job_group_widen(const job *j, const fr_tensor *up, int64_t h, job_group *g, char *err,
                    size_t errlen)
{
    const fr_problem *p = &j->p;
    int64_t KV = p->kv_batch > 0 ? p->kv_batch : p->batch, G = p->batch / KV;
    int64_t n = p->n, d = p->d, dv = p->dv;
    memset(g, 0, sizeof *g);
    g->p = *p;
    g->p.batch = G;
    g->p.kv_batch = 1;
    if (p->rot.kind == FR_ROT_EXPLICIT && p->rot.w_count > 1) {
        g->p.rot.w = p->rot.w + h * G * (2 * n - 1) * d * d;
        g->p.rot.w_count = G;
    }
    g->q = job_widen(j->in.q->f32 + h * G * n * d, G * n * d);
    g->k = job_widen(j->in.k->f32 + h * n * d, n * d);
    g->v = job_widen(j->in.v->f32 + h * n * dv, n * dv);
    if (up) g->up = job_widen(up->f32 + h * G * n * dv, G * n * dv);
    if (!g->q || !g->k || !g->v || (up && !g->up)) {
        job_group_free(g);
        snprintf(err, errlen, "out of memory widening the inputs");
        return FR_ENOMEM;
    }
    return EXIT_OK;
}

void job_group_free(job_group *g)
{
    free(g->q), free(g->k), free(g->v), free(g->up);
    memset(g, 0, sizeof *g);
}
