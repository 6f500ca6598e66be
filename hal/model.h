/*
 * hal/model.h - a loaded model: the decoded IR, the file mappings it points
 * into, and the bump allocator that owns every IR structure.
 */
#ifndef AIDOS_HAL_MODEL_H
#define AIDOS_HAL_MODEL_H

#include "hal/ir.h"

/* Bump allocator: chunks freed all at once with the model. */
typedef struct ir_mem_chunk {
	struct ir_mem_chunk *next;
	size_t used, size;
	size_t map_len;  /* an mmap of this length (huge pages), else 0: pool_malloc */
	unsigned char data[];
} ir_mem_chunk;

typedef struct ir_mem {
	ir_mem_chunk *head;
	size_t total;
} ir_mem;

/* Zeroed, 16-byte aligned; NULL on failure. */
void *ir_mem_alloc(ir_mem *m, size_t n);
void ir_mem_free(ir_mem *m);

/* A read-only file mapping shared by every model that maps the same file
 * (same device, inode, size and mtime). */
typedef struct hal_mapping hal_mapping;
int hal_mapping_acquire(const char *path, hal_mapping **out, const void **addr, size_t *len);
void hal_mapping_release(hal_mapping *mp);
/* Number of distinct files mapped right now (tests). */
int hal_mapping_count(void);

#define HAL_MODEL_MAX_MAPS 64

struct aidos_model {
	ir_mem mem;
	ir_graph *graph;
	int64_t ir_version;
	int n_opset;
	ir_opset *opset;
	int opset_default;          /* version of domain "" (ai.onnx) */
	int n_in;                   /* graph inputs that are not initializers */
	ir_value **in;
	char *base_dir;             /* for external data; "" for buffers without one */
	const char *path;           /* for messages */
	hal_mapping *maps[HAL_MODEL_MAX_MAPS];
	int n_maps;
	size_t bytes_mapped, bytes_copied;
};

#endif
