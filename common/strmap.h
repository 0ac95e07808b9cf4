/*
 * common/strmap.h: a small hash map from C strings to longs.  Offers
 * reset (sized for a known number of keys), insert-or-find, find and
 * free.  The keys are not copied: they live in whatever the map is built
 * for.
 *
 * Used by fluxgate-worker for the per-batch bookkeeping of plan.c and
 * statements.c (which (product, generation) row a record touches, which
 * order ids are new, which positions were dead-lettered), and by
 * fluxgate-reconcile's --watch (reconcile_books.c: each product's last
 * verdict).
 */
#ifndef FG_STRMAP_H
#define FG_STRMAP_H

#include <stddef.h>

struct fg_strmap {
    const char **keys;
    long        *vals;
    size_t       cap;      /* a power of two */
    size_t       count;
};

/* empties the map, sized for up to n keys; -1 when out of memory */
int fg_strmap_reset(struct fg_strmap *m, size_t n);

/* the value's slot, added as dflt when the key is new; NULL: out of memory */
long *fg_strmap_slot(struct fg_strmap *m, const char *key, long dflt);

/* the value's slot, or NULL when the key is absent */
long *fg_strmap_find(const struct fg_strmap *m, const char *key);

void fg_strmap_free(struct fg_strmap *m);

#endif
