/*
 * test_slot.c: unit tests of include/fluxgate_slot.h, the Redis Cluster
 * hash slot of a key, printed as TAP (t/700-cluster-slot.t runs it).  The
 * expected slots are what Redis 7's CLUSTER KEYSLOT answers (its own
 * documentation's examples among them).
 *
 *   test_slot           the TAP tests
 *   test_slot --keys    reads keys from stdin, one per line in hex (an
 *                       empty line is the empty key), and prints each
 *                       key's slot: t/700 compares them to CLUSTER KEYSLOT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fluxgate_slot.h"
#include "test_tap.h"


static unsigned
slot(const char *key)
{
    return fg_key_slot((const unsigned char *) key, strlen(key));
}


static const char *
tag(const char *key)
{
    static char           buf[256];
    size_t                len;
    const unsigned char  *t;

    fg_hash_tag((const unsigned char *) key, strlen(key), &t, &len);
    snprintf(buf, sizeof(buf), "%.*s", (int) len, (const char *) t);
    return buf;
}


static int
keys_mode(void)
{
    char           line[8192];
    unsigned char  key[4096];
    size_t         n, i;
    unsigned int   byte;

    while (fgets(line, sizeof(line), stdin) != NULL) {
        n = strcspn(line, "\r\n");

        if (n % 2 != 0 || n / 2 > sizeof(key)) {
            fprintf(stderr, "test_slot: bad hex line\n");
            return 1;
        }

        for (i = 0; i < n / 2; i++) {
            if (sscanf(line + 2 * i, "%2x", &byte) != 1) {
                fprintf(stderr, "test_slot: bad hex line\n");
                return 1;
            }
            key[i] = (unsigned char) byte;
        }

        printf("%u\n", fg_key_slot(key, n / 2));
    }

    return 0;
}


int
main(int argc, char **argv)
{
    unsigned char  bin[3] = { 0xff, 0x00, 0x7b };

    if (argc > 1 && strcmp(argv[1], "--keys") == 0) {
        return keys_mode();
    }

    /* CRC16-XMODEM's check value, and Redis's documented examples */
    is_int(fg_crc16((const unsigned char *) "123456789", 9), 0x31c3,
           "crc16 of 123456789 is 0x31c3");
    is_int(slot("somekey"), 11058, "somekey -> 11058");
    is_int(slot("foo{hash_tag}"), 2515, "foo{hash_tag} -> 2515");
    is_int(slot("foo"), 12182, "foo -> 12182");
    is_int(slot(""), 0, "the empty key -> 0");

    /* hash tags */
    is_str(tag("fg:{p1}:stock"), "p1", "a product key's tag is its id");
    is_int(slot("fg:{p1}:stock"), slot("p1"), "... and its slot the id's");
    is_int(slot("fg:{p1}:idem:k{x}"), slot("p1"),
           "only the first tag counts");
    is_str(tag("{}"), "{}", "{} is no tag: the whole key");
    is_str(tag("a{}{b}"), "a{}{b}", "an empty first tag: the whole key");
    is_str(tag("{"), "{", "an unclosed { : the whole key");
    is_str(tag("a}b{c"), "a}b{c", "a } before the { does not close it");
    is_str(tag("foo{{bar}}zap"), "{bar", "foo{{bar}}zap hashes {bar");
    is_str(tag("foo{bar}{zap}"), "bar", "foo{bar}{zap} hashes bar");
    is_str(tag("{héllo}wörld"), "héllo", "UTF-8 inside a tag");
    is_int(fg_key_slot(bin, 3), 159, "binary bytes, NUL among them");

    return done_testing();
}
