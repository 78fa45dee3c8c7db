{{/* Names and labels. */}}
{{- define "deputy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "deputy.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "deputy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "deputy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "deputy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "deputy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "deputy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "deputy.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "deputy.keysSecretName" -}}
{{- default (printf "%s-keys" (include "deputy.fullname" .)) .Values.signingKeys.existingSecret -}}
{{- end -}}

{{/* The signing key files, all published; the first signs unless signingKeys.signWith names another. */}}
{{- define "deputy.signingKeyNames" -}}
{{- if .Values.signingKeys.existingSecret -}}
{{- if not .Values.signingKeys.existingSecretKeys -}}
{{- fail "signingKeys.existingSecretKeys must name the key files in signingKeys.existingSecret" -}}
{{- end -}}
{{- toYaml .Values.signingKeys.existingSecretKeys -}}
{{- else if .Values.signingKeys.keys -}}
{{- $names := list -}}
{{- range .Values.signingKeys.keys }}{{ $names = append $names .name }}{{ end -}}
{{- toYaml $names -}}
{{- else -}}
{{- toYaml (list "signing-key.pem") -}}
{{- end -}}
{{- end -}}

{{- define "deputy.redisSecretName" -}}
{{- default (printf "%s-redis" (include "deputy.fullname" .)) .Values.redis.existingSecret -}}
{{- end -}}

{{- define "deputy.redisHasPassword" -}}
{{- if and .Values.redis.enabled (or .Values.redis.password .Values.redis.existingSecret) -}}true{{- end -}}
{{- end -}}

{{- define "deputy.monitoringAPI" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" -}}true{{- end -}}
{{- end -}}

{{/*
deputy.config as Deputy reads it, as JSON: a key set to null ("key:",
"~", "null"), which Helm keeps when the chart has no default for it, is
left out, at any depth, as Deputy reads a null as unset and takes its
default. Every template reads deputy.config through it: read as set, a
null check.method_overrides meant "no carriers" to Envoy's config while
Deputy read its default carriers, which Envoy then never sent it. An
empty list or map stays as set: [] is "none" for both.
*/}}
{{- define "deputy.userConfig" -}}
{{- $cfg := deepCopy (.Values.deputy.config | default dict) -}}
{{- include "deputy.dropNulls" $cfg -}}
{{- toJson $cfg -}}
{{- end -}}

{{/* Removes, in place, the null values of a map (the argument) and of the maps and lists under it. */}}
{{- define "deputy.dropNulls" -}}
{{- if kindIs "map" . -}}
{{- range $k, $v := . }}{{ if kindIs "invalid" $v }}{{ $_ := unset $ $k }}{{ else }}{{ include "deputy.dropNulls" $v }}{{ end }}{{ end -}}
{{- else if kindIs "slice" . -}}
{{- range . }}{{ include "deputy.dropNulls" . }}{{ end -}}
{{- end -}}
{{- end -}}

{{/*
Deputy's config file. Chart values fill the sections they own; anything in
.Values.deputy.config is merged over them.
*/}}
{{- define "deputy.config" -}}
{{- $policy := dict -}}
{{- if eq .Values.policies.source "bundle" -}}
{{- /* Empty, not absent: the server's default paths would compete with the bundle. */ -}}
{{- $_ := set $policy "paths" (list) -}}
{{- $_ := set $policy "bundle_url" .Values.policies.bundle.url -}}
{{- $_ := set $policy "poll_interval" .Values.policies.bundle.pollInterval -}}
{{- $_ := set $policy "public_key" "/etc/deputy/bundle/public.pem" -}}
{{- $_ := set $policy "key_algorithm" .Values.policies.bundle.keyAlgorithm -}}
{{- with .Values.policies.bundle.minSignedAt -}}
{{- $_ := set $policy "min_signed_at" . -}}
{{- end -}}
{{- else -}}
{{- $_ := set $policy "paths" (list "/etc/deputy/policies") -}}
{{- if eq .Values.policies.source "configMap" -}}
{{- /* The kubelet updates a mounted ConfigMap in place: follow it. */ -}}
{{- $_ := set $policy "watch" true -}}
{{- end -}}
{{- end -}}
{{- $keyNames := include "deputy.signingKeyNames" . | fromYamlArray -}}
{{- $keyFiles := list -}}
{{- range $keyNames -}}
{{- $keyFiles = append $keyFiles (printf "/etc/deputy/keys/%s" .) -}}
{{- end -}}
{{- $actorToken := dict "key_files" $keyFiles -}}
{{- with .Values.signingKeys.signWith -}}
{{- /* A key signs only while upstreams may hold it: one that is listed, so published. */ -}}
{{- if not (has . $keyNames) }}{{ fail (printf "signingKeys.signWith %q is none of the keys listed (%s): a key signs only once it is published" . (join ", " $keyNames)) }}{{ end -}}
{{- $_ := set $actorToken "sign_key_file" (printf "/etc/deputy/keys/%s" .) -}}
{{- end -}}
{{- $cfg := dict "log_level" .Values.deputy.logLevel "policy" $policy "actor_token" $actorToken -}}
{{- if .Values.deputy.spool.enabled -}}
{{- /* Records the sink has not taken when the container stops wait in
       the pod's emptyDir, and its next start sends them first. */ -}}
{{- $_ := set $cfg "decision_log" (dict "spool_dir" "/var/lib/deputy/spool" "spool_max_bytes" (include "deputy.spoolMaxBytes" . | int64)) -}}
{{- end -}}
{{- /* Envoy sends Deputy the request itself: no forwarded endpoint, whose
       nginx headers a client could otherwise send through the pod. */ -}}
{{- $http := dict "check_proxy" "envoy" "envoy_upstream_headers" (include "deputy.envoyUpstreamHeaders" . | fromJsonArray) -}}
{{- if ne .Values.envoy.extAuthz.transport "grpc" -}}
{{- /* Deputy reads a body of exactly Envoy's limit as possibly cut. */ -}}
{{- $_ := set $http "max_body_bytes" (int64 .Values.envoy.extAuthz.maxRequestBytes) -}}
{{- end -}}
{{- $_ := set $cfg "http" $http -}}
{{- $identity := dict -}}
{{- with .Values.identity.issuerURLs }}{{ $_ := set $identity "issuer_urls" . }}{{ end -}}
{{- with .Values.identity.audiences }}{{ $_ := set $identity "audiences" . }}{{ end -}}
{{- if .Values.identity.anonymousOnly }}{{ $_ := set $identity "anonymous_only" true }}{{ end -}}
{{- if .Values.identity.anyAudience }}{{ $_ := set $identity "any_audience" true }}{{ end -}}
{{- if $identity }}{{ $_ := set $cfg "identity" $identity }}{{ end -}}
{{- if .Values.redis.enabled -}}
{{- $redis := dict "addrs" .Values.redis.addrs "db" .Values.redis.db "tls" .Values.redis.tls "cluster" .Values.redis.cluster -}}
{{- with .Values.redis.masterName }}{{ $_ := set $redis "master_name" . }}{{ end -}}
{{- with .Values.redis.username }}{{ $_ := set $redis "username" . }}{{ end -}}
{{- if .Values.redis.requireAOF }}{{ $_ := set $redis "require_aof" true }}{{ end -}}
{{- if ne (toString .Values.redis.narrowingReplicas) "" }}{{ $_ := set $redis "narrowing_replicas" (toString .Values.redis.narrowingReplicas) }}{{ end -}}
{{- if and .Values.redis.username (not (include "deputy.redisHasPassword" .)) }}{{ fail "redis.username needs redis.password or redis.existingSecret: without one the client connects as the default user" }}{{ end -}}
{{- $_ := set $cfg "redis" $redis -}}
{{- end -}}
{{- $cfg = mergeOverwrite $cfg (include "deputy.userConfig" . | fromJson) -}}
{{- if eq .Values.mode "sidecar" -}}
{{- /* Below the chart's Envoy timeout (deputy.stateLookupBudget). */ -}}
{{- $lookup := get $cfg "state_lookup" | default dict -}}
{{- if kindIs "map" $lookup }}{{ $_ := set $lookup "budget" (include "deputy.stateLookupBudget" .) }}{{ $_ := set $cfg "state_lookup" $lookup }}{{ end -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/*
An RE2 regex for a header name (the argument) as Envoy may send it: in
lower case, with "-" and "_" alike, as CGI upstreams read them.
*/}}
{{- define "deputy.spellings" -}}
{{- lower . | regexQuoteMeta | replace "_" "-" | replace "-" "[-_]" -}}
{{- end -}}

{{/*
The header names Deputy reads and sets beside its method overrides, from
deputy.config as Deputy reads them (its defaults unless set), in lower
case with "-" for "_" as Deputy holds them: check.owned_prefix,
check.actor_token_header, partner.on_behalf_of_header and identity.header,
as JSON. Envoy's config and Deputy's http.envoy_upstream_headers both follow
them: an Envoy config spelling the defaults would neither send Deputy a
client's header under a configured name nor copy Deputy's upstream. A name
with a byte other than a letter, a digit, "-" or "_" fails the render, as
Deputy refuses it: PHP, CGI and WSGI read x.acme.subject as x-acme-subject.
So does such a name in the other settings naming headers: the header
carriers of check.method_overrides and identity.credential_carriers,
decision_log.mask_headers and
actor_token_header, and http.envoy_upstream_headers (before its "*").
*/}}
{{- define "deputy.headerNames" -}}
{{- $cfg := include "deputy.userConfig" . | fromJson -}}
{{- $prefix := dig "check" "owned_prefix" "" $cfg | default "x-deputy-" -}}
{{- $token := dig "check" "actor_token_header" "" $cfg | default (printf "%stoken" $prefix) -}}
{{- $onBehalfOf := dig "partner" "on_behalf_of_header" "" $cfg | default "x-on-behalf-of" -}}
{{- $identity := dig "identity" "header" "" $cfg | default "authorization" -}}
{{- /* The prefix first: the actor-token header's default derives from it. */ -}}
{{- $checked := list (list "check.owned_prefix" $prefix) (list "check.actor_token_header" $token) (list "partner.on_behalf_of_header" $onBehalfOf) (list "identity.header" $identity) -}}
{{- with dig "decision_log" "actor_token_header" "" $cfg }}{{ $checked = append $checked (list "decision_log.actor_token_header" .) }}{{ end -}}
{{- /* The lists' entries, each named by its index. */ -}}
{{- range $i, $c := dig "check" "method_overrides" list $cfg }}{{ if hasPrefix "header:" (toString $c) }}{{ $checked = append $checked (list (printf "check.method_overrides[%d]" $i) (trimPrefix "header:" (toString $c))) }}{{ end }}{{ end -}}
{{- range $i, $c := dig "identity" "credential_carriers" list $cfg }}{{ if hasPrefix "header:" (toString $c) }}{{ $checked = append $checked (list (printf "identity.credential_carriers[%d]" $i) (trimPrefix "header:" (toString $c))) }}{{ end }}{{ end -}}
{{- range $i, $h := dig "decision_log" "mask_headers" list $cfg }}{{ $checked = append $checked (list (printf "decision_log.mask_headers[%d]" $i) $h) }}{{ end -}}
{{- range $i, $h := dig "http" "envoy_upstream_headers" list $cfg }}{{ $checked = append $checked (list (printf "http.envoy_upstream_headers[%d]" $i) (trimSuffix "*" (toString $h))) }}{{ end -}}
{{- range $checked }}
{{- if not (regexMatch "^[A-Za-z0-9_-]+$" (toString (index . 1))) }}
{{- fail (printf "deputy.config.%s: %q is not a header name: use only letters, digits, \"-\" and \"_\" (upstreams read \".\" and other bytes as they read \"-\")" (index . 0) (index . 1)) }}
{{- end }}
{{- end -}}
{{- dict "prefix" (lower $prefix | replace "_" "-") "token" (lower $token | replace "_" "-") "onBehalfOf" (lower $onBehalfOf | replace "_" "-") "identity" (lower $identity | replace "_" "-") | toJson -}}
{{- end -}}

{{/*
What Envoy's http_service copies upstream from Deputy's answer, as
http.envoy_upstream_headers spells it (exact names, or prefixes ending in
"*"), as JSON: deputy.config's list when set, else Deputy's delegated
identity under the configured names and cache-control. Deputy refuses an
allow that sets a header outside it, and does not start when it leaves
out a name Deputy sets.
*/}}
{{- define "deputy.envoyUpstreamHeaders" -}}
{{- $cfg := include "deputy.userConfig" . | fromJson -}}
{{- $names := include "deputy.headerNames" . | fromJson -}}
{{- dig "http" "envoy_upstream_headers" (list (printf "%s*" $names.prefix) $names.token $names.onBehalfOf "cache-control") $cfg | toJson -}}
{{- end -}}

{{/*
Envoy allowed_headers patterns for the header carriers of Deputy's
check.method_overrides (the server's defaults unless deputy.config sets
them): each name lowercased, as Envoy sends it, with "-" and "_" alike, as
CGI upstreams read them.
*/}}
{{- define "deputy.methodOverrideHeaders" -}}
{{- $carriers := list "header:x-http-method-override" "header:x-http-method" "header:x-method-override" -}}
{{- $check := dig "check" dict (include "deputy.userConfig" . | fromJson) -}}
{{- if hasKey $check "method_overrides" }}{{ $carriers = $check.method_overrides }}{{ end -}}
{{- range $carriers }}
{{- if hasPrefix "header:" . }}
- safe_regex: { regex: {{ include "deputy.spellings" (trimPrefix "header:" .) | toJson }} }
{{- end }}
{{- end }}
{{- end -}}

{{/*
Envoy allowed_headers patterns for the header carriers of Deputy's
identity.credential_carriers (the server's defaults unless deputy.config
sets them), as deputy.methodOverrideHeaders spells them: a token in a
header Deputy is not sent would leave a session honoured while the
application signs the token's holder in.
*/}}
{{- define "deputy.credentialCarrierHeaders" -}}
{{- $carriers := list "header:x-access-token" "header:x-auth-token" "header:x-api-key" "header:token" "header:x-authorization" -}}
{{- $identity := dig "identity" dict (include "deputy.userConfig" . | fromJson) -}}
{{- if hasKey $identity "credential_carriers" }}{{ $carriers = $identity.credential_carriers }}{{ end -}}
{{- range $carriers }}
{{- if hasPrefix "header:" . }}
- safe_regex: { regex: {{ include "deputy.spellings" (trimPrefix "header:" .) | toJson }} }
{{- end }}
{{- end }}
{{- end -}}

{{/*
A Kubernetes quantity (the argument's "value") in bytes: an integer with
an optional Ki, Mi, Gi, Ti, k, M, G or T suffix; other forms fail the
render, naming the setting (the argument's "setting"; "hint" says what
else to do).
*/}}
{{- define "deputy.quantityBytes" -}}
{{- $q := .value -}}
{{- if or (kindIs "float64" $q) (kindIs "int64" $q) (kindIs "int" $q) }}{{ $q = printf "%d" (int64 $q) }}{{ end -}}
{{- $form := "^([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?$" -}}
{{- if not (regexMatch $form $q) -}}
{{- fail (printf "%s: %s %q; write it as an integer with Ki, Mi, Gi, Ti, k, M, G or T%s" .setting .what $q .hint) -}}
{{- end -}}
{{- $units := dict "" 1 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 -}}
{{- mul (atoi (regexReplaceAll $form $q "${1}")) (get $units (regexReplaceAll $form $q "${2}")) -}}
{{- end -}}

{{/*
GOMEMLIMIT for Deputy, in bytes: 90% of its container's memory limit (the
argument), so that near the limit the Go GC works harder instead of the
kernel killing the container. It costs nothing below the limit.
*/}}
{{- define "deputy.goMemLimit" -}}
{{- $bytes := include "deputy.quantityBytes" (dict "value" . "setting" "deputy.resources.limits.memory" "what" "cannot derive GOMEMLIMIT from" "hint" ", or set GOMEMLIMIT in deputy.extraEnv") -}}
{{- div (mul $bytes 9) 10 -}}
{{- end -}}

{{/*
The decision log spool's bound, decision_log.spool_max_bytes, in bytes:
deputy.config's, or three quarters of deputy.spool.sizeLimit. The spool
keeps besides its bound the delivered part of its oldest segment (a
quarter of the bound at most, 16 MiB at most, or one record of
decision_log.max_record_bytes when that is larger) and two small files;
past its sizeLimit the kubelet evicts the pod, so a bound that leaves no
room for them fails the render.
*/}}
{{- define "deputy.spoolMaxBytes" -}}
{{- $size := include "deputy.quantityBytes" (dict "value" .Values.deputy.spool.sizeLimit "setting" "deputy.spool.sizeLimit" "what" "cannot read" "hint" "") | int64 -}}
{{- $cfg := include "deputy.userConfig" . | fromJson -}}
{{- $max := div (mul $size 3) 4 -}}
{{- $whose := "decision_log.spool_max_bytes %d (three quarters of deputy.spool.sizeLimit)" -}}
{{- with dig "decision_log" "spool_max_bytes" nil $cfg -}}
{{- $max = int64 . -}}
{{- $whose = "deputy.config.decision_log.spool_max_bytes %d" -}}
{{- end -}}
{{- $record := dig "decision_log" "max_record_bytes" 0 $cfg | int64 | default 65536 -}}
{{- $segment := max (min (div $max 4) 16777216) (add $record 1) -}}
{{- if gt (add $max $segment 65536) $size -}}
{{- fail (printf "%s does not fit deputy.spool.sizeLimit (%d bytes) with the spool's oldest segment (%d bytes at most, a quarter of the bound up to 16 MiB, or one record of decision_log.max_record_bytes) and its small files (64 KiB): past its sizeLimit the pod is evicted. Raise sizeLimit, or lower spool_max_bytes or max_record_bytes" (printf $whose $max) $size $segment) -}}
{{- end -}}
{{- $max -}}
{{- end -}}

{{/*
A Go duration (the argument's "value", as deputy.config spells it: 15s,
1m30s, 500ms) in milliseconds, rounded up from whole nanoseconds as Go
reads it (each part's fraction below a nanosecond cut, so 0.4ns is 0); another
form fails the render, naming the setting (the argument's "setting").
*/}}
{{- define "deputy.durationMillis" -}}
{{- $d := toString .value -}}
{{- $part := "([0-9]+(\\.[0-9]*)?|\\.[0-9]+)(ns|us|µs|ms|s|m|h)" -}}
{{- if not (or (eq $d "0") (regexMatch (printf "^(%s)+$" $part) $d)) -}}
{{- fail (printf "deputy.config.%s: the chart cannot read %q as a duration: write it as Go does, e.g. 15s, 1m30s or 500ms" .setting $d) -}}
{{- end -}}
{{- $units := dict "ns" 1.0 "us" 1000.0 "µs" 1000.0 "ms" 1000000.0 "s" 1000000000.0 "m" 60000000000.0 "h" 3600000000000.0 -}}
{{- $ns := 0.0 -}}
{{- range regexFindAll $part $d -1 -}}
{{- $unit := regexReplaceAll "^[0-9.]+" . "" -}}
{{- $ns = addf $ns (floor (mulf (float64 (trimSuffix $unit .)) (get $units $unit))) -}}
{{- end -}}
{{- ceil (divf $ns 1000000.0) | int64 -}}
{{- end -}}

{{/*
envoy.extAuthz.timeout (seconds as protobuf JSON spells them: 0.5s) in
whole microseconds, read from its digits, a fraction below a microsecond
cut.
*/}}
{{- define "deputy.extAuthzTimeoutMicros" -}}
{{- $parts := splitList "." (trimSuffix "s" (toString .Values.envoy.extAuthz.timeout)) -}}
{{- $frac := "" -}}
{{- if gt (len $parts) 1 }}{{ $frac = index $parts 1 }}{{ end -}}
{{- add (mul (atoi (index $parts 0)) 1000000) (atoi (trunc 6 (printf "%s000000" $frac))) -}}
{{- end -}}

{{/*
Deputy's state_lookup.budget under the chart's Envoy. Envoy stops waiting
for a check at envoy.extAuthz.timeout and answers its own 503, without
Deputy's reason (state_unavailable): Deputy's must come first. A check may
wait on three lookups in turn (a session's token, its customer's consent
and its last-seen; acting on behalf, the grants, the shares and the
customer's protection), each with the whole budget, so the budget is a
quarter of the timeout at most, the last quarter left for the rest of the
check and the way to Deputy and back. Unset (or 0, which Deputy reads as
unset), it is Deputy's default, 100ms, or a quarter of a timeout shorter
than 400ms, in whole milliseconds; set over a quarter, the render fails.
*/}}
{{- define "deputy.stateLookupBudget" -}}
{{- $timeout := toString .Values.envoy.extAuthz.timeout -}}
{{- $us := include "deputy.extAuthzTimeoutMicros" . | int64 -}}
{{- $quarter := div $us 4000 -}}
{{- $set := dig "state_lookup" "budget" "" (include "deputy.userConfig" . | fromJson) | toString -}}
{{- $ms := 0 -}}
{{- if $set }}{{ $ms = include "deputy.durationMillis" (dict "setting" "state_lookup.budget" "value" $set) | int64 }}{{ end -}}
{{- if eq $ms 0 -}}
{{- if lt $quarter 1 -}}
{{- fail (printf "envoy.extAuthz.timeout %s is too short: Deputy's state lookups get a quarter of it (state_lookup.budget), and a quarter under 1ms leaves them none. Set 0.004s or more (0.5s by default)" $timeout) -}}
{{- end -}}
{{- printf "%dms" (min 100 $quarter) -}}
{{- else if gt (mul $ms 4000) $us -}}
{{- fail (printf "deputy.config.state_lookup.budget %s is more than a quarter of envoy.extAuthz.timeout (%s): a check may wait on three state lookups in turn, each with the whole budget, and Envoy answers its own 503 when its timeout passes first, without Deputy's reason (state_unavailable). Set the budget to %dms or less, raise the timeout, or leave the budget unset (the chart then sets 100ms, or a quarter of a timeout under 0.4s)" $set $timeout $quarter) -}}
{{- else -}}
{{- $set -}}
{{- end -}}
{{- end -}}

{{/*
What the chart's Envoy sends must fit what Deputy accepts, and the render
fails otherwise. Over gRPC a CheckRequest carries the body (up to
envoy.extAuthz.maxRequestBytes) and the rest of the request: its headers,
up to Envoy's max_request_headers_kb (60 KiB), of which the path and the
host come twice (as headers and as fields of their own), each entry's
framing, the addresses and a peer certificate. 256 KiB is kept for them,
twice the headers and room to spare; past grpc.max_recv_msg_bytes Deputy
refuses the message and Envoy denies the request (503). Over http_service
Deputy reads a body of exactly http.max_body_bytes as possibly cut: the
chart sets it to maxRequestBytes, and deputy.config may not set it apart.
The settings are read from deputy.config only: set among the extras, they
fail the render.
*/}}
{{/*
Deputy's grpc.max_recv_msg_bytes as Deputy reads deputy.config's (the
argument) from config.yaml, or its default, 4194304, unset. Deputy's
loader reads the setting's text as a decimal integer (a sign allowed,
leading zeros decimal) and refuses 0, which it would take for unset; the
text is what the values give, a number as JSON writes it (4.5e6 as
4500000, 1e21 as 1e+21). Anything else fails the render here, not the
pod at start.
*/}}
{{- define "deputy.grpcMaxRecvMsgBytes" -}}
{{- $set := dig "grpc" "max_recv_msg_bytes" nil . -}}
{{- if kindIs "invalid" $set -}}
4194304
{{- else -}}
{{- $text := ternary $set (toJson $set) (kindIs "string" $set) -}}
{{- if not (regexMatch "^[+-]?[0-9]+$" $text) -}}
{{- fail (printf "deputy.config.grpc.max_recv_msg_bytes: Deputy cannot read %q as a number of bytes: write a whole number of bytes in decimal digits, such as 8388608 (no unit, fraction or exponent)" $text) -}}
{{- end -}}
{{- $digits := regexReplaceAll "^[+-]?0*" $text "" -}}
{{- if eq $digits "" -}}
{{- fail "deputy.config.grpc.max_recv_msg_bytes: Deputy reads 0 as unset and refuses it: leave the setting unset for the default (4194304), or set a number of bytes" -}}
{{- end -}}
{{- if or (gt (len $digits) 19) (and (eq (len $digits) 19) (gt $digits "9223372036854775807")) -}}
{{- fail (printf "deputy.config.grpc.max_recv_msg_bytes: %s is past the largest integer Deputy reads (9223372036854775807)" $text) -}}
{{- end -}}
{{- /* The digits alone: the chart's int64 would read a leading 0 as octal. */ -}}
{{- if hasPrefix "-" $text }}-{{ end }}{{ $digits }}
{{- end -}}
{{- end -}}

{{- define "deputy.checkExtAuthzBounds" -}}
{{- $followed := dict "grpc-max-recv-msg-bytes" "grpc.max_recv_msg_bytes" "http-max-body-bytes" "http.max_body_bytes" "state-lookup-budget" "state_lookup.budget" -}}
{{- range $flag, $setting := $followed -}}
{{- $env := printf "DEPUTY_%s" ($flag | upper | replace "-" "_") -}}
{{- range $.Values.deputy.extraArgs -}}
{{- if or (eq (toString .) (printf "--%s" $flag)) (hasPrefix (printf "--%s=" $flag) (toString .)) -}}
{{- fail (printf "deputy.extraArgs: --%s is not followed by the chart's Envoy config: set %s in deputy.config" $flag $setting) -}}
{{- end -}}
{{- end -}}
{{- range $.Values.deputy.extraEnv -}}
{{- if eq (toString .name) $env -}}
{{- fail (printf "deputy.extraEnv: %s is not followed by the chart's Envoy config: set %s in deputy.config" $env $setting) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $cfg := include "deputy.userConfig" . | fromJson -}}
{{- $body := int64 .Values.envoy.extAuthz.maxRequestBytes -}}
{{- $room := 262144 -}}
{{- if eq .Values.envoy.extAuthz.transport "grpc" -}}
{{- $max := include "deputy.grpcMaxRecvMsgBytes" $cfg | int64 -}}
{{- if le $max $room -}}
{{- fail (printf "deputy.config.grpc.max_recv_msg_bytes %d leaves no room for a body: raise it to at least %d (envoy.extAuthz.maxRequestBytes, and 256 KiB for the rest of Envoy's CheckRequest)" $max (add $body $room)) -}}
{{- else if gt $body (sub $max $room) -}}
{{- fail (printf "envoy.extAuthz.maxRequestBytes %d leaves less than 256 KiB of grpc.max_recv_msg_bytes (%d) for the rest of Envoy's CheckRequest (its headers, up to Envoy's 60 KiB, of which the path and the host come twice, their framing, the addresses and a peer certificate): Deputy would refuse the check of a body that large, and Envoy deny the request (503). Set it at most %d, or raise deputy.config.grpc.max_recv_msg_bytes" $body $max (sub $max $room)) -}}
{{- end -}}
{{- else -}}
{{- $http := get $cfg "http" -}}
{{- if and (kindIs "map" $http) (hasKey $http "max_body_bytes") (ne (int64 $http.max_body_bytes) $body) -}}
{{- fail (printf "deputy.config.http.max_body_bytes %d is not envoy.extAuthz.maxRequestBytes (%d): Deputy reads a body of exactly its limit as possibly cut, and one Envoy cut at another length as whole. Set envoy.extAuthz.maxRequestBytes alone: the chart gives Deputy the same number" (int64 $http.max_body_bytes) $body) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The longest Deputy may take to stop after SIGTERM, in whole seconds:
shutdown_timeout (in-flight checks), then decision_log.flush_timeout
(the decision log and the delegation records flush side by side), then,
when the flush lost records, metrics.final_scrape_wait (for a scrape to
count them); from deputy.config, or Deputy's defaults (15s, 5s, 15s).
Deputy reads a zero shutdown_timeout or flush_timeout as unset and takes
its default, so the chart does too; a zero final_scrape_wait is none.
*/}}
{{- define "deputy.stopSeconds" -}}
{{- $cfg := include "deputy.userConfig" . | fromJson -}}
{{- $ms := 0 -}}
{{- range list (list "shutdown_timeout" (dig "shutdown_timeout" "15s" $cfg) 15000) (list "decision_log.flush_timeout" (dig "decision_log" "flush_timeout" "5s" $cfg) 5000) (list "metrics.final_scrape_wait" (dig "metrics" "final_scrape_wait" "15s" $cfg) 0) -}}
{{- $d := include "deputy.durationMillis" (dict "setting" (index . 0) "value" (index . 1)) | int64 -}}
{{- $ms = add $ms (ternary (index . 2) $d (eq $d 0)) -}}
{{- end -}}
{{- div (add $ms 999) 1000 -}}
{{- end -}}

{{/*
The pod's terminationGracePeriodSeconds: long enough for Deputy to stop
(deputy.stopSeconds) with a margin of 5 s, so the kubelet's SIGKILL never
cuts the decision log's flush. Set by the operator, it must be at least
that: the render fails otherwise. The timeouts it follows are read from
deputy.config only: set among the extras, they fail the render.
*/}}
{{- define "deputy.terminationGracePeriodSeconds" -}}
{{- $timeouts := dict "shutdown-timeout" "shutdown_timeout" "decision-log-flush-timeout" "decision_log.flush_timeout" "metrics-final-scrape-wait" "metrics.final_scrape_wait" -}}
{{- range $flag, $setting := $timeouts -}}
{{- $env := printf "DEPUTY_%s" ($flag | upper | replace "-" "_") -}}
{{- range $.Values.deputy.extraArgs -}}
{{- if or (eq (toString .) (printf "--%s" $flag)) (hasPrefix (printf "--%s=" $flag) (toString .)) -}}
{{- fail (printf "deputy.extraArgs: --%s is not followed by the pod's terminationGracePeriodSeconds: set %s in deputy.config" $flag $setting) -}}
{{- end -}}
{{- end -}}
{{- range $.Values.deputy.extraEnv -}}
{{- if eq (toString .name) $env -}}
{{- fail (printf "deputy.extraEnv: %s is not followed by the pod's terminationGracePeriodSeconds: set %s in deputy.config" $env $setting) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $need := add (include "deputy.stopSeconds" .) 5 -}}
{{- $set := .Values.terminationGracePeriodSeconds -}}
{{- if kindIs "invalid" $set -}}
{{- $need -}}
{{- else if lt (int64 $set) (int64 $need) -}}
{{- fail (printf "terminationGracePeriodSeconds %d is shorter than Deputy may take to stop (%d s: shutdown_timeout, decision_log.flush_timeout and metrics.final_scrape_wait, and a margin of 5 s): the kubelet would kill it before its decision log is flushed. Raise it to %d or more, or leave it unset" (int64 $set) (int64 $need) (int64 $need)) -}}
{{- else -}}
{{- int64 $set -}}
{{- end -}}
{{- end -}}

{{/* The Deputy container, shared by the Deployment and sidecar-only mode.
  The gRPC ext_authz port listens on loopback, where Envoy reaches it, and
  on the pod IP only for the kubelet's gRPC probe (deputy.probes.grpc). */}}
{{- define "deputy.container" -}}
name: deputy
image: {{ printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
args:
  - serve
  - --config=/etc/deputy/config.yaml
  - --grpc-addr={{ if .Values.deputy.probes.grpc }}:{{ else }}127.0.0.1:{{ end }}{{ .Values.deputy.ports.grpc }}
  - --http-addr=127.0.0.1:{{ .Values.deputy.ports.http }}
  - --metrics-addr=:{{ .Values.deputy.ports.metrics }}
  {{- if .Values.deputy.dev }}
  {{- fail "deputy.dev: dev mode listens on loopback only and trusts a signing key anyone with the key file can mint any identity with: it has no place in a cluster (run it with make run on a workstation)" }}
  {{- end }}
  {{- with .Values.deputy.extraArgs }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
env:
  {{- if include "deputy.redisHasPassword" . }}
  - name: DEPUTY_REDIS_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ include "deputy.redisSecretName" . }}
        key: {{ .Values.redis.existingSecretKey }}
  {{- end }}
  {{- with .Values.policies.bundle.tokenSecret }}
  - name: DEPUTY_POLICY_BEARER_TOKEN
    valueFrom:
      secretKeyRef:
        name: {{ . }}
        key: token
  {{- end }}
  {{- $memLimit := dig "limits" "memory" "" (.Values.deputy.resources | default dict) }}
  {{- $userMemLimit := false }}
  {{- range .Values.deputy.extraEnv }}{{ if eq (toString .name) "GOMEMLIMIT" }}{{ $userMemLimit = true }}{{ end }}{{ end }}
  {{- if and $memLimit (not $userMemLimit) }}
  - name: GOMEMLIMIT
    value: {{ include "deputy.goMemLimit" $memLimit | quote }}
  {{- end }}
  {{- with .Values.deputy.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
ports:
  {{- if .Values.deputy.probes.grpc }}
  - name: grpc-authz
    containerPort: {{ .Values.deputy.ports.grpc }}
    protocol: TCP
  {{- end }}
  - name: metrics
    containerPort: {{ .Values.deputy.ports.metrics }}
    protocol: TCP
{{- /* The probes gate on what Deputy needs to decide (policy, the keys
  of the issuer without a namespace, listeners), never on Redis: while
  Redis is down plain checks are still decided and those needing state
  fail closed (503), so an unready pod would only take the storefront down
  with the store. /readyz itself still reports Redis, and
  DeputyRedisUnreachable alerts on it. Nor on the issuers with a namespace
  (partners' identity providers): while one does not serve its keys its
  tokens are refused and every other request decided, as gRPC health
  answers; DeputyIdentityKeysStale alerts on it. */}}
startupProbe:
  httpGet:
    path: /readyz?exclude=redis&exclude=identity_namespaced
    port: metrics
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  {{- if .Values.deputy.probes.grpc }}
  grpc:
    port: {{ .Values.deputy.ports.grpc }}
  {{- else }}
  httpGet:
    path: /readyz?exclude=redis&exclude=identity_namespaced
    port: metrics
  {{- end }}
  periodSeconds: 5
  failureThreshold: 2
resources:
  {{- toYaml .Values.deputy.resources | nindent 2 }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
volumeMounts:
  - name: deputy-config
    mountPath: /etc/deputy/config.yaml
    subPath: config.yaml
    readOnly: true
  {{- if ne .Values.policies.source "bundle" }}
  - name: deputy-policies
    mountPath: /etc/deputy/policies
    readOnly: true
  {{- else }}
  - name: deputy-bundle-key
    mountPath: /etc/deputy/bundle
    readOnly: true
  {{- end }}
  - name: deputy-keys
    mountPath: /etc/deputy/keys
    readOnly: true
  - name: deputy-tmp
    mountPath: /tmp
  {{- if .Values.deputy.spool.enabled }}
  - name: deputy-spool
    mountPath: /var/lib/deputy/spool
  {{- end }}
  {{- with .Values.deputy.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* The volumes the Deputy container mounts. */}}
{{- define "deputy.volumes" -}}
- name: deputy-config
  configMap:
    name: {{ include "deputy.fullname" . }}-config
{{- if eq .Values.policies.source "files" }}
- name: deputy-policies
  configMap:
    name: {{ include "deputy.fullname" . }}-policies
    {{- /* ConfigMap keys cannot hold "/": mount each file back at its path,
           since OPA wants package names to match directories. */}}
    items:
      {{- range $path, $_ := .Files.Glob "files/policies/**" }}
      {{- if and (or (hasSuffix ".rego" $path) (hasSuffix ".json" $path)) (not (hasSuffix "_test.rego" $path)) }}
      {{- $rel := trimPrefix "files/policies/" $path }}
      - key: {{ $rel | replace "/" "__" }}
        path: {{ $rel }}
      {{- end }}
      {{- end }}
{{- else if eq .Values.policies.source "configMap" }}
{{- if not .Values.policies.configMap.name }}
{{- fail "policies.configMap.name is required with policies.source: configMap" }}
{{- end }}
- name: deputy-policies
  configMap:
    name: {{ .Values.policies.configMap.name }}
    {{- with .Values.policies.configMap.items }}
    items:
      {{- toYaml . | nindent 6 }}
    {{- end }}
{{- else }}
- name: deputy-bundle-key
  configMap:
    name: {{ include "deputy.fullname" . }}-config
    items:
      - key: bundle-public.pem
        path: public.pem
{{- end }}
- name: deputy-keys
  secret:
    secretName: {{ include "deputy.keysSecretName" . }}
- name: deputy-tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .Values.deputy.spool.enabled }}
- name: deputy-spool
  emptyDir:
    sizeLimit: {{ .Values.deputy.spool.sizeLimit }}
{{- end }}
{{- with .Values.deputy.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Fails the render when a password or token is set where it would land in
the config ConfigMap or in the pod's args or env, readable by whoever can
read those objects and kept in their history: such values go in Secrets.
*/}}
{{- define "deputy.refuseInlineSecrets" -}}
{{- $cfg := include "deputy.userConfig" . | fromJson -}}
{{- $redis := "put the Redis password in a Secret and set redis.existingSecret (and redis.existingSecretKey), or set redis.password for a Secret the chart creates" -}}
{{- $token := "put the bundle server token in a Secret under the key \"token\" and set policies.bundle.tokenSecret" -}}
{{- if dig "redis" "password" "" $cfg }}{{ fail (printf "deputy.config.redis.password would render into the ConfigMap: %s" $redis) }}{{ end -}}
{{- if dig "policy" "bearer_token" "" $cfg }}{{ fail (printf "deputy.config.policy.bearer_token would render into the ConfigMap: %s" $token) }}{{ end -}}
{{- range .Values.deputy.extraArgs -}}
{{- $arg := toString . -}}
{{- if or (eq $arg "--redis-password") (hasPrefix "--redis-password=" $arg) }}{{ fail (printf "deputy.extraArgs: --redis-password would render into the pod's args: %s" $redis) }}{{ end -}}
{{- if or (eq $arg "--policy-bearer-token") (hasPrefix "--policy-bearer-token=" $arg) }}{{ fail (printf "deputy.extraArgs: --policy-bearer-token would render into the pod's args: %s" $token) }}{{ end -}}
{{- end -}}
{{- range .Values.deputy.extraEnv -}}
{{- if hasKey . "value" -}}
{{- if eq (toString .name) "DEPUTY_REDIS_PASSWORD" }}{{ fail (printf "deputy.extraEnv: a DEPUTY_REDIS_PASSWORD value would render into the pod spec: %s" $redis) }}{{ end -}}
{{- if eq (toString .name) "DEPUTY_POLICY_BEARER_TOKEN" }}{{ fail (printf "deputy.extraEnv: a DEPUTY_POLICY_BEARER_TOKEN value would render into the pod spec: %s" $token) }}{{ end -}}
{{- end -}}
{{- end -}}
{{- $addr := "a Redis address is host:port; put the password in a Secret and set redis.existingSecret (or set redis.password), and the ACL user in redis.username" -}}
{{- range $i, $a := .Values.redis.addrs | default list }}{{ if include "deputy.notHostPort" $a }}{{ fail (printf "redis.addrs[%d] is a URL or user@host, which would render into the ConfigMap: %s" $i $addr) }}{{ end }}{{ end -}}
{{- range $i, $a := dig "redis" "addrs" list $cfg }}{{ if include "deputy.notHostPort" $a }}{{ fail (printf "deputy.config.redis.addrs[%d] is a URL or user@host, which would render into the ConfigMap: %s" $i $addr) }}{{ end }}{{ end -}}
{{- $after := "" -}}
{{- range .Values.deputy.extraArgs -}}
{{- $arg := toString . -}}
{{- if or (hasPrefix "--redis-addrs=" $arg) (eq $after "--redis-addrs") }}{{ if include "deputy.notHostPort" $arg }}{{ fail (printf "deputy.extraArgs: --redis-addrs holds a URL or user@host, which would render into the pod's args: %s" $addr) }}{{ end }}{{ end -}}
{{- $after = $arg -}}
{{- end -}}
{{- range .Values.deputy.extraEnv -}}
{{- if and (hasKey . "value") (eq (toString .name) "DEPUTY_REDIS_ADDRS") (include "deputy.notHostPort" .value) }}{{ fail (printf "deputy.extraEnv: DEPUTY_REDIS_ADDRS holds a URL or user@host, which would render into the pod spec: %s" $addr) }}{{ end -}}
{{- end -}}
{{- $issuer := "issuer and JWKS URLs are public: Deputy needs no credentials to read them" -}}
{{- $in := dict "where" "the ConfigMap" -}}
{{- include "deputy.refuseURLCredentials" (merge (dict "setting" "policies.bundle.url" "urls" (list .Values.policies.bundle.url) "hint" $token) $in) -}}
{{- include "deputy.refuseURLCredentials" (merge (dict "setting" "deputy.config.policy.bundle_url" "urls" (list (dig "policy" "bundle_url" "" $cfg)) "hint" $token) $in) -}}
{{- include "deputy.refuseURLCredentials" (merge (dict "setting" "identity.issuerURLs" "urls" (.Values.identity.issuerURLs | default list) "hint" $issuer) $in) -}}
{{- include "deputy.refuseURLCredentials" (merge (dict "setting" "deputy.config.identity.issuer_urls" "urls" (dig "identity" "issuer_urls" list $cfg) "hint" $issuer) $in) -}}
{{- range (dig "identity" "issuers" list $cfg) -}}
{{- include "deputy.refuseURLCredentials" (merge (dict "setting" "deputy.config.identity.issuers" "urls" (list (get . "issuer") (get . "jwks_url")) "hint" $issuer) $in) -}}
{{- end -}}
{{- $flags := dict "--policy-bundle-url" $token "--identity-issuer-urls" $issuer -}}
{{- $prev := "" -}}
{{- range .Values.deputy.extraArgs -}}
{{- $arg := toString . -}}
{{- $flag := regexReplaceAll "=.*$" $arg "" -}}
{{- if hasKey $flags $flag }}
{{- include "deputy.refuseURLCredentials" (dict "setting" (printf "deputy.extraArgs: %s" $flag) "where" "the pod's args" "urls" (list (trimPrefix (printf "%s=" $flag) $arg)) "hint" (get $flags $flag)) -}}
{{- else if hasKey $flags $prev }}
{{- include "deputy.refuseURLCredentials" (dict "setting" (printf "deputy.extraArgs: %s" $prev) "where" "the pod's args" "urls" (list $arg) "hint" (get $flags $prev)) -}}
{{- end -}}
{{- $prev = $arg -}}
{{- end -}}
{{- $envs := dict "DEPUTY_POLICY_BUNDLE_URL" $token "DEPUTY_IDENTITY_ISSUER_URLS" $issuer -}}
{{- range .Values.deputy.extraEnv -}}
{{- if and (hasKey . "value") (hasKey $envs (toString .name)) }}
{{- include "deputy.refuseURLCredentials" (dict "setting" (printf "deputy.extraEnv: %s" .name) "where" "the pod spec" "urls" (list .value) "hint" (get $envs (toString .name))) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Fails the render when a URL (or a comma-separated list of them) carries
credentials: user:password@ or a query string, where servers take tokens
(Deputy redacts both from its logs, sidecar.RedactURL). Takes setting,
where, urls and hint.
*/}}
{{- define "deputy.refuseURLCredentials" -}}
{{- range .urls -}}
{{- range splitList "," (toString (. | default "")) -}}
{{- if or (regexMatch "^([^:/?#]+:)?//[^/?#]*@" (trim .)) (contains "?" .) }}{{ fail (printf "%s: credentials in the URL (user:password@ or a query string) would render into %s: %s" $.setting $.where $.hint) }}{{ end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Fails the render on an issuer or JWKS URL that Deputy would fetch keys
from over plain http: whoever answers on the path would choose the keys,
and so sign any token Deputy accepts, the management API's included.
Deputy itself refuses them at start, outside dev mode, unless the host is
loopback; deputy.config keeps that exception (a key proxy in the pod),
identity.issuerURLs names the provider and takes https alone.
*/}}
{{- define "deputy.refusePlainKeyURLs" -}}
{{- $cfg := include "deputy.userConfig" . | fromJson -}}
{{- $why := "keys fetched over plain http are chosen by whoever answers on the path, and so is every token Deputy accepts: use the identity provider's https URL" -}}
{{- range $i, $u := .Values.identity.issuerURLs | default list -}}
{{- if not (hasPrefix "https://" (lower (toString $u))) }}{{ fail (printf "identity.issuerURLs[%d] is not https: %s" $i $why) }}{{ end -}}
{{- end -}}
{{- range $i, $u := dig "identity" "issuer_urls" list $cfg -}}
{{- if include "deputy.plainRemote" $u }}{{ fail (printf "deputy.config.identity.issuer_urls[%d] is plain http to a host that is not loopback: %s" $i $why) }}{{ end -}}
{{- end -}}
{{- range $i, $is := dig "identity" "issuers" list $cfg -}}
{{- if get $is "jwks_url" -}}
{{- if include "deputy.plainRemote" (get $is "jwks_url") }}{{ fail (printf "deputy.config.identity.issuers[%d].jwks_url is plain http to a host that is not loopback: %s" $i $why) }}{{ end -}}
{{- else if not (get $is "jwks_file") -}}
{{- if include "deputy.plainRemote" (get $is "issuer") }}{{ fail (printf "deputy.config.identity.issuers[%d].issuer is plain http to a host that is not loopback, and its keys would be discovered there: %s" $i $why) }}{{ end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
Fails the render on a value that may hold a secret and is not of its form:
a Redis address, a signing key, a bundle URL. The schema leaves these to
the render, as its pattern errors quote the value (a password pasted into
an address, a private key without its header); these name the setting
alone. Addresses that are URLs or user@host are refused before, by
deputy.refuseInlineSecrets.
*/}}
{{- define "deputy.refuseMalformedSecrets" -}}
{{- range $i, $a := .Values.redis.addrs | default list -}}
{{- if not (regexMatch "^[^\\s:@/]+:[0-9]+$" (toString $a)) }}{{ fail (printf "redis.addrs[%d] is not host:port (a host name or IPv4 address, a colon and a port); the password goes in redis.password or redis.existingSecret" $i) }}{{ end -}}
{{- end -}}
{{- range $i, $k := .Values.signingKeys.keys | default list -}}
{{- if not (contains "-----BEGIN " (toString $k.pem)) }}{{ fail (printf "signingKeys.keys[%d].pem is not a PEM key (-----BEGIN ...): give the key file whole, as deputy keys generate writes it" $i) }}{{ end -}}
{{- end -}}
{{- with .Values.policies.bundle.url -}}
{{- if not (regexMatch "^https?://." (toString .)) }}{{ fail "policies.bundle.url is not an http or https URL" }}{{ end -}}
{{- if and $.Values.policies.bundle.tokenSecret (not (hasPrefix "https://" (toString .))) }}{{ fail "policies.bundle.url is not https, and policies.bundle.tokenSecret would send the token over it in clear" }}{{ end -}}
{{- end -}}
{{- end -}}

{{/* "true" when a Redis address (the argument) is a URL or carries user@, where passwords go. */}}
{{- define "deputy.notHostPort" -}}
{{- $a := toString (. | default "") -}}
{{- if or (contains "://" $a) (contains "@" $a) }}true{{ end -}}
{{- end -}}

{{/* "true" when the URL (the argument) is plain http to a host that is not loopback. */}}
{{- define "deputy.plainRemote" -}}
{{- $u := lower (toString (. | default "")) -}}
{{- if and (hasPrefix "http://" $u) (not (regexMatch "^http://([^/?#@]*@)?(localhost|127\\.[0-9.]+|\\[::1\\])(:[0-9]*)?([/?#]|$)" $u)) }}true{{ end -}}
{{- end -}}
