/*
 * hal/ops/text.c - TfIdfVectorizer over integer tokens (opset 9).
 *
 * Semantics: the ONNX operator doc, with ONNX Runtime's reading of it (the
 * implementation the ONNX test data agrees with). X is [C] or [N, C] int32
 * or int64 tokens; the pool (pool_int64s) holds the n-grams of each length
 * n, starting at pool index ngram_counts[n - 1], and ngram_indexes gives
 * each pooled n-gram's output column. For each row, each skip distance
 * d = 1 .. max_skip_count + 1 and each start position, the n-grams
 * x[s], x[s + d], ..., (n from min_gram_length to max_gram_length, inside
 * the row) found in the pool add one to their column; unigrams do not
 * depend on d and are counted on the first pass only. Y (float) is the
 * count (TF), weight if counted (IDF), or count * weight (TFIDF), weights
 * defaulting to 1. Pool strings are not supported (aidos holds no strings).
 * Pool lookups are linear scans: pools are small vocabularies.
 */
#include <string.h>
#include "hal/ops/ops_util.h"

enum { TF_TF, TF_IDF, TF_TFIDF };

typedef struct tfidf_params {
	int64_t rows, cols, out;
	int64_t min_n, max_n, max_skip;
	int mode;
	const int64_t *pool, *counts, *index;
	int n_pool, n_counts, n_index;
	const float *weights;
	int n_weights;
} tfidf_params;

static int tfidf_infer(hal_step *s)
{
	const hal_tensor *x = ou_in(s, 0);
	if (!x)
		return hal_err(s, AIDOS_E_INVALID, "input X is missing");
	if (x->dtype != HAL_DT_I32 && x->dtype != HAL_DT_I64)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "X has dtype %s (int32 or int64)", hal_dtype_name(x->dtype));
	if (x->rank != 1 && x->rank != 2)
		return hal_err(s, AIDOS_E_SHAPE, "X has rank %d (1 or 2)", x->rank);
	if (hal_attr_has(s->node, "pool_strings"))
		return hal_err(s, AIDOS_E_UNSUPPORTED, "attribute pool_strings (string pools)");
	tfidf_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	p->rows = x->rank == 2 ? x->dims[0] : 1;
	p->cols = x->dims[x->rank - 1];
	p->min_n = hal_attr_int(s->node, "min_gram_length", 0);
	p->max_n = hal_attr_int(s->node, "max_gram_length", 0);
	p->max_skip = hal_attr_int(s->node, "max_skip_count", 0);
	const char *mode = hal_attr_str(s->node, "mode", "");
	if (!strcmp(mode, "TF"))
		p->mode = TF_TF;
	else if (!strcmp(mode, "IDF"))
		p->mode = TF_IDF;
	else if (!strcmp(mode, "TFIDF"))
		p->mode = TF_TFIDF;
	else
		return hal_err(s, AIDOS_E_INVALID, "attribute mode '%s' (TF, IDF or TFIDF)", mode);
	p->n_pool = hal_attr_ints(s->node, "pool_int64s", &p->pool);
	p->n_counts = hal_attr_ints(s->node, "ngram_counts", &p->counts);
	p->n_index = hal_attr_ints(s->node, "ngram_indexes", &p->index);
	p->n_weights = hal_attr_floats(s->node, "weights", &p->weights);
	if (p->min_n < 1 || p->max_n < p->min_n || p->max_n > p->n_counts || p->max_skip < 0 ||
	    p->max_skip > 1 << 20)
		return hal_err(s, AIDOS_E_INVALID, "attributes min_gram_length %lld, max_gram_length %lld, max_skip_count %lld do not fit ngram_counts (%d)",
			       (long long)p->min_n, (long long)p->max_n, (long long)p->max_skip, p->n_counts);
	/* every gram of length n sits in [counts[n-1], counts[n] or pool end) */
	int64_t grams = 0;
	for (int i = 0; i < p->n_counts; i++) {
		int64_t lo = p->counts[i], hi = i + 1 < p->n_counts ? p->counts[i + 1] : p->n_pool;
		if (lo < 0 || hi < lo || hi > p->n_pool || (hi - lo) % (i + 1))
			return hal_err(s, AIDOS_E_INVALID, "attribute ngram_counts[%d] = %lld does not split pool_int64s",
				       i, (long long)lo);
		grams += (hi - lo) / (i + 1);
	}
	if (grams != p->n_index)
		return hal_err(s, AIDOS_E_INVALID, "attribute ngram_indexes has %d values for %lld n-grams",
			       p->n_index, (long long)grams);
	if (p->n_weights && p->n_weights != p->n_index)
		return hal_err(s, AIDOS_E_INVALID, "attribute weights has %d values for %d n-grams",
			       p->n_weights, p->n_index);
	p->out = 0;
	for (int i = 0; i < p->n_index; i++) {
		if (p->index[i] < 0 || p->index[i] > HAL_MAX_SPAN)
			return hal_err(s, AIDOS_E_INVALID, "attribute ngram_indexes[%d] = %lld is out of range", i,
				       (long long)p->index[i]);
		if (p->index[i] + 1 > p->out)
			p->out = p->index[i] + 1;
	}
	s->params = p;
	int64_t od[2] = { p->rows, p->out };
	return ou_set(s, s->out[0], HAL_DT_F32, x->rank, x->rank == 2 ? od : od + 1);
}

/* The gram number (index into ngram_indexes) of the n tokens at x[0],
 * x[d], ..., or -1. */
static int64_t tfidf_find(const tfidf_params *p, const hal_tensor *t, int64_t at, int64_t d, int64_t n)
{
	int64_t lo = p->counts[n - 1], hi = n < p->n_counts ? p->counts[n] : p->n_pool;
	int64_t first = 0;
	for (int i = 0; i < n - 1; i++) {
		int64_t a = p->counts[i], b = i + 1 < p->n_counts ? p->counts[i + 1] : p->n_pool;
		first += (b - a) / (i + 1);
	}
	for (int64_t g = lo, k = 0; g + n <= hi; g += n, k++) {
		int64_t j = 0;
		while (j < n && p->pool[g + j] == hal_get_i64(t, at + j * d))
			j++;
		if (j == n)
			return first + k;
	}
	return -1;
}

static int tfidf_exec(hal_step *s)
{
	if (hal_numel(s->out[0]) == 0)
		return 0;   /* empty output: nothing to write, data may be NULL */
	const tfidf_params *p = s->params;
	const hal_tensor *x = s->in[0];
	float *y = s->out[0]->data;   /* [rows, out] */
	memset(y, 0, (size_t)(p->rows * p->out) * sizeof *y);
	for (int64_t r = 0; r < p->rows; r++) {
		float *yr = y + r * p->out;
		int64_t start_n = p->min_n;
		for (int64_t d = 1; d <= p->max_skip + 1; d++) {
			for (int64_t st = 0; st < p->cols; st++)
				for (int64_t n = start_n; n <= p->max_n; n++) {
					if (st + (n - 1) * d >= p->cols)
						break;
					int64_t g = tfidf_find(p, x, r * p->cols + st, d, n);
					if (g >= 0)
						yr[p->index[g]] += 1;
				}
			if (start_n == 1 && ++start_n > p->max_n)
				break;
		}
		if (p->mode != TF_TF)
			for (int g = 0; g < p->n_index; g++) {
				float w = p->n_weights ? p->weights[g] : 1.0f;
				float *c = &yr[p->index[g]];
				*c = p->mode == TF_IDF ? (*c > 0 ? w : 0) : *c * w;
			}
	}
	return 0;
}

static const hal_op op_tfidf = { "TfIdfVectorizer", 9, HAL_OP_PURE, tfidf_infer, tfidf_exec };

const hal_op *const hal_ops_text[] = { &op_tfidf, NULL };
