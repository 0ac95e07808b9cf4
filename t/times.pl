#!/usr/bin/env perl
# t/times.pl [--top N] PROVE_TIMER_OUTPUT: where a `make test` run's
# minutes went.  Reads what `prove --timer` printed and prints one line per
# test file (or the N slowest), slowest first, then the total of all and
# prove's own summary line.  A file that
# passed has its time in ms from prove; one that failed or skipped has
# only the clock stamp prove put on its line when it ended, so its time is
# its stamp minus the previous file's (a second's resolution, said "~").
use strict;
use warnings;

my $top = @ARGV > 1 && $ARGV[0] eq '--top' ? (shift, shift)[1] : 0;
my @files;
while (my $line = <>) {
    if ($line =~ /^\[(\d\d):(\d\d):(\d\d)\] (\S+\.t) \.+ ?(.*)$/) {
        my ($at, $file, $rest) = ($1 * 3600 + $2 * 60 + $3, $4, $5);
        my %f = (file => $file, at => $at, what => 'failed');
        if ($rest =~ /^ok\s+(\d+) ms/) {
            @f{qw(ms what)} = ($1, 'ok');
        } elsif ($rest =~ /^skipped/) {
            $f{what} = 'skipped';
        }
        push @files, \%f;
    } elsif ($line =~ /^Files=/) {
        print_summary($line);
        exit 0;
    }
}
print_summary("(prove did not finish)\n");

sub print_summary {
    my ($prove_line) = @_;
    for my $i (0 .. $#files) {
        my $f = $files[$i];
        next if defined $f->{ms};
        my $prev = $i > 0 ? $files[$i - 1]{at} : $f->{at};
        $prev -= 86400 if $prev > $f->{at};    # past midnight
        $f->{ms} = ($f->{at} - $prev) * 1000;
        $f->{approx} = 1;
    }
    my $total = 0;
    $total += $_->{ms} for @files;
    my @slow = sort { $b->{ms} <=> $a->{ms} } @files;
    splice @slow, $top if $top && @slow > $top;
    for my $f (@slow) {
        printf "%s%7.1f s  %s%s\n", $f->{approx} ? '~' : ' ', $f->{ms} / 1000,
            $f->{file}, $f->{what} eq 'ok' ? '' : " ($f->{what})";
    }
    printf " %7.1f s  total of %d files\n", $total / 1000, scalar @files;
    print $prove_line;
}
