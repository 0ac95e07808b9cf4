# The libFuzzer targets (make fuzzers): first every input kept in
# t/fuzz/<target>/ (seeds, and each input that once crashed) as a
# regression, then a bounded fuzzing run from that corpus.  `make fuzz`
# runs them for as long as asked.  FG_FUZZ_SECONDS sets the bound here.
use strict;
use warnings;
use Test::More;
use File::Temp qw(tempdir);

my $seconds = $ENV{FG_FUZZ_SECONDS} // 30;
my $dir = "$ENV{FG_ROOT}/build/fuzz";

for my $t (qw(fuzz_parse fuzz_message fuzz_jwt)) {
    my $bin = "$dir/$t";
    ok(-x $bin, "$t is built") or next;

    my @inputs = glob("$ENV{FG_ROOT}/t/fuzz/$t/*");
    ok(@inputs >= 3, "$t has a kept corpus (" . scalar(@inputs) . " inputs)");
    my $out = `$bin @inputs 2>&1`;
    is($? >> 8, 0, "$t: every kept input passes") or diag($out);

    my $corpus = tempdir(CLEANUP => 1);
    system("cp $ENV{FG_ROOT}/t/fuzz/$t/* $corpus/");
    $out = `$bin -max_total_time=$seconds -max_len=8192 -print_final_stats=1 -artifact_prefix=$dir/ $corpus 2>&1`;
    my $rc = $? >> 8;
    my ($runs) = $out =~ /stat::number_of_executed_units:\s*(\d+)/;
    is($rc, 0, "$t: no crash in ${seconds}s of fuzzing") or diag(substr($out, -3000));
    ok(($runs // 0) > 1000, "$t: ran " . ($runs // 0) . " inputs");
    diag("$t: $runs inputs in ${seconds}s, no crash");
}

done_testing();
