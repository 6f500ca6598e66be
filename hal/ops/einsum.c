/*
 * hal/ops/einsum.c - Einsum (opset 12): any number of inputs, explicit
 * ("bhqd,bhkd->bhqk") and implicit ("ij,jk") outputs, "..." broadcast dims,
 * repeated labels (diagonals, "ii->i"), sums over labels absent from the
 * output, transposes.
 *
 * Semantics: numpy.einsum as the ONNX docs specify it. Labels are letters;
 * "..." stands for the leading dims not named by letters, aligned right
 * across inputs and broadcast as numpy does. An implicit output is the
 * ellipsis dims followed by the letters used exactly once, in ASCII order.
 *
 * infer() reduces the equation to a list of distinct labels, the output ones
 * first, and per input a stride for each label (the sum of the strides of
 * the input dims carrying it, 0 where the input lacks it or broadcasts it).
 * exec() walks every label combination once: out[o] = sum over the summed
 * labels of the product of the inputs. This is the scalar reference; it
 * costs the product of all label sizes.
 */
#include <string.h>
#include "hal/ops/ops_util.h"

#define EI_MAX_IN 8
#define EI_MAX_LAB (52 + HAL_MAX_RANK)
#define ELL0 52              /* label ids of ellipsis dims: ELL0 + k */

typedef struct einsum_params {
	int n_in, n_lab, n_out;
	int64_t size[EI_MAX_LAB];                 /* per label, in output-first order */
	int64_t stride[EI_MAX_IN][EI_MAX_LAB];    /* element strides per input */
} einsum_params;

static int lab_id(char c)
{
	if (c >= 'a' && c <= 'z')
		return c - 'a';
	if (c >= 'A' && c <= 'Z')
		return 26 + c - 'A';
	return -1;
}

/* ASCII order of label ids: 'A'..'Z' before 'a'..'z'. */
static int lab_ascii(int id)
{
	return id < 26 ? 'a' + id : 'A' + id - 26;
}

/* Parses one term (letters and at most one "...") of length len into ids:
 * ELL0 + k for the k-th of n_ell ellipsis dims (numbered so that the last dim
 * of every input is ELL0 + max_ell - 1). Returns the count, -1 on error. */
static int parse_term(const char *t, int len, int rank_for_ell, int max_ell, int *ids, int max)
{
	int n = 0, letters = 0, ell = 0;
	for (int i = 0; i < len; i++)
		if (lab_id(t[i]) >= 0)
			letters++;
	for (int i = 0; i < len;) {
		if (t[i] == '.') {
			if (ell || i + 2 >= len + 0 || t[i + 1] != '.' || t[i + 2] != '.')
				return -1;
			ell = 1;
			int ne = rank_for_ell < 0 ? max_ell : rank_for_ell - letters;
			if (ne < 0 || ne > max_ell)
				return -1;
			for (int k = 0; k < ne; k++) {
				if (n >= max)
					return -1;
				ids[n++] = ELL0 + max_ell - ne + k;
			}
			i += 3;
			continue;
		}
		int id = lab_id(t[i]);
		if (id < 0 || n >= max)
			return -1;
		ids[n++] = id;
		i++;
	}
	return n;
}

static int einsum_infer(hal_step *s)
{
	const char *eq = hal_attr_str(s->node, "equation", NULL);
	if (!eq)
		return hal_err(s, AIDOS_E_INVALID, "attribute equation is missing");
	char buf[256];
	size_t bl = 0;
	for (const char *c = eq; *c; c++)
		if (*c != ' ') {
			if (bl + 1 >= sizeof buf)
				return hal_err(s, AIDOS_E_UNSUPPORTED, "equation is longer than %zu characters",
					       sizeof buf - 1);
			buf[bl++] = *c;
		}
	buf[bl] = 0;
	if (s->n_in < 1 || s->n_in > EI_MAX_IN)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "%d inputs (1 to %d supported)", s->n_in, EI_MAX_IN);
	int dt = s->in[0] ? s->in[0]->dtype : 0;
	for (int i = 0; i < s->n_in; i++) {
		const hal_tensor *t = s->in[i];
		if (!t || t->dtype != dt)
			return hal_err(s, AIDOS_E_INVALID, "input %d is missing or its dtype differs", i);
	}
	if (dt != HAL_DT_F32 && dt != HAL_DT_F64 && dt != HAL_DT_I32 && dt != HAL_DT_I64)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "dtype %s (float, double, int32, int64)",
			       hal_dtype_name(dt));
	char *arrow = strstr(buf, "->");
	const char *lhs_end = arrow ? arrow : buf + bl;
	/* the ellipsis width: the most dims any input leaves to "..." */
	int ids[EI_MAX_IN][HAL_MAX_RANK], nid[EI_MAX_IN], max_ell = 0;
	const char *terms[EI_MAX_IN];
	int tlen[EI_MAX_IN], nt = 0;
	for (const char *t = buf; t <= lhs_end;) {
		const char *e = t;
		while (e < lhs_end && *e != ',')
			e++;
		if (nt >= s->n_in)
			return hal_err(s, AIDOS_E_INVALID, "equation '%s' has more terms than %d inputs", eq,
				       s->n_in);
		terms[nt] = t;
		tlen[nt++] = (int)(e - t);
		t = e + 1;
	}
	if (nt != s->n_in)
		return hal_err(s, AIDOS_E_INVALID, "equation '%s' has %d terms for %d inputs", eq, nt, s->n_in);
	for (int i = 0; i < nt; i++) {
		int letters = 0, dots = 0;
		for (int k = 0; k < tlen[i]; k++)
			letters += lab_id(terms[i][k]) >= 0, dots += terms[i][k] == '.';
		if (dots && s->in[i]->rank - letters > max_ell)
			max_ell = s->in[i]->rank - letters;
	}
	int64_t size[EI_MAX_LAB];
	int count[EI_MAX_LAB] = { 0 };
	for (int l = 0; l < EI_MAX_LAB; l++)
		size[l] = -1;
	for (int i = 0; i < nt; i++) {
		const hal_tensor *t = s->in[i];
		nid[i] = parse_term(terms[i], tlen[i], t->rank, max_ell, ids[i], HAL_MAX_RANK);
		if (nid[i] != t->rank)
			return hal_err(s, AIDOS_E_INVALID, "term %d of equation '%s' does not fit rank %d", i,
				       eq, t->rank);
		for (int k = 0; k < nid[i]; k++) {
			int l = ids[i][k];
			int64_t d = t->dims[k];
			count[l]++;
			if (size[l] < 0 || size[l] == 1)
				size[l] = d;
			else if (d != size[l] && !(l >= ELL0 && d == 1))
				return hal_err(s, AIDOS_E_SHAPE, "label '%c' is %lld in one place and %lld in another",
					       l >= ELL0 ? '.' : lab_ascii(l), (long long)size[l], (long long)d);
		}
	}
	/* output labels */
	int out[EI_MAX_LAB], no = 0;
	if (arrow) {
		no = parse_term(arrow + 2, (int)strlen(arrow + 2), -1, max_ell, out, EI_MAX_LAB);
		if (no < 0)
			return hal_err(s, AIDOS_E_INVALID, "output term of equation '%s' is malformed", eq);
		for (int k = 0; k < no; k++) {
			if (size[out[k]] < 0)
				return hal_err(s, AIDOS_E_INVALID, "output label %d of '%s' is in no input", k, eq);
			for (int j = 0; j < k; j++)
				if (out[j] == out[k])
					return hal_err(s, AIDOS_E_INVALID, "output of '%s' repeats a label", eq);
		}
	} else {
		for (int l = ELL0; l < ELL0 + max_ell; l++)
			out[no++] = l;
		for (int c = 'A'; c <= 'z'; c++) {
			int l = lab_id((char)c);
			if (l >= 0 && count[l] == 1)
				out[no++] = l;
		}
	}
	if (no > HAL_MAX_RANK)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "output rank %d exceeds %d", no, HAL_MAX_RANK);
	einsum_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	/* label order: output labels, then the summed ones */
	int order[EI_MAX_LAB], pos[EI_MAX_LAB], nl = 0;
	for (int l = 0; l < EI_MAX_LAB; l++)
		pos[l] = -1;
	for (int k = 0; k < no; k++)
		pos[out[k]] = nl, order[nl++] = out[k];
	for (int l = 0; l < EI_MAX_LAB; l++)
		if (size[l] >= 0 && pos[l] < 0)
			pos[l] = nl, order[nl++] = l;
	p->n_in = nt, p->n_lab = nl, p->n_out = no;
	int64_t work = 1;
	for (int k = 0; k < nl; k++) {
		p->size[k] = size[order[k]];
		if (p->size[k] && __builtin_mul_overflow(work, p->size[k], &work))
			work = INT64_MAX;
	}
	if (work > HAL_MAX_SPAN)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "equation '%s' needs more than 2^40 products", eq);
	for (int i = 0; i < nt; i++) {
		const hal_tensor *t = s->in[i];
		int64_t st = 1;
		for (int k = t->rank - 1; k >= 0; k--) {
			if (t->dims[k] != 1 || p->size[pos[ids[i][k]]] == 1)
				p->stride[i][pos[ids[i][k]]] += st;
			st *= t->dims[k];
		}
	}
	int64_t od[HAL_MAX_RANK];
	for (int k = 0; k < no; k++)
		od[k] = p->size[k];
	s->params = p;
	return ou_set(s, s->out[0], dt, no, od);
}

#define EINSUM(T, ACC, sfx) \
static void einsum_##sfx(const einsum_params *p, const T *const *in, T *y, int64_t ny) \
{ \
	int64_t idx[EI_MAX_LAB] = { 0 }, off[EI_MAX_IN] = { 0 }; \
	int64_t inner = 1; \
	for (int k = p->n_out; k < p->n_lab; k++) \
		inner *= p->size[k]; \
	for (int64_t o = 0; o < ny; o++) { \
		ACC acc = 0; \
		for (int64_t r = 0; r < inner; r++) { \
			ACC v = 1; \
			for (int i = 0; i < p->n_in; i++) \
				v *= (ACC)in[i][off[i]]; \
			acc += v; \
			/* odometer over the summed labels, last fastest */ \
			for (int k = p->n_lab - 1; k >= p->n_out; k--) { \
				for (int i = 0; i < p->n_in; i++) \
					off[i] += p->stride[i][k]; \
				if (++idx[k] < p->size[k]) \
					break; \
				for (int i = 0; i < p->n_in; i++) \
					off[i] -= p->stride[i][k] * p->size[k]; \
				idx[k] = 0; \
			} \
		} \
		y[o] = (T)acc; \
		for (int k = p->n_out - 1; k >= 0; k--) { \
			for (int i = 0; i < p->n_in; i++) \
				off[i] += p->stride[i][k]; \
			if (++idx[k] < p->size[k]) \
				break; \
			for (int i = 0; i < p->n_in; i++) \
				off[i] -= p->stride[i][k] * p->size[k]; \
			idx[k] = 0; \
		} \
	} \
}
EINSUM(float, double, f32)
EINSUM(double, double, f64)
EINSUM(int32_t, int64_t, i32)
EINSUM(int64_t, int64_t, i64)

static int einsum_exec(hal_step *s)
{
	if (hal_numel(s->out[0]) == 0)
		return 0;   /* empty output: nothing to write, data may be NULL */
	const einsum_params *p = s->params;
	const void *in[EI_MAX_IN];
	for (int i = 0; i < p->n_in; i++)
		in[i] = s->in[i]->data;
	for (int k = 0; k < p->n_lab; k++)
		if (p->size[k] == 0) {
			memset(s->out[0]->data, 0, hal_nbytes(s->out[0]));
			return 0;
		}
	int64_t ny = hal_numel(s->out[0]);
	switch (s->out[0]->dtype) {
	case HAL_DT_F32: einsum_f32(p, (const float *const *)in, s->out[0]->data, ny); break;
	case HAL_DT_F64: einsum_f64(p, (const double *const *)in, s->out[0]->data, ny); break;
	case HAL_DT_I32: einsum_i32(p, (const int32_t *const *)in, s->out[0]->data, ny); break;
	default: einsum_i64(p, (const int64_t *const *)in, s->out[0]->data, ny); break;
	}
	return 0;
}

static const hal_op op_einsum = { "Einsum", 12, HAL_OP_PURE, einsum_infer, einsum_exec };

const hal_op *const hal_ops_einsum[] = { &op_einsum, NULL };
