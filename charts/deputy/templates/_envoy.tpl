{{/*
The Envoy bootstrap of the pod: the same shape as examples/envoy/envoy.yaml
(gRPC) and examples/envoy/envoy-http.yaml (http_service), with the ports
and limits from values.
*/}}
{{/* The path the kubelet asks Envoy's probe listener for the application's readiness. */}}
{{- define "deputy.appReadyPath" -}}/app/ready{{- end -}}

{{/* Where Envoy's admin socket lives: a volume only Envoy's container mounts. */}}
{{- define "deputy.envoyAdminDir" -}}/var/run/envoy-admin{{- end -}}

{{- define "deputy.envoyConfig" -}}
{{- include "deputy.checkExtAuthzBounds" . -}}
{{- $grpc := eq .Values.envoy.extAuthz.transport "grpc" -}}
{{- /* Admin changes log levels, drains listeners and stops Envoy: on
  127.0.0.1 the application's container, which shares the pod's loopback,
  would reach it. */}}
admin:
  address:
    {{- if .Values.envoy.adminPort }}
    socket_address: { address: 127.0.0.1, port_value: {{ .Values.envoy.adminPort }} }
    {{- else }}
    pipe: { path: {{ include "deputy.envoyAdminDir" . }}/admin.sock }
    {{- end }}
static_resources:
  listeners:
    - name: ingress
      address:
        socket_address: { address: 0.0.0.0, port_value: {{ .Values.envoy.port }} }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ingress_http
                codec_type: AUTO
                normalize_path: true
                merge_slashes: true
                path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT
                use_remote_address: true
                # A client's header names with "_" are dropped before any
                # filter, as nginx drops them by default: CGI, PHP and WSGI
                # applications read x_tenant as x-tenant (HTTP_X_TENANT), a
                # name Deputy and policies read apart.
                common_http_protocol_options:
                  headers_with_underscores_action: DROP_HEADER
                access_log:
                  - name: envoy.access_loggers.stdout
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
                      # Envoy's default format, but the path without its query: single-use
                      # redeem codes travel in one (/deputy/v1/impersonation/redeem?code=),
                      # as may other secrets, and must not reach the pod's logs. And
                      # :path itself, the one decided on and forwarded: the default's
                      # X-ENVOY-ORIGINAL-PATH comes first, and no route here rewrites
                      # the path, so any copy is a client's, who would choose the path
                      # logged (and, with a '"', the rest of the line).
                      log_format:
                        text_format_source:
                          inline_string: "[%START_TIME%] \"%REQ(:METHOD)% %REQ_WITHOUT_QUERY(:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n"
                        formatters:
                          - name: envoy.formatter.req_without_query
                            typed_config:
                              "@type": type.googleapis.com/envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery
                route_config:
                  name: local_route
                  # Applications behind auth_request-style setups route or log on
                  # X-Original-URI and -Method; frameworks read the host, scheme, port,
                  # path prefix and client address from forwarding headers (Rails'
                  # request.host reads X-Forwarded-Host, Rack's scheme X-Forwarded-Ssl
                  # and -Scheme before -Proto, Spring, Symfony and Werkzeug
                  # X-Forwarded-Port and -Prefix), and the user from the headers an
                  # authenticating proxy sets (X-Forwarded-User, X-Auth-Request-User,
                  # Remote-User). A client's copies, in any "-"/"_" spelling, never reach
                  # the application: it reads the request line, the host Deputy decided
                  # on (and bound an impersonation session to) and Deputy's identity.
                  # This is the one list every shipped front end clears (docs/deploy.md).
                  # X-Forwarded-Proto and -For are Envoy's own (use_remote_address, no
                  # trusted hops: it overwrites the one, appends its peer to the other);
                  # only their "_" spellings, which CGI, PHP and WSGI upstreams read as
                  # the same names, are a client's to drop.
                  request_headers_to_remove:
                    - forwarded
                    - front-end-https
                    - front-end_https
                    - front_end-https
                    - front_end_https
                    - x-forwarded
                    - x_forwarded
                    - x-forwarded-host
                    - x-forwarded_host
                    - x_forwarded-host
                    - x_forwarded_host
                    - x-forwarded-port
                    - x-forwarded_port
                    - x_forwarded-port
                    - x_forwarded_port
                    - x-forwarded-prefix
                    - x-forwarded_prefix
                    - x_forwarded-prefix
                    - x_forwarded_prefix
                    - x-forwarded-path
                    - x-forwarded_path
                    - x_forwarded-path
                    - x_forwarded_path
                    - x-forwarded-protocol
                    - x-forwarded_protocol
                    - x_forwarded-protocol
                    - x_forwarded_protocol
                    - x-forwarded-scheme
                    - x-forwarded_scheme
                    - x_forwarded-scheme
                    - x_forwarded_scheme
                    - x-forwarded-server
                    - x-forwarded_server
                    - x_forwarded-server
                    - x_forwarded_server
                    - x-forwarded-ssl
                    - x-forwarded_ssl
                    - x_forwarded-ssl
                    - x_forwarded_ssl
                    - x-host
                    - x_host
                    - x-original-host
                    - x-original_host
                    - x_original-host
                    - x_original_host
                    - x-original-proto
                    - x-original_proto
                    - x_original-proto
                    - x_original_proto
                    - x-original-port
                    - x-original_port
                    - x_original-port
                    - x_original_port
                    - x-url-scheme
                    - x-url_scheme
                    - x_url-scheme
                    - x_url_scheme
                    - x-script-name
                    - x-script_name
                    - x_script-name
                    - x_script_name
                    - x-real-ip
                    - x-real_ip
                    - x_real-ip
                    - x_real_ip
                    - x-client-ip
                    - x-client_ip
                    - x_client-ip
                    - x_client_ip
                    - true-client-ip
                    - true-client_ip
                    - true_client-ip
                    - true_client_ip
                    - cf-connecting-ip
                    - cf-connecting_ip
                    - cf_connecting-ip
                    - cf_connecting_ip
                    - x-cluster-client-ip
                    - x-cluster-client_ip
                    - x-cluster_client-ip
                    - x-cluster_client_ip
                    - x_cluster-client-ip
                    - x_cluster-client_ip
                    - x_cluster_client-ip
                    - x_cluster_client_ip
                    - x-original-forwarded-for
                    - x-original-forwarded_for
                    - x-original_forwarded-for
                    - x-original_forwarded_for
                    - x_original-forwarded-for
                    - x_original-forwarded_for
                    - x_original_forwarded-for
                    - x_original_forwarded_for
                    - x-original-uri
                    - x-original_uri
                    - x_original-uri
                    - x_original_uri
                    - x-original-method
                    - x-original_method
                    - x_original-method
                    - x_original_method
                    - x-forwarded-uri
                    - x-forwarded_uri
                    - x_forwarded-uri
                    - x_forwarded_uri
                    - x-forwarded-method
                    - x-forwarded_method
                    - x_forwarded-method
                    - x_forwarded_method
                    - remote-user
                    - remote_user
                    - remote-email
                    - remote_email
                    - remote-groups
                    - remote_groups
                    - remote-name
                    - remote_name
                    - x-remote-user
                    - x-remote_user
                    - x_remote-user
                    - x_remote_user
                    - x-forwarded-user
                    - x-forwarded_user
                    - x_forwarded-user
                    - x_forwarded_user
                    - x-forwarded-email
                    - x-forwarded_email
                    - x_forwarded-email
                    - x_forwarded_email
                    - x-forwarded-groups
                    - x-forwarded_groups
                    - x_forwarded-groups
                    - x_forwarded_groups
                    - x-forwarded-preferred-username
                    - x-forwarded-preferred_username
                    - x-forwarded_preferred-username
                    - x-forwarded_preferred_username
                    - x_forwarded-preferred-username
                    - x_forwarded-preferred_username
                    - x_forwarded_preferred-username
                    - x_forwarded_preferred_username
                    - x-forwarded-access-token
                    - x-forwarded-access_token
                    - x-forwarded_access-token
                    - x-forwarded_access_token
                    - x_forwarded-access-token
                    - x_forwarded-access_token
                    - x_forwarded_access-token
                    - x_forwarded_access_token
                    - x-auth-request-user
                    - x-auth-request_user
                    - x-auth_request-user
                    - x-auth_request_user
                    - x_auth-request-user
                    - x_auth-request_user
                    - x_auth_request-user
                    - x_auth_request_user
                    - x-auth-request-email
                    - x-auth-request_email
                    - x-auth_request-email
                    - x-auth_request_email
                    - x_auth-request-email
                    - x_auth-request_email
                    - x_auth_request-email
                    - x_auth_request_email
                    - x-auth-request-groups
                    - x-auth-request_groups
                    - x-auth_request-groups
                    - x-auth_request_groups
                    - x_auth-request-groups
                    - x_auth-request_groups
                    - x_auth_request-groups
                    - x_auth_request_groups
                    - x-auth-request-preferred-username
                    - x-auth-request-preferred_username
                    - x-auth-request_preferred-username
                    - x-auth-request_preferred_username
                    - x-auth_request-preferred-username
                    - x-auth_request-preferred_username
                    - x-auth_request_preferred-username
                    - x-auth_request_preferred_username
                    - x_auth-request-preferred-username
                    - x_auth-request-preferred_username
                    - x_auth-request_preferred-username
                    - x_auth-request_preferred_username
                    - x_auth_request-preferred-username
                    - x_auth_request-preferred_username
                    - x_auth_request_preferred-username
                    - x_auth_request_preferred_username
                    - x-auth-request-access-token
                    - x-auth-request-access_token
                    - x-auth-request_access-token
                    - x-auth-request_access_token
                    - x-auth_request-access-token
                    - x-auth_request-access_token
                    - x-auth_request_access-token
                    - x-auth_request_access_token
                    - x_auth-request-access-token
                    - x_auth-request-access_token
                    - x_auth-request_access-token
                    - x_auth-request_access_token
                    - x_auth_request-access-token
                    - x_auth_request-access_token
                    - x_auth_request_access-token
                    - x_auth_request_access_token
                    - x-forwarded_proto
                    - x_forwarded-proto
                    - x_forwarded_proto
                    - x-forwarded_for
                    - x_forwarded-for
                    - x_forwarded_for
                    # Envoy's own when a route rewrites the path, which none here does:
                    # a client's copy would tell the application another path than the
                    # one decided on.
                    - x-envoy-original-path
                  virtual_hosts:
                    - name: app
                      domains: ["*"]
                      routes:
                        - match: { prefix: "/.well-known/" }
                          route: { cluster: deputy_http }
                          typed_per_filter_config:
                            envoy.filters.http.ext_authz:
                              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                              disabled: true
                        - match: { prefix: "/deputy/v1/" }
                          route: { cluster: deputy_http }
                          typed_per_filter_config:
                            envoy.filters.http.ext_authz:
                              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                              disabled: true
                        - match: { prefix: "/" }
                          route: { cluster: app }
                http_filters:
                  - name: envoy.filters.http.ext_authz
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
                      transport_api_version: V3
                      failure_mode_allow: false
                      status_on_error: { code: ServiceUnavailable }
                      # A check answer may not set, change or remove Envoy's
                      # x-envoy-* headers (retries, timeouts, the original path
                      # the access log writes) or host, :authority, :scheme
                      # and :method: Envoy fails such a request (500) rather
                      # than forward it without the change. Deputy refuses a
                      # policy result that asks for them itself.
                      decoder_header_mutation_rules:
                        allow_envoy: false
                        allow_all_routing: false
                        disallow_is_error: true
                      {{- if $grpc }}
                      grpc_service:
                        envoy_grpc: { cluster_name: deputy_grpc }
                        timeout: {{ .Values.envoy.extAuthz.timeout }}
                      include_peer_certificate: true
                      {{- else }}
                      http_service:
                        server_uri:
                          uri: http://127.0.0.1:{{ .Values.deputy.ports.http }}
                          cluster: deputy_http
                          timeout: {{ .Values.envoy.extAuthz.timeout }}
                        authorization_response:
                          # What Deputy is told Envoy copies
                          # (http.envoy_upstream_headers), names as Deputy
                          # sets them.
                          allowed_upstream_headers:
                            patterns:
                              {{- range (include "deputy.envoyUpstreamHeaders" . | fromJsonArray) }}
                              {{- if hasSuffix "*" . }}
                              - prefix: {{ trimSuffix "*" . | lower | toJson }}
                              {{- else }}
                              - exact: {{ lower . | toJson }}
                              {{- end }}
                                ignore_case: true
                              {{- end }}
                          allowed_client_headers:
                            patterns:
                              - exact: content-type
                              - exact: www-authenticate
                              - exact: location
                              - exact: set-cookie
                      # Owned headers (check.owned_prefix and
                      # check.actor_token_header) in every spelling, so that
                      # Deputy lists them for removal; who asks (the token
                      # in authorization, or identity.header in every
                      # spelling: without it Deputy would decide without the
                      # token the application signs in with), the customer
                      # acted for (partner.on_behalf_of_header) and the
                      # method the application runs
                      # (check.method_overrides' header carriers, the body's
                      # type and encoding, Envoy's partial-body flag), so
                      # that Deputy decides on it; and the header carriers
                      # of identity.credential_carriers, so that Deputy
                      # refuses a token there it did not verify. Envoy removes headers by
                      # exact name only: a client's X-Forwarded-*,
                      # X-Auth-Request-* and Remote-* headers the route does
                      # not name go to Deputy, which lists them in
                      # x-envoy-auth-headers-to-remove. So does every name
                      # with a byte other than a letter, a digit, "-" or "_"
                      # (x.deputy.subject, which PHP reads as
                      # HTTP_X_DEPUTY_SUBJECT): Deputy refuses the request.
                      {{- $names := include "deputy.headerNames" . | fromJson }}
                      allowed_headers:
                        patterns:
                          - safe_regex: { regex: {{ printf "%s.*" (include "deputy.spellings" $names.prefix) | toJson }} }
                          - safe_regex: { regex: {{ include "deputy.spellings" $names.token | toJson }} }
                          - exact: authorization
                          {{- if ne $names.identity "authorization" }}
                          - safe_regex: { regex: {{ include "deputy.spellings" $names.identity | toJson }} }
                          {{- end }}
                          - exact: cookie
                          - exact: content-type
                          - exact: content-encoding
                          - exact: x-envoy-auth-partial-body
                          - safe_regex: { regex: {{ include "deputy.spellings" $names.onBehalfOf | toJson }} }
                          - safe_regex: { regex: "x[-_](original|rewrite)[-_]url" }
                          {{- include "deputy.methodOverrideHeaders" . | nindent 26 }}
                          {{- include "deputy.credentialCarrierHeaders" . | nindent 26 }}
                          - exact: x-request-id
                          - exact: traceparent
                          - exact: user-agent
                          - exact: x-forwarded-for
                          - exact: x-forwarded-proto
                          - safe_regex: { regex: "(x[-_]forwarded|x[-_]auth[-_]request|remote)[-_].*" }
                          - safe_regex: { regex: "[^:].*[^-a-z0-9_].*" }
                          - safe_regex: { regex: "[^-a-z0-9_:].*" }
                          {{- /* Every spelling of a header an allow may set
                          upstream, and every name holding "_": Envoy
                          replaces or removes only the name an allow names,
                          so Deputy lists the client's other spellings
                          (x_current_user beside x-current-user, x_user_role
                          beside a removal of x-user-role) for removal. */}}
                          - safe_regex: { regex: ".*_.*" }
                          {{- range (include "deputy.envoyUpstreamHeaders" . | fromJsonArray) }}
                          - safe_regex: { regex: {{ printf "%s%s" (include "deputy.spellings" (trimSuffix "*" .)) (ternary ".*" "" (hasSuffix "*" .)) | toJson }} }
                          {{- end }}
                      {{- end }}
                      with_request_body:
                        max_request_bytes: {{ .Values.envoy.extAuthz.maxRequestBytes }}
                        allow_partial_message: {{ .Values.envoy.extAuthz.allowPartialMessage }}
                        {{- if $grpc }}
                        # The body in raw_body, bytes: without it Envoy
                        # sends it in body, a string, which a file upload
                        # is not. http_service sends the bytes as they are.
                        pack_as_bytes: true
                        {{- end }}
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
    {{- if .Values.app.readinessPath }}
    # The kubelet's readiness probe of the application: Envoy answers 200
    # while its health check of the app cluster passes, 503 otherwise (and
    # while Envoy drains). Nothing here is forwarded, nor logged.
    - name: app_ready
      address:
        socket_address: { address: 0.0.0.0, port_value: {{ .Values.envoy.probePort }} }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: app_ready
                codec_type: AUTO
                route_config:
                  name: app_ready
                  virtual_hosts:
                    - name: app_ready
                      domains: ["*"]
                      routes:
                        - match: { prefix: "/" }
                          direct_response: { status: 404 }
                http_filters:
                  - name: envoy.filters.http.health_check
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck
                      pass_through_mode: false
                      headers:
                        - name: ":path"
                          string_match: { exact: {{ include "deputy.appReadyPath" . | toJson }} }
                      cluster_min_healthy_percentages:
                        app: { value: 100 }
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
    {{- end }}
  clusters:
    {{- if $grpc }}
    - name: deputy_grpc
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {}
      load_assignment:
        cluster_name: deputy_grpc
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: { address: 127.0.0.1, port_value: {{ .Values.deputy.ports.grpc }} }
    {{- end }}
    - name: deputy_http
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: deputy_http
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: { address: 127.0.0.1, port_value: {{ .Values.deputy.ports.http }} }
    - name: app
      type: STATIC
      connect_timeout: 1s
      {{- with .Values.app.readinessPath }}
      # Asked on loopback, so the application need not listen on the pod IP.
      # A cluster that never carried traffic (a pod not yet ready) is
      # checked every no_traffic_interval, 60 s unless set. An unhealthy
      # app still gets requests (panic mode, one host): only the readiness
      # the kubelet reads changes.
      health_checks:
        - timeout: 1s
          interval: 5s
          no_traffic_interval: 5s
          unhealthy_threshold: 2
          healthy_threshold: 1
          http_health_check:
            host: localhost
            path: {{ . | toJson }}
      {{- end }}
      load_assignment:
        cluster_name: app
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: { address: 127.0.0.1, port_value: {{ .Values.app.port }} }
{{- end -}}
