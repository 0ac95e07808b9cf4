#!/usr/bin/env perl
# bench/dashboard.pl: the panels of conf/grafana/fluxgate.json drawn from a
# real Prometheus, for the README and for anyone without a Grafana at hand.
# Each panel's PromQL goes to Prometheus's /api/v1/query_range over the
# given window (Grafana's $__rate_interval becomes --rate-interval); gnuplot
# draws one PNG with a small chart per panel, in the dashboard's order.
#
#   bench/dashboard.pl --prometheus http://127.0.0.1:9090 \
#       --start UNIX --end UNIX [--step 1] [--rate-interval 5s] \
#       [--dashboard conf/grafana/fluxgate.json] --out dashboard.png
#
# t/690-prometheus.t runs it after its sale (FG_DASHBOARD_PNG keeps a
# copy); the README's picture, bench/results/dashboard.png, came from there.
use strict;
use warnings;
use Getopt::Long;
use HTTP::Tiny;
use JSON::PP;
use File::Temp qw(tempdir);
use FindBin;

my %o = (step => 1, 'rate-interval' => '5s',
         dashboard => "$FindBin::Bin/../conf/grafana/fluxgate.json");
GetOptions(\%o, 'prometheus=s', 'start=f', 'end=f', 'step=f',
           'rate-interval=s', 'dashboard=s', 'out=s', 'title=s')
    && $o{prometheus} && $o{start} && $o{end} && $o{out}
    or die "usage: $0 --prometheus URL --start UNIX --end UNIX --out FILE.png"
         . " [--step S] [--rate-interval 5s] [--dashboard JSON] [--title T]\n";

my $board = do {
    open my $fh, '<', $o{dashboard} or die "$o{dashboard}: $!\n";
    local $/;
    decode_json(<$fh>);
};
my $http = HTTP::Tiny->new(timeout => 20);
my $tmp = tempdir(CLEANUP => 1);
my @panels;

for my $panel (grep { ($_->{type} // '') ne 'row' } @{ $board->{panels} }) {
    my @series;
    for my $t (@{ $panel->{targets} || [] }) {
        (my $expr = $t->{expr}) =~ s/\$__rate_interval/$o{'rate-interval'}/g;
        my $res = $http->post_form("$o{prometheus}/api/v1/query_range",
            { query => $expr, start => $o{start}, end => $o{end},
              step => $o{step} });
        my $r = eval { decode_json($res->{content}) } || {};
        die "$expr: $res->{status} $res->{content}\n"
            unless ($r->{status} // '') eq 'success';
        for my $s (@{ $r->{data}{result} }) {
            (my $label = $t->{legendFormat} // $expr)
                =~ s/\{\{\s*(\w+)\s*\}\}/$s->{metric}{$1} \/\/ ''/ge;
            my $file = "$tmp/" . (@panels + 0) . '-' . @series . '.tsv';
            my $nonzero = 0;
            open my $fh, '>', $file or die $!;
            for my $v (@{ $s->{values} }) {
                next if $v->[1] =~ /NaN|Inf/;
                printf $fh "%.3f\t%s\n", $v->[0] - $o{start}, $v->[1];
                $nonzero ||= $v->[1] != 0;
            }
            close $fh;
            push @series, [$label, $file, $nonzero] if -s $file;
        }
    }
    # many series (every outcome of the gate): the ones that stayed 0 would
    # only crowd the key
    @series = grep { $_->[2] } @series if @series > 4 && grep { $_->[2] } @series;
    push @panels, { title => $panel->{title}, series => \@series,
                    unit => $panel->{fieldConfig}{defaults}{unit} // '' };
}

my $cols = 3;
my $rows = int((@panels + $cols - 1) / $cols);
my $title = $o{title} // $board->{title};
open my $gp, '|-', 'gnuplot' or die "gnuplot: $!\n";
print $gp <<EOF;
set terminal pngcairo noenhanced size 1500,@{[ 330 * $rows + 40 ]} font ",9"
set output '$o{out}'
set multiplot layout $rows,$cols title "$title" font ",13"
set grid
set key top left font ",8" opaque
set yrange [0:*]
set xlabel 'seconds'
set xrange [0:@{[ $o{end} - $o{start} ]}]
EOF
for my $p (@panels) {
    (my $t = $p->{title}) =~ s/"/'/g;
    my $ylabel = { s => 'seconds', reqps => 'per second', ops => 'per second' }
                 ->{ $p->{unit} } // '';
    print $gp qq{set title "$t"\nset ylabel "$ylabel"\n};
    if (!@{ $p->{series} }) {
        print $gp qq{set label 1 "no data" at graph 0.45,0.5\n}
                . qq{set yrange [0:1]\nplot -1 notitle\n}
                . qq{unset label 1\nset yrange [0:*]\n};
        next;
    }
    print $gp 'plot ' . join(', ', map {
        (my $l = $_->[0]) =~ s/"/'/g;
        qq{'$_->[1]' using 1:2 with lines lw 2 title "$l"}
    } @{ $p->{series} }) . "\n";
}
print $gp "unset multiplot\n";
close $gp or die "gnuplot failed\n";
print "$o{out}: " . @panels . " panels\n";
