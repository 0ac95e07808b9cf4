/*
 * message.c: parsing and checking one message value.  Everything that can
 * be wrong with a message is decided here, once, with a reason a person
 * can act on; whatever passes is safe to hand to PostgreSQL as it is
 * (generationStock >= quantity included: store.c relies on it).
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "message.h"

/* 9999-12-31T23:59:59.999Z: past it, timestamptz arithmetic would fail */
#define MAX_EPOCH_MS 253402300799999LL

static int fail(char *reason, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int get_string(json_t *obj, const char *field, int rule, char *out,
    char *reason);
static int get_integer(json_t *obj, const char *field, long long min,
    long long max, long long *out, char *reason);
static int get_uuid(json_t *obj, const char *field, char *out, char *reason);
static int get_generation(json_t *obj, int64_t *out, char *reason);
static int parse_order(json_t *root, struct fg_message *msg, char *reason);
static int parse_stock_set(json_t *root, struct fg_message *msg,
    char *reason);

/* which rule of fluxgate_ids.h a string field follows */
enum { ID_RULE, KEY_RULE };

int
fg_message_parse(const void *buf, size_t len, struct fg_message *msg,
    char reason[FG_REASON_MAX])
{
    json_t       *root, *type;
    json_error_t  jerr;
    const char   *t;
    int           rc;

    memset(msg, 0, sizeof(*msg));

    if (buf == NULL || len == 0) {
        return fail(reason, "empty message");
    }
    if (len > FG_MESSAGE_MAX) {
        return fail(reason, "message too large: %zu bytes, limit %d",
                    len, FG_MESSAGE_MAX);
    }

    root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        return fail(reason, "not JSON: %s at byte %d", jerr.text,
                    jerr.position);
    }
    if (!json_is_object(root)) {
        json_decref(root);
        return fail(reason, "not a JSON object");
    }

    type = json_object_get(root, "type");
    if (type == NULL) {
        rc = fail(reason, "missing field \"type\"");
    } else if (!json_is_string(type)) {
        rc = fail(reason, "field \"type\" is not a string");
    } else if (strcmp((t = json_string_value(type)), "order") == 0) {
        rc = parse_order(root, msg, reason);
    } else if (strcmp(t, "stock_set") == 0) {
        rc = parse_stock_set(root, msg, reason);
    } else if (strcmp(t, "marker") == 0) {
        /* nothing in it is needed: the type is the whole message */
        msg->type = FG_MSG_MARKER;
        rc = 0;
    } else {
        rc = fail(reason, "unknown type \"%.40s\"", t);
    }

    json_decref(root);
    return rc;
}

static int
parse_order(json_t *root, struct fg_message *msg, char *reason)
{
    long long v;

    msg->type = FG_MSG_ORDER;

    if (get_uuid(root, "orderId", msg->order_id, reason) != 0
        || get_string(root, "productId", ID_RULE, msg->product_id,
                      reason) != 0
        || get_string(root, "userId", ID_RULE, msg->user_id, reason) != 0
        || get_string(root, "idempotencyKey", KEY_RULE,
                      msg->idempotency_key, reason) != 0)
    {
        return -1;
    }

    if (get_integer(root, "quantity", 1, INT32_MAX, &v, reason) != 0) {
        return -1;
    }
    msg->quantity = (int32_t) v;

    if (get_integer(root, "acceptedAt", 0, MAX_EPOCH_MS, &v, reason) != 0) {
        return -1;
    }
    msg->accepted_at = v;

    if (get_generation(root, &msg->generation, reason) != 0
        || get_integer(root, "generationStock", 0, INT32_MAX, &v, reason) != 0)
    {
        return -1;
    }
    /* the gate never reserves more than its generation holds */
    if (v < msg->quantity) {
        return fail(reason, "field \"generationStock\" is %lld, less than"
                    " quantity %d", v, (int) msg->quantity);
    }
    msg->generation_stock = (int32_t) v;
    return 0;
}

static int
parse_stock_set(json_t *root, struct fg_message *msg, char *reason)
{
    long long v;

    msg->type = FG_MSG_STOCK_SET;

    if (get_string(root, "productId", ID_RULE, msg->product_id,
                   reason) != 0)
    {
        return -1;
    }

    if (get_integer(root, "stock", 0, INT32_MAX, &v, reason) != 0) {
        return -1;
    }
    msg->stock = (int32_t) v;

    if (get_integer(root, "at", 0, MAX_EPOCH_MS, &v, reason) != 0) {
        return -1;
    }
    msg->at = v;

    return get_generation(root, &msg->generation, reason);
}

/*
 * Every v2 message names its generation; without one the worker cannot
 * tell which stock an order was reserved from, so it is not guessed.
 */
static int
get_generation(json_t *obj, int64_t *out, char *reason)
{
    long long v;

    if (json_object_get(obj, "generation") == NULL) {
        return fail(reason, "no generation: produced by a gate older than v2");
    }
    if (get_integer(obj, "generation", 1, INT64_MAX, &v, reason) != 0) {
        return -1;
    }
    *out = v;
    return 0;
}

static int
get_string(json_t *obj, const char *field, int rule, char *out, char *reason)
{
    json_t     *v = json_object_get(obj, field);
    const char *s;
    size_t      len;

    if (v == NULL) {
        return fail(reason, "missing field \"%s\"", field);
    }
    if (!json_is_string(v)) {
        return fail(reason, "field \"%s\" is not a string", field);
    }

    s = json_string_value(v);
    len = json_string_length(v);
    if (len == 0 || len > FG_ID_MAX) {
        return fail(reason, "field \"%s\" must be 1-%d characters, has %zu",
                    field, FG_ID_MAX, len);
    }
    /* an embedded NUL is outside both rules too */
    if (!(rule == ID_RULE ? fg_id_valid(s, len) : fg_key_valid(s, len))) {
        return fail(reason, "field \"%s\" has a character outside [%s]",
                    field, rule == ID_RULE ? FG_ID_CHARSET : FG_KEY_CHARSET);
    }

    memcpy(out, s, len + 1);
    return 0;
}

static int
get_integer(json_t *obj, const char *field, long long min, long long max,
    long long *out, char *reason)
{
    json_t    *v = json_object_get(obj, field);
    long long  n;

    if (v == NULL) {
        return fail(reason, "missing field \"%s\"", field);
    }
    if (!json_is_integer(v)) {
        return fail(reason, "field \"%s\" is not an integer", field);
    }

    n = json_integer_value(v);
    if (n < min || n > max) {
        return fail(reason, "field \"%s\" is %lld, outside %lld..%lld",
                    field, n, min, max);
    }

    *out = n;
    return 0;
}

static int
get_uuid(json_t *obj, const char *field, char *out, char *reason)
{
    json_t     *v = json_object_get(obj, field);
    const char *s;
    size_t      i;

    if (v == NULL) {
        return fail(reason, "missing field \"%s\"", field);
    }
    if (!json_is_string(v)) {
        return fail(reason, "field \"%s\" is not a string", field);
    }

    s = json_string_value(v);
    if (json_string_length(v) != FG_UUID_LEN) {
        return fail(reason, "field \"%s\" is not a UUID", field);
    }
    for (i = 0; i < FG_UUID_LEN; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') {
                return fail(reason, "field \"%s\" is not a UUID", field);
            }
            out[i] = '-';
        } else if (isxdigit((unsigned char) s[i])) {
            out[i] = tolower((unsigned char) s[i]);
        } else {
            return fail(reason, "field \"%s\" is not a UUID", field);
        }
    }
    out[FG_UUID_LEN] = '\0';
    return 0;
}

static int
fail(char *reason, const char *fmt, ...)
{
    va_list  ap;
    char    *p;

    va_start(ap, fmt);
    vsnprintf(reason, FG_REASON_MAX, fmt, ap);
    va_end(ap);

    /* jansson quotes the input in its messages: keep the log line one line */
    for (p = reason; *p != '\0'; p++) {
        if (!isprint((unsigned char) *p)) {
            *p = '?';
        }
    }
    return -1;
}
