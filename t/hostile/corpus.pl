# The hostile input corpus of t/520-hostile.t: requests a crowd (or an
# attacker in it) sends to POST /order, each with the status DESIGN.md gives
# it.  A case is { name, status, and either body (+ headers) or raw (the
# whole request as bytes) }; status may be a regexp for cases where nginx
# itself answers or closes.  Every case must change nothing in Redis or
# Kafka and leave the nginx workers alive.
use strict;
use warnings;

my $ok_body = '{"productId":"hostile-p","userId":"u1","quantity":1}';
my @cases;

sub body_case {
    my ($name, $body, $status, %o) = @_;
    push @cases, { name => $name, body => $body, status => $status, %o };
}

# --- JSON that is not JSON, or not the JSON we take ------------------------
body_case('empty body', '', 400);
body_case('truncated object', '{"productId":"p1","userId":"u1"', 400);
body_case('truncated string', '{"productId":"p1', 400);
body_case('only a brace', '{', 400);
body_case('not JSON at all', 'productId=p1&userId=u1', 400);
body_case('top-level array', '[{"productId":"p1","userId":"u1"}]', 400);
body_case('top-level string', '"productId"', 400);
body_case('top-level number', '42', 400);
body_case('null', 'null', 400);
body_case('trailing garbage', $ok_body . 'xyz', 400);
body_case('two objects', $ok_body . $ok_body, 400);
body_case('single quotes', q({'productId':'p1','userId':'u1'}), 400);
body_case('comment', '{/* c */"productId":"p1","userId":"u1"}', 400);
body_case('deep nesting', '{"productId":' . ('[' x 1900) . (']' x 1900) . ',"userId":"u1"}', 400);
body_case('deep nesting, unterminated', '[' x 3000, 400);
body_case('duplicate productId', '{"productId":"p1","productId":"p2","userId":"u1"}', 400);
body_case('duplicate quantity', '{"productId":"p1","userId":"u1","quantity":1,"quantity":9}', 400);
body_case('invalid UTF-8 in id', qq({"productId":"p\xff\xfe","userId":"u1"}), 400);
body_case('overlong UTF-8', qq({"productId":"p\xc0\xaf","userId":"u1"}), 400);
body_case('invalid UTF-8 outside strings', qq({"productId":"p1",\xff"userId":"u1"}), 400);
body_case('NUL byte raw', qq({"productId":"p1\0","userId":"u1"}), 400);
body_case('NUL byte escaped', '{"productId":"p1\u0000x","userId":"u1"}', 400);
body_case('NUL after object', $ok_body . "\0", 400);
body_case('BOM before object', "\xef\xbb\xbf" . $ok_body, 400);

# --- wrong types and ranges ---------------------------------------------------
body_case('missing productId', '{"userId":"u1"}', 400);
# no 'missing userId': where the gate checks the shopper's token
# (fluxgate_user_token, as conf/nginx.conf ships it) a body may leave userId
# out, the verified user or else the key being the buyer (DESIGN.md, v3)
body_case('productId number', '{"productId":123,"userId":"u1"}', 400);
body_case('userId number', '{"productId":"p1","userId":42}', 400);
body_case('productId null', '{"productId":null,"userId":"u1"}', 400);
body_case('productId object', '{"productId":{"a":1},"userId":"u1"}', 400);
body_case('productId array', '{"productId":["p1"],"userId":"u1"}', 400);
body_case('productId bool', '{"productId":true,"userId":"u1"}', 400);
body_case('quantity string', '{"productId":"p1","userId":"u1","quantity":"1"}', 400);
body_case('quantity float', '{"productId":"p1","userId":"u1","quantity":1.5}', 400);
body_case('quantity 1.0', '{"productId":"p1","userId":"u1","quantity":1.0}', 400);
body_case('quantity exponent', '{"productId":"p1","userId":"u1","quantity":1e2}', 400);
body_case('quantity 0', '{"productId":"p1","userId":"u1","quantity":0}', 400);
body_case('quantity negative', '{"productId":"p1","userId":"u1","quantity":-1}', 400);
body_case('quantity above max', '{"productId":"p1","userId":"u1","quantity":11}', 400);
body_case('quantity huge', '{"productId":"p1","userId":"u1","quantity":99999999999999999999999}', 400);
body_case('quantity int64 max', '{"productId":"p1","userId":"u1","quantity":9223372036854775807}', 400);
body_case('quantity 2^32+1', '{"productId":"p1","userId":"u1","quantity":4294967297}', 400);
body_case('quantity 1e400', '{"productId":"p1","userId":"u1","quantity":1e400}', 400);
body_case('quantity null', '{"productId":"p1","userId":"u1","quantity":null}', 400);
body_case('quantity bool', '{"productId":"p1","userId":"u1","quantity":true}', 400);
body_case('quantity array', '{"productId":"p1","userId":"u1","quantity":[1]}', 400);
body_case('empty productId', '{"productId":"","userId":"u1"}', 400);
body_case('empty userId', '{"productId":"p1","userId":""}', 400);
body_case('productId 65 chars', '{"productId":"' . ('a' x 65) . '","userId":"u1"}', 400);
body_case('userId 1000 chars', '{"productId":"p1","userId":"' . ('u' x 1000) . '"}', 400);

# --- Redis key characters and other ways out of the key space ---------------
my %bad_chars = ('brace open' => '{', 'brace close' => '}', colon => ':',
                 space => ' ', star => '*', newline => '\n', tab => '\t',
                 'carriage return' => '\r', slash => '/', quote => '\"',
                 backslash => '\\\\', 'percent' => '%', 'unicode' => '\u00e9',
                 'escaped brace' => '\u007b', 'question' => '?');
for my $c (sort keys %bad_chars) {
    my $v = "a$bad_chars{$c}b";
    body_case("productId with $c", qq({"productId":"$v","userId":"u1"}), 400);
    body_case("userId with $c", qq({"productId":"p1","userId":"$v"}), 400);
}
body_case('productId hash tag escape', '{"productId":"x}:stock","userId":"u1"}', 400);
body_case('productId key of another product', '{"productId":"p1}:idem:{p2","userId":"u1"}', 400);

for my $k ('a{b}', 'a:b', 'a b', 'a*b', 'a.b', 'a/b', '{x}', 'k' x 65, 'a%20b') {
    push @cases, { name => "idempotency key '" . substr($k, 0, 12) . "'",
                   body => $ok_body, key => $k, status => 400 };
}
push @cases, { name => 'no idempotency key', body => $ok_body, key => undef,
               status => 400 };
push @cases, { name => 'empty idempotency key', body => $ok_body, key => '',
               status => 400 };

# --- HTTP level ----------------------------------------------------------------
push @cases, { name => 'GET', method => 'GET', body => '', status => 405 };
push @cases, { name => 'PUT', method => 'PUT', body => $ok_body, status => 405 };
push @cases, { name => 'text/plain', body => $ok_body, ctype => 'text/plain',
               status => 415 };
push @cases, { name => 'form urlencoded', ctype => 'application/x-www-form-urlencoded',
               body => 'productId=p1&userId=u1', status => 415 };
push @cases, { name => 'no content type', body => $ok_body, ctype => undef,
               status => 415 };
push @cases, { name => 'body over the limit', body => '{"productId":"p1","userId":"u1","pad":"'
               . ('x' x 8000) . '"}', status => 413 };
push @cases, { name => 'chunked body over the limit', chunked => 1,
               body => '{"productId":"p1","pad":"' . ('x' x 8000) . '"}', status => 413 };
push @cases, { name => 'chunked malformed JSON', chunked => 1,
               body => '{"productId":"p1",', status => 400 };
push @cases, { name => 'chunked bad quantity', chunked => 1,
               body => '{"productId":"p1","userId":"u1","quantity":-5}', status => 400 };

my $req = sub {
    my ($head, $body) = @_;
    return "POST /order HTTP/1.1\r\nHost: gate\r\nConnection: close\r\n"
         . "Content-Type: application/json\r\n$head"
         . "Content-Length: " . length($body) . "\r\n\r\n$body";
};
push @cases, { name => 'header injection in the key (CRLF)', status => 400,
               raw => $req->("X-Idempotency-Key: a\rX-Evil: 1\r\n", $ok_body) };
push @cases, { name => 'NUL in the key header', status => 400,
               raw => $req->("X-Idempotency-Key: a\0b\r\n", $ok_body) };
push @cases, { name => 'two idempotency keys', status => 400,
               raw => $req->("X-Idempotency-Key: a1\r\nX-Idempotency-Key: a2\r\n", $ok_body) };
push @cases, { name => 'Content-Length shorter than the body', status => 400,
               raw => "POST /order HTTP/1.1\r\nHost: gate\r\nConnection: close\r\n"
                    . "Content-Type: application/json\r\nX-Idempotency-Key: cl1\r\n"
                    . "Content-Length: 10\r\n\r\n$ok_body" };
push @cases, { name => 'Content-Length and chunked', status => 400,
               raw => "POST /order HTTP/1.1\r\nHost: gate\r\nConnection: close\r\n"
                    . "Content-Type: application/json\r\nX-Idempotency-Key: cl2\r\n"
                    . "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                    . "5\r\n{\"a\":\r\n0\r\n\r\n" };
push @cases, { name => 'negative Content-Length', status => 400,
               raw => $req->('', '') =~ s/Content-Length: 0/Content-Length: -1/r };
push @cases, { name => 'huge Content-Length', status => 413,
               raw => $req->('', '') =~ s/Content-Length: 0/Content-Length: 99999999999/r };
push @cases, { name => 'slow body, malformed at the end', status => 400,
               pieces => [ $req->("X-Idempotency-Key: slow1\r\n", '{"productId":"p1",')
                               =~ s/Content-Length: \d+/Content-Length: 26/r,
                           '"use', 'rId"' ] };
push @cases, { name => 'body stalls past client_body_timeout', status => qr/^(408|closed)$/,
               stall => 6,
               raw => $req->("X-Idempotency-Key: slow2\r\n", $ok_body)
                      =~ s/Content-Length: \d+/Content-Length: 500/r };

\@cases;
