# The guides say what the tree is: README.md and docs/*.md checked against
# the code and against themselves, with no stack (`prove -v t/031-docs.t`).
#
#   - every directive in the module's command tables (ngx_command_t arrays
#     of ngx_fluxgate_module/*.c) is a heading of docs/directives.md, and
#     every directive heading there is one of them;
#   - every variable the module defines (ngx_http_variable_t arrays) is a
#     heading there too, and no other $fluxgate_* heading;
#   - every `make TARGET` the pages name (in code, inline or fenced) is a
#     target of the Makefile;
#   - every relative link and image leads to a file or folder of the tree,
#     and its #anchor to a heading of the page it names;
#   - the supervisord programs quoted in docs/worker.md are, line for line,
#     the ones in conf/;
#   - README.md is a front page: at most 400 lines.
#
# Each failure lists what is missing, with the file and line it came from.
use strict;
use warnings;
use Test::More;
use FindBin;
use Cwd qw(abs_path);

my $root = abs_path("$FindBin::Bin/..");

sub slurp {
    my ($path) = @_;
    open my $fh, '<:encoding(UTF-8)', $path or die "$path: $!";
    local $/;
    return scalar <$fh>;
}

# ok when LIST is empty, else one diagnostic line per item (and the HINT)
sub none {
    my ($list, $name, $hint) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    ok(!@$list, $name) and return 1;
    diag("  $_") for @$list;
    diag($hint) if $hint;
    return 0;
}

my @pages = ('README.md', 'CHANGELOG.md', map { s{^\Q$root\E/}{}r } sort glob("$root/docs/*.md"));
ok(scalar(grep { m{^docs/} } @pages) >= 6, 'docs/ has its guides: ' . join(' ', @pages));

# --- the module's directives and variables -----------------------------------

# the entries of every `static ngx_command_t name[] = { ... };` and every
# ngx_http_variable_t array: their ngx_string("fluxgate_...") names
my (%directive, %variable);
for my $c (sort glob("$root/ngx_fluxgate_module/*.c")) {
    my $src = slurp($c);
    $src =~ s{/\*.*?\*/}{}gs;
    while ($src =~ /\bngx_command_t\s+\w+\s*\[\s*\]\s*=\s*\{(.*?)\n\};/gs) {
        my $table = $1;
        $directive{$1} //= $c =~ s{^\Q$root\E/}{}r
            while $table =~ /\{\s*ngx_string\("(fluxgate_\w+)"\)/g;
    }
    while ($src =~ /\bngx_http_variable_t\s+\w+\s*\[\s*\]\s*=\s*\{(.*?)\n\};/gs) {
        my $table = $1;
        $variable{$1} //= $c =~ s{^\Q$root\E/}{}r
            while $table =~ /\{\s*ngx_string\("(fluxgate_\w+)"\)/g;
    }
}
cmp_ok(scalar keys %directive, '>=', 20,
       'the command tables name the module\'s directives (' . (keys %directive) . ')');
cmp_ok(scalar keys %variable, '>=', 4,
       'the variable tables name its variables (' . (keys %variable) . ')');

my $directives_md = slurp("$root/docs/directives.md");
my (%dir_heading, %var_heading);
{
    my $n = 0;
    my $fence = 0;
    for my $line (split /\n/, $directives_md) {
        $n++;
        $fence = !$fence if $line =~ /^\s*```/;
        next if $fence;
        $dir_heading{$1} = $n if $line =~ /^#{2,4}\s+`?(fluxgate_\w+)`?\s*$/;
        $var_heading{$1} = $n if $line =~ /^#{2,4}\s+`?\$(fluxgate_\w+)`?\s*$/;
    }
}

none([map { "$_ (in $directive{$_})" } grep { !$dir_heading{$_} } sort keys %directive],
     'every directive of the command tables is a heading of docs/directives.md',
     'add a "### <directive>" section with Syntax, Default, Context for each');
none([map { "$_ (docs/directives.md:$dir_heading{$_})" }
      grep { !$directive{$_} } sort keys %dir_heading],
     'every directive heading of docs/directives.md is a directive of the module',
     'a heading for a directive the module no longer has');
none([map { "\$$_ (in $variable{$_})" } grep { !$var_heading{$_} } sort keys %variable],
     'every $fluxgate_* variable of the module is a heading of docs/directives.md');
none([map { "\$$_ (docs/directives.md:$var_heading{$_})" }
      grep { !$variable{$_} } sort keys %var_heading],
     'every variable heading of docs/directives.md is a variable of the module');

# each directive's section gives Syntax, Default and Context
{
    my @incomplete;
    for my $d (sort keys %dir_heading) {
        my ($section) = $directives_md =~ /^#{2,4}\s+`?\Q$d\E`?\s*\n(.*?)(?=^#{2,4}\s|\z)/ms;
        my @lacks = grep { ($section // '') !~ /^$_:/m } qw(Syntax Default Context);
        push @incomplete, "$d lacks @lacks" if @lacks;
    }
    none(\@incomplete, 'each directive\'s section says Syntax, Default and Context');
}

# --- the pages: code, links, anchors -------------------------------------------

# GitHub's anchor of a heading: lower case, punctuation but - and _ dropped,
# spaces to -; a repeated one gets -1, -2, ...
sub anchors {
    my ($text) = @_;
    my (%a, %seen);
    my $fence = 0;
    for my $line (split /\n/, $text) {
        $fence = !$fence if $line =~ /^\s*```/;
        next if $fence || $line !~ /^#{1,6}\s+(.*?)\s*#*\s*$/;
        my $slug = lc $1;
        $slug =~ s/[^\p{L}\p{M}\p{N}_\- ]//g;
        $slug =~ tr/ /-/;
        my $k = $seen{$slug}++;
        $a{$k ? "$slug-$k" : $slug} = 1;
    }
    return \%a;
}

# the Makefile's targets: the plain names before a ':' that is not ':='
my %target;
for (split /\n/, slurp("$root/Makefile")) {
    next if /^\s/ || /^#/ || !/^([^=:#]+?)\s*:(?!=)/;
    $target{$_} = 1 for grep { /^[A-Za-z][\w-]*$/ } split ' ', $1;
}
ok($target{$_}, "the Makefile has a $_ target") for qw(all run test bench deb);

my (@bad_targets, @bad_links, @bad_anchors);
my %anchors_of;
for my $page (@pages) {
    my $text = slurp("$root/$page");
    my $dir = $page =~ m{/} ? $page =~ s{/[^/]*$}{}r : '.';
    my $n = 0;
    my $fence = 0;
    for my $line (split /\n/, $text) {
        $n++;
        if ($line =~ /^\s*```/) {
            $fence = !$fence;
            next;
        }

        # code: a fenced block's lines (not their shell comments), or the
        # inline code spans of prose
        my @code = $fence ? ($line =~ s/(?:^|\s)#(?:\s.*)?$//r) : ($line =~ /`([^`]+)`/g);
        for my $code (@code) {
            while ($code =~ /(?:^|[\s;&|`"']|\$\()make((?:\s+(?:-[A-Za-z]+|[A-Z_]+=\S*))*)(?:\s+([A-Za-z][\w-]*))?/g) {
                my ($opts, $t) = ($1, $2);
                next if !defined $t || $opts =~ /-C\b/;
                push @bad_targets, "$page:$n: make $t" unless $target{$t};
            }
        }
        next if $fence;

        # links and images, outside code spans
        (my $prose = $line) =~ s/`[^`]*`//g;
        while ($prose =~ /!?\[[^\]]*\]\(\s*([^)\s]+)(?:\s+"[^"]*")?\s*\)/g) {
            my $link = $1;
            next if $link =~ m{^[a-z][a-z0-9+.-]*:}i;     # http:, mailto:
            my ($file, $anchor) = $link =~ /^([^#]*)(?:#(.*))?$/;
            my $target_page = $file eq '' ? $page : "$dir/$file";
            my $path = abs_path("$root/$target_page");
            if (!defined $path || !-e $path || index($path, $root) != 0) {
                push @bad_links, "$page:$n: $link";
                next;
            }
            next unless defined $anchor && $anchor ne '';
            next unless $path =~ /\.md$/;
            $anchors_of{$path} //= anchors(slurp($path));
            push @bad_anchors, "$page:$n: $link" unless $anchors_of{$path}{$anchor};
        }
    }
}
none(\@bad_targets, 'every `make TARGET` in README.md and docs/ is a Makefile target');
none(\@bad_links, 'every relative link in README.md and docs/ leads to a file of the tree');
none(\@bad_anchors, 'and every #anchor to a heading of its page');

# --- quoted configuration ----------------------------------------------------------

{
    my $conf = join "\n", map { slurp("$root/conf/$_") } qw(supervisord.conf supervisor-worker.conf);
    my $worker_md = slurp("$root/docs/worker.md");
    my @blocks = $worker_md =~ /^```ini\n(.*?)^```/msg;
    cmp_ok(scalar @blocks, '>=', 2, 'docs/worker.md quotes the supervisord programs');
    my @differ;
    for my $b (@blocks) {
        my ($name) = $b =~ /^\[(program:[\w-]+)\]/m;
        push @differ, $name // substr($b, 0, 40) if index($conf, $b) < 0;
    }
    none(\@differ, 'each quoted block is the one in conf/, line for line',
         'copy the block again from conf/supervisord.conf or conf/supervisor-worker.conf');
}

# --- the front page ------------------------------------------------------------------

{
    my $lines = () = slurp("$root/README.md") =~ /\n/g;
    cmp_ok($lines, '<=', 400, "README.md is a front page: $lines lines, at most 400")
        or diag('move the detail into a guide in docs/ and link it');
}

done_testing();
