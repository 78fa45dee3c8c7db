// Package envoycheck proves an Envoy bootstrap without running Envoy: it
// parses the YAML strictly into go-control-plane's Bootstrap, opens every
// typed_config Any with the registered extension types and runs the
// protoc-gen-validate rules Envoy itself applies at load time. A misspelled
// field, a wrong type or an unknown extension is an error, as it would be
// for `envoy --mode validate`.
package envoycheck

import (
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"regexp"
	"slices"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	reqwithoutqueryv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/formatter/req_without_query/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"gopkg.in/yaml.v3"

	// The extensions Deputy's example configs use; importing them puts
	// their types in the registry that resolves typed_config.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/health_check/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// Bootstrap parses an Envoy bootstrap in YAML and checks it as Envoy would.
func Bootstrap(doc []byte) (*bootstrapv3.Bootstrap, error) {
	var tree any
	if err := yaml.Unmarshal(doc, &tree); err != nil {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	if tree == nil {
		return nil, errors.New("empty bootstrap")
	}
	js, err := json.Marshal(tree)
	if err != nil {
		return nil, fmt.Errorf("yaml to json: %w", err)
	}
	var b bootstrapv3.Bootstrap
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, &b); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	if err := Validate(&b); err != nil {
		return nil, err
	}
	return &b, nil
}

// ExtAuthz is the ext_authz filter of the first listener's first filter,
// the HTTP connection manager, in a bootstrap Bootstrap accepted: the
// settings that decide what Envoy sends Deputy and what it removes.
func ExtAuthz(b *bootstrapv3.Bootstrap) (*extauthzv3.ExtAuthz, error) {
	var hcm hcmv3.HttpConnectionManager
	if err := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		return nil, fmt.Errorf("http connection manager: %w", err)
	}
	for _, f := range hcm.GetHttpFilters() {
		if f.GetName() == "envoy.filters.http.ext_authz" {
			var a extauthzv3.ExtAuthz
			if err := f.GetTypedConfig().UnmarshalTo(&a); err != nil {
				return nil, fmt.Errorf("ext_authz: %w", err)
			}
			return &a, nil
		}
	}
	return nil, errors.New("no ext_authz filter")
}

// RefusesControlHeaders returns an error unless a's
// decoder_header_mutation_rules have Envoy refuse a check answer that
// sets, changes or removes an Envoy control header (x-envoy-*: retries,
// timeouts, the original path the access log writes) or a routing one
// (host, :authority, :scheme, :method), and fail that request rather than
// forward it without the change. Without the rules Envoy applies any
// mutation ext_authz asks for; with them, its defaults refuse those names
// unless allow_envoy, allow_all_routing or an allow_expression lets them
// through, and disallow_is_error makes a refusal an error (500). Deputy
// refuses such a policy result itself; this is the proxy's own guard.
// disallow_all would refuse Deputy's identity headers too, so every
// delegated request would fail: it is refused as well.
func RefusesControlHeaders(a *extauthzv3.ExtAuthz) error {
	r := a.GetDecoderHeaderMutationRules()
	switch {
	case r == nil:
		return errors.New("no decoder_header_mutation_rules: Envoy applies any header mutation a check answer asks for, x-envoy-*, host and :authority included")
	case r.GetAllowEnvoy().GetValue():
		return errors.New("decoder_header_mutation_rules.allow_envoy lets a check answer set x-envoy-* headers")
	case r.GetAllowAllRouting().GetValue():
		return errors.New("decoder_header_mutation_rules.allow_all_routing lets a check answer set host, :authority, :scheme and :method")
	case r.GetAllowExpression() != nil:
		return errors.New("decoder_header_mutation_rules.allow_expression overrides the refusals of x-envoy-* and routing headers")
	case r.GetDisallowAll().GetValue():
		return errors.New("decoder_header_mutation_rules.disallow_all refuses Deputy's identity headers too")
	case !r.GetDisallowIsError().GetValue():
		return errors.New("decoder_header_mutation_rules without disallow_is_error: a refused mutation is dropped and the request forwarded without it")
	}
	return nil
}

// Validate runs the validation rules of m and of every message packed in
// an Any inside it, however deep.
func Validate(m proto.Message) error {
	var errs []error
	walk(m.ProtoReflect(), string(m.ProtoReflect().Descriptor().FullName()), &errs)
	return errors.Join(errs...)
}

type validator interface{ ValidateAll() error }

func walk(m protoreflect.Message, where string, errs *[]error) {
	if v, ok := m.Interface().(validator); ok {
		if err := v.ValidateAll(); err != nil {
			*errs = append(*errs, fmt.Errorf("%s: %w", where, err))
		}
	}
	if any, ok := m.Interface().(*anypb.Any); ok {
		inner, err := any.UnmarshalNew()
		if err != nil {
			*errs = append(*errs, fmt.Errorf("%s: %s: %w", where, any.GetTypeUrl(), err))
			return
		}
		walk(inner.ProtoReflect(), where+"("+string(inner.ProtoReflect().Descriptor().FullName())+")", errs)
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() == nil {
			return true
		}
		at := where + "." + string(fd.Name())
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				walk(l.Get(i).Message(), fmt.Sprintf("%s[%d]", at, i), errs)
			}
		case fd.IsMap():
			if fd.MapValue().Message() == nil {
				return true
			}
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				walk(mv.Message(), fmt.Sprintf("%s[%s]", at, k.String()), errs)
				return true
			})
		default:
			walk(v.Message(), at, errs)
		}
		return true
	})
}

// Matches applies a list of Envoy string matchers (allowed_headers and
// kin) to s as Envoy does: any one matching is a match, ignore_case folds
// ASCII case, and a safe_regex (RE2) must match the whole string.
func Matches(list *matcherv3.ListStringMatcher, s string) (bool, error) {
	for _, m := range list.GetPatterns() {
		v, low := s, func(p string) string { return p }
		if m.GetIgnoreCase() {
			v, low = strings.ToLower(s), strings.ToLower
		}
		var ok bool
		switch p := m.GetMatchPattern().(type) {
		case *matcherv3.StringMatcher_Exact:
			ok = v == low(p.Exact)
		case *matcherv3.StringMatcher_Prefix:
			ok = strings.HasPrefix(v, low(p.Prefix))
		case *matcherv3.StringMatcher_Suffix:
			ok = strings.HasSuffix(v, low(p.Suffix))
		case *matcherv3.StringMatcher_Contains:
			ok = strings.Contains(v, low(p.Contains))
		case *matcherv3.StringMatcher_SafeRegex:
			re, err := regexp.Compile(`^(?:` + p.SafeRegex.GetRegex() + `)$`)
			if err != nil {
				return false, err
			}
			ok = re.MatchString(s)
		default:
			return false, fmt.Errorf("string matcher %v not supported", m)
		}
		if ok {
			return true, nil
		}
	}
	return false, nil
}

// ReadByDeputy are the request headers Deputy decides on, as Envoy (which
// lowercases names) may carry them to an upstream that reads "_" as "-":
// the credentials, the customer a request names, the default method
// override headers (a GET with X-HTTP-Method-Override: DELETE is a DELETE
// upstream; the list is authz.DefaultMethodOverrides, a test keeps them
// equal) and the body's type (a multipart _method field is read only as
// multipart). http_service sends Deputy only the headers it lists, so a
// config must list each in every spelling, or Deputy decides without it.
//
// The body's encoding and Envoy's partial-body flag go too: Deputy reads
// a compressed or cut body as one that may hide an override. So do the
// default credential carrier headers: a token in X-Auth-Token that Deputy
// never sees would leave a session honoured while the upstream signs its
// holder in.
func ReadByDeputy() []string {
	names := []string{"authorization", "cookie", "content-type", "content-encoding", "x-envoy-auth-partial-body"}
	names = append(names, Spellings(append([]string{"x-on-behalf-of", "x-original-url", "x-rewrite-url"}, OverrideHeaders...)...)...)
	return append(names, Spellings(CarrierHeaders...)...)
}

// CarrierHeaders are the credential carrier headers Deputy reads by
// default (authz.DefaultCredentialCarriers, a test keeps them equal).
var CarrierHeaders = []string{"x-access-token", "x-auth-token", "x-api-key", "token", "x-authorization"}

// Spellings are the names given, lowercased as Envoy sends them, with
// "_" for "-" throughout and in the first place only.
func Spellings(headers ...string) []string {
	var names []string
	for _, h := range headers {
		h = strings.ToLower(h)
		names = append(names, h, strings.ReplaceAll(h, "-", "_"), strings.Replace(h, "-", "_", 1))
	}
	return names
}

// OverrideHeaders are the method override headers Deputy reads by default.
var OverrideHeaders = []string{"x-http-method-override", "x-http-method", "x-method-override"}

// ClientHeaders is the one list of request headers a client must never
// set, lowercased as Envoy sends them, in every "-"/"_" spelling (CGI, PHP
// and WSGI upstreams read them all as one name): every shipped front end
// (the nginx and Caddy configs, both Envoy configs and the chart's) clears
// a client's copies before the application or Deputy's API sees them, and
// docs/deploy.md lists them. They tell an application another host,
// scheme, port, path prefix, client address, method, URI or user than the
// ones Deputy decided on and the proxy saw:
//   - forwarding headers frameworks trust behind a proxy (Rails'
//     request.host reads X-Forwarded-Host, Rack's scheme X-Forwarded-Ssl
//     and -Scheme before -Proto, gunicorn X-Forwarded-Protocol, Spring,
//     Symfony and Werkzeug X-Forwarded-Port and -Prefix, WSGI recipes
//     X-Script-Name, Express and Rack the client address from X-Real-IP,
//     X-Client-IP, True-Client-IP or CF-Connecting-IP);
//   - the original URI and method of auth_request and forward_auth setups;
//   - the user an authenticating proxy in front names (oauth2-proxy's
//     X-Forwarded-User and X-Auth-Request-*, Authelia's and Apache's
//     Remote-User), which applications trust instead of a session.
//
// Of ProxySet, which the proxy sets from its own view over a client's
// copy, only the "_" spellings are listed.
func ClientHeaders() []string {
	var names []string
	for _, h := range clientOnly {
		names = append(names, EverySpelling(h)...)
	}
	for _, h := range ProxySet() {
		names = append(names, EverySpelling(h)[1:]...)
	}
	return names
}

// clientOnly are ClientHeaders' names as spelled with "-".
var clientOnly = []string{
	// Host, scheme, port, path prefix.
	"forwarded", "front-end-https", "x-forwarded", "x-forwarded-host", "x-forwarded-port", "x-forwarded-prefix",
	"x-forwarded-path", "x-forwarded-protocol", "x-forwarded-scheme", "x-forwarded-server", "x-forwarded-ssl",
	"x-host", "x-original-host", "x-original-proto", "x-original-port", "x-url-scheme", "x-script-name",
	// Client address.
	"x-real-ip", "x-client-ip", "true-client-ip", "cf-connecting-ip", "x-cluster-client-ip", "x-original-forwarded-for",
	// The original request of auth_request and forward_auth setups.
	"x-original-uri", "x-original-method", "x-forwarded-uri", "x-forwarded-method",
	// The user an authenticating proxy names.
	"remote-user", "remote-email", "remote-groups", "remote-name", "x-remote-user",
	"x-forwarded-user", "x-forwarded-email", "x-forwarded-groups", "x-forwarded-preferred-username", "x-forwarded-access-token",
	"x-auth-request-user", "x-auth-request-email", "x-auth-request-groups", "x-auth-request-preferred-username",
	"x-auth-request-access-token",
}

// ProxySet are the forwarding headers every shipped proxy sets itself from
// its own view of the connection: nginx ($scheme, $remote_addr) and Caddy's
// reverse_proxy replace a client's copy; Envoy with use_remote_address and
// no trusted hops overwrites x-forwarded-proto and appends the peer it saw
// to x-forwarded-for.
func ProxySet() []string { return []string{"x-forwarded-proto", "x-forwarded-for"} }

// EverySpelling is name with each "-" kept or read as "_", every
// combination, the letter case kept: CGI, PHP and WSGI upstreams read
// them all as name.
func EverySpelling(name string) []string {
	parts := strings.Split(name, "-")
	out := []string{parts[0]}
	for _, part := range parts[1:] {
		next := make([]string, 0, 2*len(out))
		for _, o := range out {
			next = append(next, o+"-"+part, o+"_"+part)
		}
		out = next
	}
	return out
}

// AccessLogsWithoutQuery returns an error for every access log of the
// bootstrap's HTTP connection managers that may write a request's query
// string: Deputy's single-use redeem codes travel in one
// (/deputy/v1/impersonation/redeem?code=...), and pod logs are read by
// many. An access log with no format writes Envoy's default, whose
// request line is %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%, query included; a
// format must name the path through %REQ_WITHOUT_QUERY(...)% (with its
// formatter extension configured) or %PATH(...NQ...)%.
func AccessLogsWithoutQuery(b *bootstrapv3.Bootstrap) error {
	var errs []error
	for listener, hcm := range connectionManagers(b) {
		for _, al := range hcm.GetAccessLog() {
			if err := accessLogWithoutQuery(al); err != nil {
				errs = append(errs, fmt.Errorf("listener %s: access log %s: %w", listener, al.GetName(), err))
			}
		}
	}
	return errors.Join(errs...)
}

// connectionManagers yields every HTTP connection manager of b's static
// listeners, with its listener's name.
func connectionManagers(b *bootstrapv3.Bootstrap) iter.Seq2[string, *hcmv3.HttpConnectionManager] {
	return func(yield func(string, *hcmv3.HttpConnectionManager) bool) {
		for _, l := range b.GetStaticResources().GetListeners() {
			for _, fc := range l.GetFilterChains() {
				for _, f := range fc.GetFilters() {
					hcm := new(hcmv3.HttpConnectionManager)
					if f.GetTypedConfig().UnmarshalTo(hcm) != nil {
						continue
					}
					if !yield(l.GetName(), hcm) {
						return
					}
				}
			}
		}
	}
}

func accessLogWithoutQuery(al *accesslogv3.AccessLog) error {
	format, texts, err := logFormat(al)
	if err != nil {
		return err
	}
	if format == nil {
		return errors.New("no log_format: Envoy's default format logs the path with its query")
	}
	withoutQuery := slices.ContainsFunc(format.GetFormatters(), func(e *corev3.TypedExtensionConfig) bool {
		return e.GetTypedConfig().MessageIs((*reqwithoutqueryv3.ReqWithoutQuery)(nil))
	})
	for _, text := range texts {
		for _, op := range commandOperator.FindAllStringSubmatch(text, -1) {
			name, args := op[1], strings.ToLower(op[2])
			pathy := strings.Contains(args, ":path") || strings.Contains(args, "x-envoy-original-path")
			switch {
			case name == "REQ_WITHOUT_QUERY" && !withoutQuery:
				return fmt.Errorf("%s without the envoy.formatter.req_without_query formatter", op[0])
			case name == "PATH" && !strings.Contains(strings.ToUpper(args), "NQ"):
				return fmt.Errorf("%s logs the query (want NQ)", op[0])
			case (name == "REQ" || name == "TRAILER") && pathy:
				return fmt.Errorf("%s logs the path with its query", op[0])
			}
		}
	}
	return nil
}

// commandOperator is one %NAME% or %NAME(args)% (with an optional :N
// length) of an access log format.
var commandOperator = regexp.MustCompile(`%([A-Z_]+)(?:\(([^)]*)\))?(?::\d+)?%`)

// logFormat is the format of an access log, nil for Envoy's default, and
// the strings of it that hold command operators.
func logFormat(al *accesslogv3.AccessLog) (*corev3.SubstitutionFormatString, []string, error) {
	inner, err := al.GetTypedConfig().UnmarshalNew()
	if err != nil {
		return nil, nil, err
	}
	var format *corev3.SubstitutionFormatString
	switch c := inner.(type) {
	case *streamv3.StdoutAccessLog:
		format = c.GetLogFormat()
	case *streamv3.StderrAccessLog:
		format = c.GetLogFormat()
	default:
		return nil, nil, fmt.Errorf("%T: cannot tell what it logs", inner)
	}
	if format == nil {
		return nil, nil, nil
	}
	var texts []string
	switch {
	case format.GetTextFormatSource() != nil:
		texts = append(texts, format.GetTextFormatSource().GetInlineString())
	case format.GetJsonFormat() != nil:
		for _, v := range format.GetJsonFormat().GetFields() {
			texts = append(texts, v.GetStringValue())
		}
	default:
		return nil, nil, errors.New("log_format: only an inline text_format_source or a json_format can be checked")
	}
	return format, texts, nil
}

// LogsRequestPath returns an error for every HTTP connection manager of b
// whose access log may write x-envoy-original-path, or whose route config
// lets a client's copy of it reach the upstream. Envoy sets that header
// only when a route rewrites the path, which no shipped config does, and
// keeps a client's copy (its internal-header cleaning does not name it):
// a log writing it, as Envoy's default format, %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%
// and %PATH% (whose source defaults to ORIG_OR_PATH) do, writes the path
// the client chose instead of the one Deputy decided on, and a '"' in it
// forges the rest of a text line. Log :path itself.
func LogsRequestPath(b *bootstrapv3.Bootstrap) error {
	var errs []error
	for listener, hcm := range connectionManagers(b) {
		if forwards(hcm) && !slices.Contains(hcm.GetRouteConfig().GetRequestHeadersToRemove(), originalPath) {
			errs = append(errs, fmt.Errorf("listener %s: route_config does not remove a client's %s, which the upstream then reads", listener, originalPath))
		}
		for _, al := range hcm.GetAccessLog() {
			if err := accessLogRequestPath(al); err != nil {
				errs = append(errs, fmt.Errorf("listener %s: access log %s: %w", listener, al.GetName(), err))
			}
		}
	}
	return errors.Join(errs...)
}

// DropsUnderscoreHeaders reports every HTTP connection manager of b that
// sends requests upstream and lets a client's header names with "_"
// through (common_http_protocol_options.headers_with_underscores_action
// other than DROP_HEADER or REJECT_REQUEST): CGI, PHP and WSGI
// applications read x_tenant as x-tenant (HTTP_X_TENANT), a name Deputy
// and policies read apart.
func DropsUnderscoreHeaders(b *bootstrapv3.Bootstrap) error {
	var errs []error
	for listener, hcm := range connectionManagers(b) {
		if !forwards(hcm) {
			continue
		}
		switch hcm.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction() {
		case corev3.HttpProtocolOptions_DROP_HEADER, corev3.HttpProtocolOptions_REJECT_REQUEST:
		default:
			errs = append(errs, fmt.Errorf("listener %s: common_http_protocol_options.headers_with_underscores_action lets a client's x_name through, which CGI, PHP and WSGI applications read as x-name", listener))
		}
	}
	return errors.Join(errs...)
}

// forwards reports whether a route of hcm sends requests upstream.
func forwards(hcm *hcmv3.HttpConnectionManager) bool {
	for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if r.GetRoute() != nil {
				return true
			}
		}
	}
	return false
}

// originalPath is the header Envoy keeps a path in before rewriting it.
const originalPath = "x-envoy-original-path"

func accessLogRequestPath(al *accesslogv3.AccessLog) error {
	format, texts, err := logFormat(al)
	if err != nil {
		return err
	}
	if format == nil {
		return fmt.Errorf("no log_format: Envoy's default format logs %s when a client sends one", originalPath)
	}
	for _, text := range texts {
		for _, op := range commandOperator.FindAllStringSubmatch(text, -1) {
			name, args := op[1], strings.ToLower(op[2])
			source := args
			if name == "PATH" {
				_, source, _ = strings.Cut(args, ":")
			}
			switch {
			case strings.Contains(args, originalPath):
				return fmt.Errorf("%s logs the %s a client may send", op[0], originalPath)
			case name == "PATH" && source != "path":
				return fmt.Errorf("%s logs the %s a client may send (want %%PATH(NQ:PATH)%%)", op[0], originalPath)
			}
		}
	}
	return nil
}
