/*
 * fuzz_message.c: libFuzzer target over the message parser.  Any input must
 * come back as either a message that satisfies the contract (what store.c
 * relies on without checking again) or a printable one-line reason.
 *
 *   clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
 *       worker/fuzz_message.c worker/message.c -ljansson -o build/fuzz_message
 *   build/fuzz_message -max_len=4096 build/fuzz-corpus
 */
#include <assert.h>
#include <ctype.h>
#include <stdint.h>
#include <string.h>

#include "message.h"

#define ALNUM "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

static void
check_id(const char *s, const char *charset)
{
    size_t len = strlen(s);

    assert(len >= 1 && len <= FG_ID_MAX);
    assert(strspn(s, charset) == len);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fg_message  msg;
    char               reason[FG_REASON_MAX];
    size_t             i;

    memset(reason, 'x', sizeof(reason));

    if (fg_message_parse(data, size, &msg, reason) != 0) {
        assert(memchr(reason, '\0', sizeof(reason)) != NULL);
        assert(reason[0] != '\0');
        for (i = 0; reason[i] != '\0'; i++) {
            assert(isprint((unsigned char) reason[i]));
        }
        return 0;
    }

    if (msg.type == FG_MSG_MARKER) {
        /* nothing of a marker is read: the store writes nothing for it */
        return 0;
    }

    check_id(msg.product_id, ALNUM "._-");
    assert(msg.generation >= 1);
    if (msg.type == FG_MSG_ORDER) {
        assert(strlen(msg.order_id) == FG_UUID_LEN);
        assert(strspn(msg.order_id, "0123456789abcdef-") == FG_UUID_LEN);
        check_id(msg.user_id, ALNUM "._-");
        check_id(msg.idempotency_key, ALNUM "_-");
        assert(msg.quantity >= 1);
        assert(msg.accepted_at >= 0);
        assert(msg.generation_stock >= msg.quantity);
    } else {
        assert(msg.type == FG_MSG_STOCK_SET);
        assert(msg.stock >= 0);
        assert(msg.at >= 0);
    }
    return 0;
}
