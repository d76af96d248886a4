# AlyOAuth.pm -- test helpers for alyd's built-in authorization server:
# PKCE pairs, the consent form as a browser without JavaScript would submit
# it (hidden fields, cookies), the token endpoint, and a whole code flow.
#
#   my $o = AlyOAuth->new($srv);                  # an Alyd server
#   my $pkce = AlyOAuth::pkce();                  # {verifier, challenge}
#   my $page = $o->authorize_page(client_id => $id, redirect_uri => $cb, ...);
#   my $r = $o->decide($page, email => $e, password => $p, action => 'approve');
#   my ($st, $h, $j) = $o->token(grant_type => 'authorization_code', ...);
package AlyOAuth;
use strict;
use warnings;
use Digest::SHA qw(sha256);
use MIME::Base64 qw(encode_base64url decode_base64url);
use JSON::PP ();
use Alyd ();

sub new {
    my ($class, $srv) = @_;
    return bless { srv => $srv, cookies => {} }, $class;
}

sub unesc { my ($s) = @_; $s =~ s/%([0-9A-Fa-f]{2})/chr hex $1/ge; return $s }

sub enc { my ($s) = @_; $s =~ s/([^A-Za-z0-9\-._~])/sprintf('%%%02X', ord $1)/ge; return $s }

sub form { my (@kv) = @_; my @p; while (@kv) { my ($k, $v) = splice @kv, 0, 2; push @p, enc($k) . '=' . enc($v) } join '&', @p }

sub pkce {
    my $v = encode_base64url(join '', map { chr int rand 256 } 1 .. 48);
    return { verifier => $v, challenge => encode_base64url(sha256($v)) };
}

# A browser's cookie jar, keyed by name (no attributes kept).
sub cookie_header {
    my ($self) = @_;
    my $c = join '; ', map { "$_=$self->{cookies}{$_}" } sort keys %{ $self->{cookies} };
    return length $c ? ('-H', "Cookie: $c") : ();
}

sub take_cookies {
    my ($self, $headers) = @_;
    my @set;
    for my $line (split /\r?\n/, $headers) {
        next unless $line =~ /^set-cookie:\s*([^=;\s]+)=([^;]*)(.*)$/i;
        $self->{cookies}{$1} = $2;
        push @set, "$1=$2$3";
    }
    return @set;
}

sub forget_cookies { $_[0]{cookies} = {} }

# The hidden inputs and checkboxes of a consent page.
sub parse_page {
    my ($html) = @_;
    my %p = (scopes => [], checked => []);
    for my $input ($html =~ /(<input\b[^>]*>)/g) {
        my ($name)  = $input =~ /\bname="([^"]*)"/;
        my ($value) = $input =~ /\bvalue="([^"]*)"/;
        my ($type)  = $input =~ /\btype="([^"]*)"/;
        next unless defined $name;
        if ($type && $type eq 'checkbox') {
            push @{ $p{scopes} }, $value;
            push @{ $p{checked} }, $value if $input =~ /\bchecked\b/;
        } elsif ($type && $type eq 'hidden') {
            $p{$name} = $value;
        } else {
            $p{inputs}{$name} = 1;
        }
    }
    $p{workspaces} = [ $html =~ /<option value="([^"]*)"/g ] if $html =~ /<select name="workspace"/;
    ($p{action}) = $html =~ /<form\b[^>]*\baction="([^"]*)"/;
    ($p{method}) = $html =~ /<form\b[^>]*\bmethod="([^"]*)"/;
    $p{buttons} = [ $html =~ /<button\b[^>]*\bname="action"[^>]*\bvalue="([^"]*)"/g ];
    return \%p;
}

# GET /oauth/authorize with %q as the query (undef values left out); returns {status, headers, body, page}.
sub authorize_page {
    my ($self, %q) = @_;
    my $qs = form(map { defined $q{$_} ? ($_ => $q{$_}) : () } sort keys %q);
    my ($st, $h, $b) = Alyd::curl($self->cookie_header, $self->{srv}->url("/oauth/authorize?$qs"));
    $self->take_cookies($h);
    return { status => $st, headers => $h, body => $b, page => parse_page($b) };
}

# POSTs the consent form of $page: %o may set email, password, workspace, scopes (array), action, and
# override request/csrf; raw => a body to send as is.  Returns {status, headers, body, location, params}.
sub decide {
    my ($self, $page, %o) = @_;
    my $p = $page->{page};
    my @kv = (request => $o{request} // $p->{request}, csrf => $o{csrf} // $p->{csrf});
    @kv = grep { defined } @kv;
    my @pairs;
    while (@kv) { my ($k, $v) = splice @kv, 0, 2; push @pairs, $k, $v if defined $v }
    push @pairs, email => $o{email} if defined $o{email};
    push @pairs, password => $o{password} if defined $o{password};
    push @pairs, workspace => $o{workspace} if defined $o{workspace};
    push @pairs, scope => $_ for @{ $o{scopes} // $p->{checked} };
    push @pairs, action => $o{action} // 'approve';
    my $body = $o{raw} // form(@pairs);
    my ($st, $h, $b) = Alyd::curl($self->cookie_header, '-H', 'Content-Type: ' . ($o{type} // 'application/x-www-form-urlencoded'),
        '--data-binary', $body, $self->{srv}->url('/oauth/authorize'));
    $self->take_cookies($h);
    my $loc = Alyd::header_value($h, 'location');
    return { status => $st, headers => $h, body => $b, location => $loc, params => query_params($loc), page => parse_page($b) };
}

sub query_params {
    my ($url) = @_;
    return {} unless defined $url && $url =~ /\?(.*)$/;
    my %p;
    for my $kv (split /&/, $1) {
        my ($k, $v) = split /=/, $kv, 2;
        $v //= '';
        $v =~ tr/+/ /;
        push @{ $p{ unesc($k) } }, unesc($v);
    }
    return { map { $_ => (@{ $p{$_} } == 1 ? $p{$_}[0] : $p{$_}) } keys %p };
}

# POST /oauth/token (or $o{path}) with the form %f; @extra curl arguments first.  Returns (status, headers, json, body).
sub token {
    my ($self, %f) = @_;
    my @extra = @{ delete $f{curl} // [] };
    my $path = delete $f{path} // '/oauth/token';
    my $body = exists $f{raw} ? delete $f{raw} : form(map { ($_ => $f{$_}) } sort keys %f);
    my ($st, $h, $b) = Alyd::curl(@extra, '-H', 'Content-Type: application/x-www-form-urlencoded', '--data-binary', $body,
        $self->{srv}->url($path));
    return ($st, $h, Alyd::json_decode($b), $b);
}

# A whole code flow for a client: page, sign-in and approval, code.  Returns {code, pkce, redirect, decision}.
sub get_code {
    my ($self, %o) = @_;
    my $pkce = pkce();
    my $page = $self->authorize_page(
        response_type => 'code', client_id => $o{client_id}, redirect_uri => $o{redirect_uri}, state => $o{state} // 'st-' . int rand 1e9,
        code_challenge => $pkce->{challenge}, code_challenge_method => 'S256', scope => $o{scope},
        resource => $o{resource} // $self->{srv}->url('/api/mcp'));
    my $d = $self->decide($page, email => $o{email}, password => $o{password}, scopes => $o{scopes}, workspace => $o{workspace});
    return { code => $d->{params}{code}, pkce => $pkce, redirect => $o{redirect_uri}, decision => $d, page => $page };
}

# get_code then the token exchange; returns the token endpoint's JSON (undef on failure) and the flow.
sub tokens {
    my ($self, %o) = @_;
    my $f = $self->get_code(%o);
    my ($st, $h, $j) = $self->token(grant_type => 'authorization_code', code => $f->{code} // '', redirect_uri => $o{redirect_uri},
        code_verifier => $f->{pkce}{verifier}, client_id => $o{client_id}, %{ $o{token_extra} // {} });
    return ($st == 200 ? $j : undef, $f);
}

# The claims of an access token (unverified: tests read what alyd wrote).
sub claims {
    my ($token) = @_;
    my ($jws) = $token =~ /^aly_oauth_(.*)$/ or return undef;
    my (undef, $c) = split /\./, $jws;
    return Alyd::json_decode(decode_base64url($c));
}

sub header_of {
    my ($token) = @_;
    my ($jws) = $token =~ /^aly_oauth_(.*)$/ or return undef;
    my ($h) = split /\./, $jws;
    return Alyd::json_decode(decode_base64url($h));
}

# POST an MCP ping with a bearer token; returns the HTTP status.
sub mcp_status {
    my ($srv, $token) = @_;
    my ($st) = Alyd::curl('-H', "Authorization: Bearer $token", '-H', 'Content-Type: application/json', '-H',
        'Accept: application/json, text/event-stream', '--data-binary', '{"jsonrpc":"2.0","id":1,"method":"ping"}', $srv->url('/api/mcp'));
    return $st;
}

1;
