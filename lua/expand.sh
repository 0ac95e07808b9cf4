#!/bin/sh
# lua/expand.sh FILE: the Redis script FILE as Redis gets it, each line
# "-- #include NAME" replaced by lua/lib/NAME (what several scripts share).
# config (the module) and reconcile/Makefile compile the scripts through it,
# and hash what it prints for EVALSHA.
set -e
lib=$(dirname "$1")/lib
awk -v lib="$lib" '
/^-- #include [A-Za-z0-9_.-]+$/ {
    f = lib "/" $3
    n = 0
    while ((getline l < f) > 0) { print l; n++ }
    close(f)
    if (n == 0) { print "expand.sh: " f " is empty or missing" > "/dev/stderr"; exit 1 }
    next
}
{ print }' "$1"
