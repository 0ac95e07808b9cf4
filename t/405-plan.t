# The worker's batch planning (worker/plan.c) on its own, without a
# database: which (product, generation) rows a batch touches, which orders
# fit their generation, what each stock_set does, and that any arrival
# order and any cut into batches gives the same books.  The C test
# (worker/test_plan.c, built by `make test`) prints TAP; this runs it.
use strict;
use warnings;
use lib 't/lib';
use FluxGate::Worker;

exec_unit_test('test_plan');
