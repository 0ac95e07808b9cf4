# The v2 fields of the worker's message parser (worker/message.c) on its
# own: generation in both types, generationStock in orders, and the reason
# each bad or missing one is refused with (worker/test_message.c, built by
# `make test`, prints TAP; this runs it).
use strict;
use warnings;
use lib 't/lib';
use FluxGate::Worker;

exec_unit_test('test_message');
