/*
 * test_message.c: unit tests of the v2 fields of message.c (generation,
 * generationStock) and of the marker type, printed as TAP (t/406-message.t runs it).  The older
 * fields are covered end to end by t/420-poison.t.
 */
#include <stdio.h>
#include <string.h>

#include "message.h"
#include "test_tap.h"

#define ORDER_HEAD \
    "{\"type\":\"order\"," \
    "\"orderId\":\"0193A5B2-7c3d-7e4f-8a9b-0c1d2e3f4a5b\"," \
    "\"productId\":\"p-1\",\"userId\":\"u\",\"quantity\":2," \
    "\"idempotencyKey\":\"k\",\"acceptedAt\":1732470000123"
#define STOCK_HEAD \
    "{\"type\":\"stock_set\",\"productId\":\"p-1\",\"stock\":100,\"at\":5"

static struct fg_message msg;
static char              reason[FG_REASON_MAX];

static int
parse(const char *json)
{
    return fg_message_parse(json, strlen(json), &msg, reason);
}

static void
refused(const char *json, const char *want, const char *what)
{
    if (!is_int(parse(json), -1, "%s: not valid", what)) {
        return;
    }
    is_str(reason, want, "%s: the reason", what);
}

int
main(void)
{
    ok(parse(ORDER_HEAD ",\"generation\":3,\"generationStock\":100}") == 0,
       "a v2 order parses");
    ok(msg.type == FG_MSG_ORDER && msg.generation == 3
       && msg.generation_stock == 100 && msg.quantity == 2,
       "with its generation and generationStock");
    is_str(msg.order_id, "0193a5b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b",
           "and the orderId in lower case as before");

    ok(parse(STOCK_HEAD ",\"generation\":9007199254740993}") == 0,
       "a v2 stock_set parses");
    ok(msg.type == FG_MSG_STOCK_SET && msg.generation == 9007199254740993LL
       && msg.stock == 100, "with a generation past 2^53, exactly");

    ok(parse(ORDER_HEAD ",\"generation\":1,\"generationStock\":2}") == 0,
       "generationStock equal to quantity is enough");
    ok(parse(STOCK_HEAD ",\"generation\":1,\"generationStock\":\"x\"}") == 0,
       "a stock_set ignores generationStock");

    ok(parse("{\"type\":\"marker\",\"by\":\"fluxgate-reconcile\","
             "\"at\":1732470000123}") == 0 && msg.type == FG_MSG_MARKER,
       "a marker of fluxgate-reconcile parses, fields and all");
    ok(parse("{\"type\":\"marker\"}") == 0 && msg.type == FG_MSG_MARKER,
       "its type is all a marker needs");
    refused("{\"type\":\"Marker\"}", "unknown type \"Marker\"",
            "a type is matched exactly");

    refused(ORDER_HEAD "}",
            "no generation: produced by a gate older than v2",
            "a v1 order");
    refused(STOCK_HEAD "}",
            "no generation: produced by a gate older than v2",
            "a v1 stock_set");
    refused(ORDER_HEAD ",\"generationStock\":100}",
            "no generation: produced by a gate older than v2",
            "an order with generationStock only");
    refused(ORDER_HEAD ",\"generation\":3}",
            "missing field \"generationStock\"",
            "an order without generationStock");
    refused(ORDER_HEAD ",\"generation\":0,\"generationStock\":100}",
            "field \"generation\" is 0, outside 1..9223372036854775807",
            "generation 0");
    refused(STOCK_HEAD ",\"generation\":-4}",
            "field \"generation\" is -4, outside 1..9223372036854775807",
            "a negative generation");
    refused(ORDER_HEAD ",\"generation\":\"3\",\"generationStock\":100}",
            "field \"generation\" is not an integer",
            "generation as a string");
    refused(STOCK_HEAD ",\"generation\":2.0}",
            "field \"generation\" is not an integer",
            "generation as a real");
    refused(STOCK_HEAD ",\"generation\":null}",
            "field \"generation\" is not an integer",
            "generation null");
    refused(ORDER_HEAD ",\"generation\":3,\"generationStock\":1}",
            "field \"generationStock\" is 1, less than quantity 2",
            "generationStock below quantity");
    refused(ORDER_HEAD ",\"generation\":3,\"generationStock\":-1}",
            "field \"generationStock\" is -1, outside 0..2147483647",
            "a negative generationStock");
    refused(ORDER_HEAD ",\"generation\":3,\"generationStock\":2147483648}",
            "field \"generationStock\" is 2147483648, outside 0..2147483647",
            "generationStock past an integer column");
    refused(ORDER_HEAD ",\"generation\":3,\"generation\":4,"
            "\"generationStock\":100}",
            "not JSON: duplicate object key near '\"generation\"' at byte 184",
            "generation twice");

    return done_testing();
}
